// perf/xdp_progs.c — XDP programs perf/bridge attaches to the endpoint veths it makes:
// "xdp" passes every frame (as the glasswire testbed does on its endpoints: needed for
// XDP_REDIRECT into a veth, and it moves receive onto veth's NAPI path), "xdp_drop"
// drops every frame (the generator-ceiling sink).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int prog_pass(struct xdp_md *ctx) { return XDP_PASS; }

SEC("xdp_drop")
int prog_drop(struct xdp_md *ctx) { return XDP_DROP; }

char _license[] SEC("license") = "Dual MIT/GPL";
