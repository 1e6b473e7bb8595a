// perf/frame.h — what perf/gen.c and perf/xdpgen.c share: their arguments and the
// Ethernet/IPv4/UDP frame both send (UDP checksum 0, which IPv4 allows).
#pragma once
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int parse_mac(const char *s, uint8_t *m)
{
	return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &m[0], &m[1], &m[2], &m[3], &m[4],
		      &m[5]) == 6 ? 0 : -1;
}

static uint16_t csum(const uint8_t *p, int len)
{
	uint32_t s = 0;
	for (int i = 0; i + 1 < len; i += 2)
		s += (p[i] << 8) | p[i + 1];
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

// Flow f of a run: UDP source port 10000 + f % 50000, destination port 9 + f / 50000.
static void build_frame(uint8_t *p, int len, const uint8_t *smac, const uint8_t *dmac,
			struct in_addr sip, struct in_addr dip, int f)
{
	memset(p, 0, (size_t)len);
	memcpy(p, dmac, 6);
	memcpy(p + 6, smac, 6);
	p[12] = 0x08;
	p[13] = 0x00;
	uint8_t *ip = p + 14;
	int iplen = len - 14;
	ip[0] = 0x45;
	ip[2] = iplen >> 8;
	ip[3] = iplen & 0xff;
	ip[6] = 0x40; // DF
	ip[8] = 64;
	ip[9] = 17;
	memcpy(ip + 12, &sip, 4);
	memcpy(ip + 16, &dip, 4);
	uint16_t c = csum(ip, 20);
	ip[10] = c >> 8;
	ip[11] = c & 0xff;
	uint8_t *udp = ip + 20;
	int sport = 10000 + (f % 50000), dport = 9 + (f / 50000);
	udp[0] = sport >> 8;
	udp[1] = sport & 0xff;
	udp[2] = dport >> 8;
	udp[3] = dport & 0xff;
	int ulen = iplen - 20;
	udp[4] = ulen >> 8;
	udp[5] = ulen & 0xff;
	for (int i = 8; i < ulen; i++)
		udp[i] = (uint8_t)i;
}

// IF SRCMAC DSTMAC SRCIP DSTIP FRAMELEN FLOWS SECONDS [BATCH], from argv[0] on.
struct gen_args {
	const char *ifname;
	uint8_t smac[6], dmac[6];
	struct in_addr sip, dip;
	int len, flows, batch;
	double secs;
};

// 0, or prints what is wrong and returns 2 (the exit status for bad usage).
static int parse_gen_args(int argc, char **argv, int max_batch, struct gen_args *a)
{
	if (argc < 8) {
		fprintf(stderr, "expected IF SRCMAC DSTMAC SRCIP DSTIP FRAMELEN FLOWS SECONDS [BATCH]\n");
		return 2;
	}
	a->ifname = argv[0];
	if (parse_mac(argv[1], a->smac) || parse_mac(argv[2], a->dmac) || !inet_aton(argv[3], &a->sip) ||
	    !inet_aton(argv[4], &a->dip)) {
		fprintf(stderr, "bad address\n");
		return 2;
	}
	a->len = atoi(argv[5]);
	a->flows = atoi(argv[6]);
	a->secs = atof(argv[7]);
	a->batch = argc > 8 ? atoi(argv[8]) : 64;
	if (a->len < 60 || a->len > 1514 || a->flows < 1 || a->flows > 65536 || a->batch < 1 ||
	    a->batch > max_batch || !(a->secs > 0)) {
		fprintf(stderr, "bad length (60..1514), flows (1..65536), batch (1..%d) or seconds\n",
			max_batch);
		return 2;
	}
	return 0;
}
