// perf/xdp_progs.c — BPF programs perf/bridge attaches to the endpoint veths it makes:
// "xdp" passes every frame (as the glasswire testbed does on its endpoints: needed for
// XDP_REDIRECT into a veth, and it moves receive onto veth's NAPI path), "xdp_drop"
// drops every frame (the generator-ceiling sink), "xdp_gen_sink" drops the generator's
// frames (IPv4 to 10.66.0.200) and passes the rest (the server's sink with --sink xdp),
// and "tc_gen_sink" does the same at tc ingress (the server's sink by default).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int prog_pass(struct xdp_md *ctx) { return XDP_PASS; }

SEC("xdp_drop")
int prog_drop(struct xdp_md *ctx) { return XDP_DROP; }

// 10.66.0.200: held by no one; only perf/bridge's generators send to it.
static __always_inline int is_gen_frame(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	return (void *)(ip + 1) <= end && eth->h_proto == bpf_htons(ETH_P_IP) &&
	       ip->daddr == bpf_htonl(0x0a4200c8);
}

SEC("xdp_gen_sink")
int prog_gen_sink(struct xdp_md *ctx)
{
	return is_gen_frame((void *)(long)ctx->data, (void *)(long)ctx->data_end) ? XDP_DROP
										    : XDP_PASS;
}

// tc ingress (cls_bpf, direct action): the server's sink during the packet rate runs.
// It drops the generator's frames as xdp_gen_sink does, but after veth has made them an
// skb, as the server's stack would receive them: XDP on s0 would take XDP frames
// (glasswire's fast path) without one and copy every skb with little headroom
// (glasswire's AF_XDP transmit) into a new page first, so its cost would differ by row.
SEC("tc_gen_sink")
int prog_tc_gen_sink(struct __sk_buff *skb)
{
	return is_gen_frame((void *)(long)skb->data, (void *)(long)skb->data_end) ? TC_ACT_SHOT
										    : TC_ACT_OK;
}

char _license[] SEC("license") = "Dual MIT/GPL";
