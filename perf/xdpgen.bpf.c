// perf/xdpgen.bpf.c — the XDP program behind perf/xdpgen: run by the kernel on a
// prebuilt frame in BPF_PROG_RUN's live-frames mode, it stamps the next flow's UDP ports
// (as perf/gen.c's frames have them) and redirects the frame out of the client's veth.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Set by perf/xdpgen before the program is loaded; next_flow is the program's own.
struct gen_config {
	__u32 out_ifindex;
	__u32 flows;
	__u32 next_flow;
} config SEC(".data") = {0, 1, 0};

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return XDP_ABORTED;
	// Live frames are recycled pages that keep what the last run wrote, so both ports
	// are written every time. One CPU runs the program: no atomics needed.
	__u32 f = config.next_flow;
	config.next_flow = f + 1 >= config.flows ? 0 : f + 1;
	udp->source = bpf_htons(10000 + f % 50000);
	udp->dest = bpf_htons(9 + f / 50000);
	return bpf_redirect(config.out_ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
