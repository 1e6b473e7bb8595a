// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
//
// glasswire's XDP program: the first thing every frame on a bridge port meets.
//
// It is attached to both ports of the bridge. For each frame it decides, in this order:
//   1. not one of our ports                      -> XDP_PASS (never touch other traffic)
//   2. userspace-forward mode                    -> AF_XDP socket of this queue
//   3. not IP (ARP, LLDP, unknown VLAN payload)  -> peer port, in the kernel
//   4. IP but not TCP (UDP, ICMP, ...)           -> peer port, in the kernel
//   5. TCP whose flow has verdict BYPASS         -> peer port, in the kernel
//      TCP whose flow has verdict BLOCK          -> XDP_DROP
//      (but a SYN opening a new connection on a decided flow's ports goes to 6)
//   6. everything else (new or inspected TCP, anything we could not parse,
//      IP fragments, IPv6 with extension headers) -> AF_XDP socket of this queue
// If no AF_XDP socket is bound on the queue the frame goes to the peer port (fail open):
// a bridge that loses frames because userspace is not ready is worse than one that
// forwards them uninspected, and the miss is counted.
//
// The flow key layout, verdict values and counter indices are mirrored in
// crates/xdp/src/maps.rs and crates/wire/src/flow.rs; change them together.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_QUEUES 64
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8

// A TCP flow, the same for both directions: the (address, port) pair that sorts lower
// (bytewise address, then port) is `lo`.
struct flow_key {
	__u8 addr_lo[16]; // IPv4 uses the first 4 bytes, the rest is zero
	__u8 addr_hi[16];
	__u16 port_lo; // host byte order
	__u16 port_hi;
	__u8 family; // 4 or 6
	__u8 proto; // IPPROTO_TCP
	__u8 pad[2];
};

enum verdict {
	VERDICT_INSPECT = 0,
	VERDICT_BYPASS = 1,
	VERDICT_BLOCK = 2,
};

// Written by userspace; the kernel counts the frames it forwarded (or dropped) on the
// fast path and notes when and how the flow was last seen, so userspace can evict idle
// and closed flows it no longer sees. Direction 0 is lo -> hi.
struct flow_state {
	__u32 verdict;
	__u32 tcp_flags; // FLOW_* below, as seen on the fast path
	__u64 packets[2];
	__u64 bytes[2];
	__u64 last_seen_ns; // bpf_ktime_get_ns (CLOCK_MONOTONIC)
	// The session the verdict was written for (userspace's id): a new connection on the
	// same ports gets a new one, so the sweeper can tell the two apart.
	__u64 session;
};

#define FLOW_FIN_LO_HI 1
#define FLOW_FIN_HI_LO 2
#define FLOW_RST 4
// A frame with payload after both FINs: the session did not end normally.
#define FLOW_AFTER_CLOSE 8
// Not stored: the frame carries payload (parse() to the verdict check).
#define FRAME_PAYLOAD 0x100
// Not stored: the frame is a SYN without ACK, a connection opening.
#define FRAME_OPENING 0x200

enum counter {
	C_RX_FRAMES = 0,
	C_RX_BYTES,
	C_FAST_NON_IP, // frames forwarded in the kernel because they are not IP
	C_FAST_NON_TCP, // ... because they are IP but not TCP
	C_FAST_BYPASS, // ... because their TCP flow has a BYPASS verdict
	C_FAST_BYTES, // bytes of all fast-path frames
	C_TO_USERSPACE, // frames redirected to the AF_XDP socket
	C_BLOCKED, // frames dropped by a BLOCK verdict
	C_NO_SOCKET, // frames meant for userspace with no socket on their queue
	C_COUNT,
};

// Per port, per CPU: one lookup per frame finds all of a port's counters.
struct port_counters {
	__u64 c[C_COUNT];
};

// Set by the loader before the program is loaded (aya's override_global); being a
// constant, the verifier drops the branch that is not taken.
volatile const __u32 userspace_forward = 0;

