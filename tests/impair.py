#!/usr/bin/env python3
"""Deterministic link-impairment stage: a two-port Ethernet bridge with seeded loss,
duplication and reordering, for testbeds that have no tc-netem.

    impair.py --a IFACE_A --b IFACE_B --seed N [--loss 0.02] [--dup 0.01]
              [--reorder 0.02] [--reorder-delay-ms 5] [--stats-file PATH]

Every frame received on A is sent out of B and vice versa (AF_PACKET raw sockets,
frames this program sent itself -- PACKET_OUTGOING -- are ignored). Only TCP frames
that carry payload (IPv4/IPv6, behind up to 2 VLAN tags) are impaired; ARP, ND, ICMP,
UDP, fragments and TCP frames with SYN, FIN or RST set are always forwarded untouched,
so the testbed stays reachable and handshakes/teardowns are not what is being tested.

Per impairable frame one draw r = rng.random() from random.Random per direction
(seeded from --seed and the direction), so a given seed and frame sequence always
gives the same decisions:
    r < loss                      -> dropped
    r < loss + dup                -> sent twice
    r < loss + dup + reorder      -> held back, released after the next 1..3 frames
                                     of the same direction or after
                                     --reorder-delay-ms, whichever comes first
Counters per direction (received, forwarded, impairable, dropped, duplicated,
reordered, csum_fixed, send_errors) are written as JSON to --stats-file every second
and on SIGTERM/SIGINT; a one-line summary goes to stderr on exit (exit status 0).

Frames whose TCP/UDP checksum was left for offload (TP_STATUS_CSUMNOTREADY) get it
computed here, so tx checksum offload on the outer veths is fine. GSO/GRO frames larger
than the MTU can NOT be forwarded (send fails with EMSGSIZE, counted as send_errors):
turn off gro/gso/tso on all four veth ends. VLAN tags the kernel stripped into
metadata are put back into the frame before it is sent on.

The bridged interfaces must have no IP stack of their own in the way: give the stage a
namespace of its own holding just the two veth ends, with no addresses and IPv6
disabled. Ready-to-paste example (namespaces `srvside` -- `imp` -- `bridge`):

    ip netns add srvside; ip netns add imp; ip netns add bridge
    ip netns exec imp sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \\
        net.ipv6.conf.default.disable_ipv6=1
    ip link add s0 netns srvside type veth peer name ia netns imp
    ip link add ib netns imp type veth peer name b0 netns bridge
    for x in "srvside s0" "imp ia" "imp ib" "bridge b0"; do set -- $x
        ip netns exec $1 ethtool -K $2 gro off gso off tso off
        ip netns exec $1 ip link set $2 up; done
    ip netns exec srvside ip addr add 10.99.0.2/24 dev s0
    ip netns exec bridge ip addr add 10.99.0.1/24 dev b0
    ip netns exec imp python3 tests/impair.py --a ia --b ib --seed 7 \\
        --loss 0.02 --dup 0.01 --reorder 0.02 --stats-file /tmp/imp.json & sleep 1
    ip netns exec bridge ping -c 3 10.99.0.2   # now crosses the impaired link
    kill -TERM %1; wait; ip netns del srvside; ip netns del imp; ip netns del bridge

Python 3 stdlib only; must run as root (CAP_NET_RAW, SO_*BUFFORCE).
"""
import argparse
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
SOCKBUF = 8 << 20
BUFSZ = 65536
BATCH = 64  # frames drained per socket per poll wakeup
AUX = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
ANCSZ = socket.CMSG_SPACE(AUX.size)
H = struct.Struct("!H")
COUNTERS = ("received", "forwarded", "impairable", "dropped", "duplicated",
            "reordered", "csum_fixed", "send_errors")


def open_sock(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    for opt, fallback in ((SO_RCVBUFFORCE, socket.SO_RCVBUF),
                          (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, SOCKBUF)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, fallback, SOCKBUF)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    try:  # kernel >= 4.20; the pkttype check below still guards older ones
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass
    s.bind((iface, ETH_P_ALL))
    idx = socket.if_nametoindex(iface)
    s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP,
                 struct.pack("iHH8s", idx, PACKET_MR_PROMISC, 0, b""))
    return s


