#!/usr/bin/env python3
"""Captures the server's first flight (ServerHello onward) from openssl s_server for the
ClientHello captures next door: testdata/server_hello/*.bin. Loopback only. Run from a
scratch directory: it writes a throwaway key and certificate (c.pem, k.pem) there."""
import os, socket, subprocess, time
subprocess.run(["openssl","req","-x509","-newkey","ec","-pkeyopt","ec_paramgen_curve:prime256v1","-nodes","-days","2","-subj","/CN=test.example","-keyout","k.pem","-out","c.pem"], check=True, capture_output=True)
def grab(port, args, hello_file, out):
    srv = subprocess.Popen(["openssl","s_server","-accept",f"127.0.0.1:{port}","-cert","c.pem","-key","k.pem","-quiet"]+args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.7)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(open(hello_file,"rb").read())
    time.sleep(0.5)
    data = s.recv(65536)
    s.close(); srv.kill()
    open(out,"wb").write(data)
    print(out, len(data), data[:6].hex())
T=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..") + "/"
grab(24431, ["-alpn","h2"], T+"openssl_s_client.bin", T+"server_hello/openssl_tls13_h2.bin")
grab(24432, ["-tls1_2","-alpn","http/1.1"], T+"curl.bin", T+"server_hello/openssl_tls12_http11.bin")
grab(24433, ["-tls1_2"], T+"openssl_tls12_nosni.bin", T+"server_hello/openssl_tls12_noalpn.bin")
