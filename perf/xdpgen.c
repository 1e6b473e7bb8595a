// perf/xdpgen.c — perf/bridge's fast UDP frame generator: the kernel's own XDP traffic
// generator mode (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, as xdp-trafficgen uses).
//
// The kernel runs perf/xdpgen.bpf.c on copies of one prebuilt frame held in page-pool
// pages and sends each out of IFNAME with XDP_REDIRECT: no socket, no skb and no copy
// from user space per frame. The frames reach the veth's peer as XDP frames with XDP
// headroom, as from a NIC's receive ring; an AF_PACKET skb (perf/gen.c) has too little
// headroom, and a veth with an XDP program copies it into a new page first.
//
// A frame the veth does not take (its peer's ring full) is dropped at the sender, as at
// a NIC whose TX ring is full. This program prints how long it sent,
// {"calls": N, "seconds": S}; perf/bridge reads what the veth took and refused from
// IFNAME's tx_queue_0_xdp_xmit and tx_queue_0_xdp_xmit_errors counters.
// Run it inside the client namespace only: the redirect resolves IFNAME there.
//
// usage: xdpgen BPF_OBJ IFNAME SRC_MAC DST_MAC SRC_IP DST_IP FRAME_LEN FLOWS SECONDS [BATCH]
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <net/if.h>
#include <signal.h>
#include <sys/time.h>
#include <stdlib.h>
#include <unistd.h>

#include "frame.h"

static volatile double alarm_at;

static void on_alarm(int sig)
{
	(void)sig;
	if (!alarm_at)
		alarm_at = now();
}

struct gen_config {
	__u32 out_ifindex;
	__u32 flows;
	__u32 next_flow;
};

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr,
			"usage: %s BPF_OBJ IF SRCMAC DSTMAC SRCIP DSTIP FRAMELEN FLOWS SECONDS [BATCH]\n",
			argv[0]);
		return 2;
	}
	struct gen_args a;
	// The kernel runs at most 256 frames per live-frames batch.
	if (parse_gen_args(argc - 2, argv + 2, 256, &a))
		return 2;
	int len = a.len;
	double secs = a.secs;
	struct gen_config cfg = {.out_ifindex = if_nametoindex(a.ifname), .flows = a.flows};
	if (!cfg.out_ifindex) {
		perror("if_nametoindex");
		return 1;
	}

	struct bpf_object *obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		perror("bpf_object__open_file");
		return 1;
	}
	struct bpf_map *data_map = NULL, *map;
	bpf_object__for_each_map(map, obj)
	{
		const char *name = bpf_map__name(map);
		size_t n = strlen(name);
		if (n >= 5 && !strcmp(name + n - 5, ".data"))
			data_map = map;
	}
	if (!data_map || bpf_map__set_initial_value(data_map, &cfg, sizeof(cfg))) {
		fprintf(stderr, "%s: no .data section of the expected size\n", argv[1]);
		return 1;
	}
	if (bpf_object__load(obj)) {
		perror("bpf_object__load");
		return 1;
	}
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, "xdp_gen");
	if (!prog) {
		fprintf(stderr, "%s: no program xdp_gen\n", argv[1]);
		return 1;
	}

	uint8_t frame[1514];
	build_frame(frame, len, a.smac, a.dmac, a.sip, a.dip, 0);
	// Each BPF_PROG_RUN call sets up and tears down its page pool, which here takes
	// ~17 ms (one call of 64 frames ran 60 times a second). So one call runs for the
	// whole duration, with a repeat count it will not reach, and SIGALRM ends it: the
	// kernel's loop stops at a pending signal between batches (EINTR).
	struct sigaction sa = {.sa_handler = on_alarm}; // no SA_RESTART
	sigaction(SIGALRM, &sa, NULL);
	// Then every 10 ms: a signal that lands between the loop's check and the call (and
	// so interrupts nothing) is followed by one that does.
	struct itimerval it = {.it_value = {.tv_sec = (time_t)secs,
					    .tv_usec = (suseconds_t)((secs - (time_t)secs) * 1e6)},
			       .it_interval = {.tv_usec = 10000}};
	double t0 = now();
	setitimer(ITIMER_REAL, &it, NULL);
	unsigned calls = 0;
	while (!alarm_at) {
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = len,
			    .repeat = 1 << 30, .flags = BPF_F_TEST_XDP_LIVE_FRAMES,
			    .batch_size = a.batch);
		calls++;
		if (bpf_prog_test_run_opts(bpf_program__fd(prog), &opts) && errno != EINTR) {
			perror("BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (kernel 5.18 or later; "
			       "perf/bridge --gen afpacket does without)");
			return 1;
		}
	}
	struct itimerval off = {0};
	setitimer(ITIMER_REAL, &off, NULL);
	// The window the frames were sent in ends at the signal, not after the teardown.
	printf("{\"calls\": %u, \"seconds\": %.6f}\n", calls, alarm_at - t0);
	bpf_object__close(obj);
	return 0;
}