def l3_offset(f, n):
    """(ethertype, offset of L3 header) behind up to 2 VLAN tags."""
    off = 12
    et = (f[12] << 8) | f[13] if n >= 14 else 0
    for _ in range(2):
        if et in (0x8100, 0x88A8, 0x9100) and n >= off + 6:
            off += 4
            et = (f[off] << 8) | f[off + 1]
    return et, off + 2


def l4_info(f, n):
    """(proto, l4 offset, l4 end) for unfragmented IPv4/IPv6, else None."""
    et, o = l3_offset(f, n)
    if et == 0x0800:
        if n < o + 20 or f[o] >> 4 != 4:
            return None
        ihl = (f[o] & 15) * 4
        tot = (f[o + 2] << 8) | f[o + 3]
        if ((f[o + 6] & 0x3F) | f[o + 7]) or ihl < 20 or o + tot > n or tot < ihl:
            return None  # fragment (MF set or offset != 0) or malformed
        return f[o + 9], o + ihl, o + tot
    if et == 0x86DD:
        if n < o + 40:
            return None
        end = o + 40 + ((f[o + 4] << 8) | f[o + 5])
        if end > n:
            return None
        nh, p = f[o + 6], o + 40
        for _ in range(8):  # walk extension headers
            if nh in (0, 43, 60) and p + 8 <= end:
                nh, p = f[p], p + 8 + f[p + 1] * 8
            else:
                break
        if nh == 44 or p > end:
            return None
        return nh, p, end
    return None


def tcp_payload(f, n):
    """True for TCP frames with payload and none of SYN/FIN/RST."""
    info = l4_info(f, n)
    if info is None or info[0] != 6:
        return False
    _, p, end = info
    if p + 20 > end or f[p + 13] & 0x07:
        return False
    return end - p - (f[p + 12] >> 4) * 4 > 0


def fix_csum(f, n):
    """Finish a CHECKSUM_PARTIAL TCP/UDP checksum (field holds the pseudo-header sum)."""
    info = l4_info(f, n)
    if info is None or info[0] not in (6, 17):
        return False
    proto, p, end = info
    co = p + (16 if proto == 6 else 6)
    if co + 2 > end:
        return False
    seg = bytes(f[p:end])
    if len(seg) & 1:
        seg += b"\0"
    # one's-complement sum of 16-bit words == big integer mod 0xffff (2**16 = 1)
    c = ~(int.from_bytes(seg, "big") % 0xFFFF) & 0xFFFF
    if proto == 17 and c == 0:
        c = 0xFFFF
    H.pack_into(f, co, c)
    return True


