// perf/frame.h — what perf/gen.c and perf/xdpgen.c share: argument parsing and the
// Ethernet/IPv4/UDP frame both generators send (UDP checksum 0, which IPv4 allows).
#pragma once
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
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