// The two ports' ifindexes, set by the loader like `userspace_forward`: which port a
// frame came in on is two compares, not a map lookup per frame.
volatile const __u32 port_a_ifindex = 0;
volatile const __u32 port_b_ifindex = 0;

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_a SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks_b SEC(".maps");

// Slot i holds the ifindex of the port that frames arriving on port i leave by.
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct flow_key);
	__type(value, struct flow_state);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct port_counters);
} counters SEC(".maps");

#define COUNT(which, n) (pc->c[(which)] += (n))

enum parsed {
	P_NON_IP,
	P_NON_TCP,
	P_TCP,
	P_USERSPACE, // malformed, fragmented or not understood here: let userspace judge
};

// Bytewise compare of two 16-byte addresses: <0, 0, >0 like memcmp.
static __always_inline int addr_cmp(const __u8 *a, const __u8 *b)
{
#pragma unroll
	for (int i = 0; i < 16; i++) {
		if (a[i] != b[i])
			return a[i] < b[i] ? -1 : 1;
	}
	return 0;
}

// Fills `key` as the normalised 5-tuple; returns the direction (0: src is lo).
static __always_inline __u32 normalise(struct flow_key *key, const __u8 *src, const __u8 *dst,
				       __u16 sport, __u16 dport)
{
	int c = addr_cmp(src, dst);
	__u32 dir = (c > 0 || (c == 0 && sport > dport)) ? 1 : 0;
	const __u8 *lo = dir ? dst : src;
	const __u8 *hi = dir ? src : dst;
	__builtin_memcpy(key->addr_lo, lo, 16);
	__builtin_memcpy(key->addr_hi, hi, 16);
	key->port_lo = dir ? dport : sport;
	key->port_hi = dir ? sport : dport;
	return dir;
}

static __always_inline enum parsed parse(void *data, void *end, struct flow_key *key, __u32 *dir,
					   __u32 *flow_flags)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return P_USERSPACE; // runt
	__u16 proto = eth->h_proto;
	void *l3 = eth + 1;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_))
			break;
		if (l3 + 4 > end)
			return P_USERSPACE;
		proto = *(__u16 *)(l3 + 2);
		l3 += 4;
	}

	__u8 src[16] = {}, dst[16] = {};
	void *l4;
	__u32 l4_len; // TCP header and payload, from the IP header's length field
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end || ip->ihl < 5 || ip->version != 4)
			return P_USERSPACE;
		if (ip->protocol != IPPROTO_TCP)
			return P_NON_TCP;
		// Fragments carry no (or a partial) TCP header; userspace sorts them out.
		if (ip->frag_off & bpf_htons(0x3fff))
			return P_USERSPACE;
		l4 = l3 + ip->ihl * 4;
		l4_len = bpf_ntohs(ip->tot_len) - ip->ihl * 4;
		__builtin_memcpy(src, &ip->saddr, 4);
		__builtin_memcpy(dst, &ip->daddr, 4);
		key->family = 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end || ip6->version != 6)
			return P_USERSPACE;
		if (ip6->nexthdr != IPPROTO_TCP) {
			// Extension headers may hide TCP behind them: userspace walks them.
			switch (ip6->nexthdr) {
			case 0: // hop-by-hop
			case 43: // routing
			case 44: // fragment
			case 60: // destination options
				return P_USERSPACE;
			default:
				return P_NON_TCP;
			}
		}
		l4 = ip6 + 1;
		l4_len = bpf_ntohs(ip6->payload_len);
		__builtin_memcpy(src, &ip6->saddr, 16);
		__builtin_memcpy(dst, &ip6->daddr, 16);
		key->family = 6;
	} else {
		return P_NON_IP;
	}

	struct tcphdr *tcp = l4;
	if ((void *)(tcp + 1) > end || tcp->doff < 5)
		return P_USERSPACE;
	key->proto = IPPROTO_TCP;
	*dir = normalise(key, src, dst, bpf_ntohs(tcp->source), bpf_ntohs(tcp->dest));
	if (tcp->fin)
		*flow_flags |= *dir ? FLOW_FIN_HI_LO : FLOW_FIN_LO_HI;
	if (tcp->rst)
		*flow_flags |= FLOW_RST;
	// Signed: a length field smaller than the headers is not payload.
	if ((int)l4_len > (int)(tcp->doff * 4))
		*flow_flags |= FRAME_PAYLOAD;
	if (tcp->syn && !tcp->ack)
		*flow_flags |= FRAME_OPENING;
	return P_TCP;
}

