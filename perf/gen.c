// perf/gen.c — a small UDP frame generator for perf/bridge.
//
// Sends prebuilt Ethernet/IPv4/UDP frames on one interface through an AF_PACKET socket
// (PACKET_QDISC_BYPASS, sendmmsg batches), cycling over N flows (distinct UDP source and
// destination ports), for a fixed duration, then prints one JSON line:
//   {"sent": N, "errors": N, "seconds": S, "pps": R}
// Built by perf/bridge with gcc at run time; run it inside the client namespace only.
//
// usage: gen IFNAME SRC_MAC DST_MAC SRC_IP DST_IP FRAME_LEN FLOWS SECONDS [BATCH]
//   FRAME_LEN: bytes handed to the interface (Ethernet header .. payload, no FCS)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"

int main(int argc, char **argv)
{
	struct gen_args a;
	if (parse_gen_args(argc - 1, argv + 1, 1024, &a))
		return 2;
	const char *ifname = a.ifname;
	int len = a.len, flows = a.flows, batch = a.batch;
	double secs = a.secs;

	int fd = socket(AF_PACKET, SOCK_RAW, 0); // protocol 0: send only, receive nothing
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	int one = 1;
	setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	int sndbuf = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf));
	struct sockaddr_ll sll = {0};
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_IP);
	sll.sll_ifindex = if_nametoindex(ifname);
	if (!sll.sll_ifindex) {
		perror("if_nametoindex");
		return 1;
	}
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
		perror("bind");
		return 1;
	}

	uint8_t *frames = calloc((size_t)flows, (size_t)len);
	for (int f = 0; f < flows; f++)
		build_frame(frames + (size_t)f * len, len, a.smac, a.dmac, a.sip, a.dip, f);

	struct mmsghdr *msgs = calloc((size_t)batch, sizeof(*msgs));
	struct iovec *iov = calloc((size_t)batch, sizeof(*iov));
	for (int i = 0; i < batch; i++) {
		iov[i].iov_len = len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	uint64_t sent = 0, errors = 0;
	int next = 0;
	double t0 = now(), end = t0 + secs, t = t0;
	unsigned iter = 0;
	while (1) {
		if ((iter++ & 15) == 0) {
			t = now();
			if (t >= end)
				break;
		}
		for (int i = 0; i < batch; i++) {
			iov[i].iov_base = frames + (size_t)next * len;
			if (++next == flows)
				next = 0;
		}
		int n = sendmmsg(fd, msgs, batch, 0);
		if (n < 0) {
			errors++;
			if (errno == ENOBUFS || errno == EAGAIN)
				continue;
			perror("sendmmsg");
			return 1;
		}
		sent += n;
		// frames not taken are simply the next ones; the flow rotation is approximate
	}
	double el = now() - t0;
	printf("{\"sent\": %llu, \"errors\": %llu, \"seconds\": %.6f, \"pps\": %.1f}\n",
	       (unsigned long long)sent, (unsigned long long)errors, el, sent / el);
	return 0;
}
