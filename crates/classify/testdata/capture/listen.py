"""Record the first bytes a client sends to 127.0.0.1:PORT, then close."""
import socket, sys
port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(1); s.settimeout(20)
open(out + ".ready", "w").close()
c, _ = s.accept(); c.settimeout(1.5)
data = b""
try:
    while len(data) < 65536:
        b = c.recv(65536)
        if not b: break
        data += b
except socket.timeout:
    pass
open(out, "wb").write(data); c.close(); s.close()
print(out, len(data))
