#!/usr/bin/env python3
"""Send raw Ethernet frames out of an interface, exactly as given.

    send_frames.py IFACE HEX [HEX ...]

Used by the end-to-end tests to put frames on the wire that no socket API would build
(VLAN-tagged, truncated, lying about their lengths). Only ever run inside a testbed
namespace. Prints how many frames were sent."""
import socket
import sys


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    iface, frames = sys.argv[1], [bytes.fromhex(h) for h in sys.argv[2:]]
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        for f in frames:
            s.send(f)
    print(len(frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