SEC("xdp")
int glasswire_xdp(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 port;
	if (ifindex == port_a_ifindex)
		port = 0;
	else if (ifindex == port_b_ifindex)
		port = 1;
	else
		return XDP_PASS;

	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 len = end - data;
	struct port_counters *pc = bpf_map_lookup_elem(&counters, &port);
	if (!pc)
		return XDP_PASS; // cannot happen: port is 0 or 1
	COUNT(C_RX_FRAMES, 1);
	COUNT(C_RX_BYTES, len);

	if (userspace_forward)
		goto userspace;

	struct flow_key key = {};
	__u32 dir = 0, flow_flags = 0;
	switch (parse(data, end, &key, &dir, &flow_flags)) {
	case P_NON_IP:
		COUNT(C_FAST_NON_IP, 1);
		goto fast;
	case P_NON_TCP:
		COUNT(C_FAST_NON_TCP, 1);
		goto fast;
	case P_USERSPACE:
		goto userspace;
	case P_TCP:
		break;
	}

	struct flow_state *st = bpf_map_lookup_elem(&verdicts, &key);
	if (!st || (st->verdict != VERDICT_BLOCK && st->verdict != VERDICT_BYPASS))
		goto userspace;
	if (flow_flags & FRAME_OPENING) {
		// A new connection on the ports of a bypassed or blocked one (clients reuse
		// ports, NATs more so): it must be classified like any other, not ride the
		// old verdict (a block was for the old connection's hello). The entry keeps
		// a bypassed session's counts for the sweeper, which ends it.
		st->verdict = VERDICT_INSPECT;
		goto userspace;
	}
	dir &= 1;
	__sync_fetch_and_add(&st->packets[dir], 1);
	__sync_fetch_and_add(&st->bytes[dir], len);
	// Plain stores: a racing update from another CPU writes an equally recent time.
	st->last_seen_ns = bpf_ktime_get_ns();
	// Judged on the flags before this frame's: a FIN that carries data is no data after
	// close.
	__u32 both_fins = FLOW_FIN_LO_HI | FLOW_FIN_HI_LO;
	if ((flow_flags & FRAME_PAYLOAD) && (st->tcp_flags & both_fins) == both_fins)
		flow_flags |= FLOW_AFTER_CLOSE;
	flow_flags &= ~(FRAME_PAYLOAD | FRAME_OPENING);
	if (flow_flags && (st->tcp_flags & flow_flags) != flow_flags)
		__sync_fetch_and_or(&st->tcp_flags, flow_flags);
	if (st->verdict == VERDICT_BLOCK) {
		COUNT(C_BLOCKED, 1);
		return XDP_DROP;
	}
	COUNT(C_FAST_BYPASS, 1);

fast:
	COUNT(C_FAST_BYTES, len);
	return bpf_redirect_map(&peer, port, 0);

userspace:;
	__u32 q = ctx->rx_queue_index;
	if (port == 0) {
		if (bpf_map_lookup_elem(&xsks_a, &q)) {
			COUNT(C_TO_USERSPACE, 1);
			return bpf_redirect_map(&xsks_a, q, 0);
		}
	} else {
		if (bpf_map_lookup_elem(&xsks_b, &q)) {
			COUNT(C_TO_USERSPACE, 1);
			return bpf_redirect_map(&xsks_b, q, 0);
		}
	}
	COUNT(C_NO_SOCKET, 1);
	COUNT(C_FAST_BYTES, len);
	return bpf_redirect_map(&peer, port, 0);
}

char _license[] SEC("license") = "Dual MIT/GPL";