class Direction:
    def __init__(self, name, src, dst, rng):
        self.name, self.src, self.dst, self.rng = name, src, dst, rng
        self.c = dict.fromkeys(COUNTERS, 0)
        self.held = []  # [frames_left, deadline, data]

    def send(self, data):
        try:
            self.dst.send(data)
            return True
        except OSError:
            self.c["send_errors"] += 1
            return False

    def after_send(self):
        if self.held:
            rel = []
            for h in self.held:
                h[0] -= 1
                if h[0] <= 0:
                    rel.append(h)
            for h in rel:
                self.held.remove(h)
                if self.send(h[2]):
                    self.c["forwarded"] += 1

    def release_due(self, now, force=False):
        if self.held:
            due = [h for h in self.held if force or h[1] <= now]
            for h in due:
                self.held.remove(h)
                if self.send(h[2]):
                    self.c["forwarded"] += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="interface A")
    ap.add_argument("--b", required=True, help="interface B")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--loss", type=float, default=0.02)
    ap.add_argument("--dup", type=float, default=0.01)
    ap.add_argument("--reorder", type=float, default=0.02)
    ap.add_argument("--reorder-delay-ms", type=float, default=5.0)
    ap.add_argument("--stats-file")
    args = ap.parse_args()
    probs = (args.loss, args.dup, args.reorder)
    if min(probs) < 0 or sum(probs) > 1 or args.reorder_delay_ms < 0:
        ap.error("need loss, dup, reorder >= 0 with a sum <= 1, delay >= 0")

    try:
        sa, sb = open_sock(args.a), open_sock(args.b)
    except OSError as e:
        print(f"impair: cannot open {args.a}/{args.b}: {e}", file=sys.stderr)
        return 1
    dirs = {
        sa.fileno(): Direction("a_to_b", sa, sb, random.Random(f"{args.seed}:a_to_b")),
        sb.fileno(): Direction("b_to_a", sb, sa, random.Random(f"{args.seed}:b_to_a")),
    }
    ifn = {"a_to_b": (args.a, args.b), "b_to_a": (args.b, args.a)}
    p_loss, p_dup = args.loss, args.loss + args.dup
    p_reo = p_dup + args.reorder
    delay = args.reorder_delay_ms / 1000.0

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    def write_stats():
        if not args.stats_file:
            return
        out = {"seed": args.seed, "loss": args.loss, "dup": args.dup,
               "reorder": args.reorder, "reorder_delay_ms": args.reorder_delay_ms}
        for d in dirs.values():
            out[d.name] = dict(d.c, src=ifn[d.name][0], dst=ifn[d.name][1])
        tmp = args.stats_file + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(out, fh, indent=1, sort_keys=True)
        os.replace(tmp, args.stats_file)

    buf = bytearray(BUFSZ)
    mv = memoryview(buf)
    vbuf = bytearray(BUFSZ + 4)  # frame with a stripped VLAN tag put back
    vmv = memoryview(vbuf)
    poller = select.poll()
    for s in (sa, sb):
        poller.register(s.fileno(), select.POLLIN)
    bufs = [mv]
    dontwait = socket.MSG_DONTWAIT
    next_stats = time.monotonic()
    write_stats()

    while not stop:
        now = time.monotonic()
        timeout = 200.0
        for d in dirs.values():
            for h in d.held:
                timeout = min(timeout, max(0.0, (h[1] - now) * 1000.0))
        events = poller.poll(timeout)
        for fd, _ in events:
            d = dirs[fd]
            src, c, rng = d.src, d.c, d.rng
            for _ in range(BATCH):
                try:
                    n, anc, _fl, addr = src.recvmsg_into(bufs, ANCSZ, dontwait)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # e.g. ENETDOWN: keep going
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                c["received"] += 1
                f, fm = buf, mv
                st = 0
                if anc:
                    st, _l, _s, _m, _nt, tci, tpid = AUX.unpack_from(anc[0][2])
                    if st & TP_STATUS_VLAN_VALID:
                        if not st & TP_STATUS_VLAN_TPID_VALID or not tpid:
                            tpid = 0x8100
                        vbuf[0:12] = mv[0:12]
                        struct.pack_into("!HH", vbuf, 12, tpid, tci)
                        vbuf[16:n + 4] = mv[12:n]
                        n += 4
                        f, fm = vbuf, vmv
                if st & TP_STATUS_CSUMNOTREADY and fix_csum(f, n):
                    c["csum_fixed"] += 1
                frame = fm[:n]
                if tcp_payload(f, n):
                    c["impairable"] += 1
                    r = rng.random()
                    if r < p_reo:
                        if r < p_loss:
                            c["dropped"] += 1
                            continue
                        if r < p_dup:
                            c["duplicated"] += 1
                            d.send(frame)
                        else:
                            c["reordered"] += 1
                            d.held.append([rng.randint(1, 3), time.monotonic() + delay,
                                           bytes(frame)])
                            continue
                if d.send(frame):
                    c["forwarded"] += 1
                d.after_send()
        now = time.monotonic()
        for d in dirs.values():
            d.release_due(now)
        if now >= next_stats:
            write_stats()
            next_stats = now + 1.0

    for d in dirs.values():
        d.release_due(0, force=True)
    write_stats()
    print("impair: " + "; ".join(
        f"{d.name} fwd={d.c['forwarded']} drop={d.c['dropped']} dup={d.c['duplicated']}"
        f" reord={d.c['reordered']} err={d.c['send_errors']}" for d in dirs.values()),
        file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
