#!/usr/bin/env python3
"""HTTPS upload server for glasswire's interception tests (crates/glasswire/tests/intercept.rs).

Answers a POST with the sha256 (hex, then a newline) of the request body, so a test can
check that every byte it uploaded through the bridge reached the server. A GET answers
"upload server". Standard library only.

    https_upload_server.py --port 9000 --cert www.crt --key www.key [--bind 0.0.0.0]
"""

import argparse
import hashlib
import http.server
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _reply(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._reply(200, "upload server\n")

    def do_POST(self):
        length = self.headers.get("Content-Length")
        if length is None:
            self._reply(411, "Content-Length required\n")
            return
        left = int(length)
        digest = hashlib.sha256()
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        if left:
            self._reply(400, f"body ended {left} bytes short\n")
            return
        self._reply(200, digest.hexdigest() + "\n")

    def log_message(self, fmt, *args):
        sys.stderr.write("upload server: " + (fmt % args) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--bind", default="0.0.0.0")
    a = p.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    server = http.server.ThreadingHTTPServer((a.bind, a.port), Handler)
    server.daemon_threads = True
    # The handshake happens on the handler's thread at its first read, so a client that
    # stalls or fails its handshake does not hold up the others.
    server.socket = ctx.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
