// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
//
// A program that passes every frame. The testbed attaches it to the client and server
// ends of its veth pairs: a frame XDP-redirected into a veth is silently dropped unless
// the receiving end runs an XDP program (it is what enables that end's NAPI ring).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
