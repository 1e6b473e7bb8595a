import socket, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE
ctx.set_alpn_protocols(["h2","http/1.1"])
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
try: ctx.wrap_socket(s, server_hostname="py.example")
except Exception as e: print(e)
