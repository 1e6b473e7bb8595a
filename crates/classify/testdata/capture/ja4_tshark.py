"""Independent JA4 from tshark's dissection of a raw ClientHello stream."""
import subprocess, sys, hashlib, os
import tempfile
TMP = tempfile.mkdtemp()
HEX, PCAP = os.path.join(TMP, "x.hex"), os.path.join(TMP, "x.pcap")
GREASE = {0x0a0a + 0x1010*i for i in range(16)}
def fields(binfile):
    data = open(binfile,'rb').read()
    hexdump = "".join(f"{i:06x} " + " ".join(f"{b:02x}" for b in data[i:i+16]) + "\n" for i in range(0, len(data), 16))
    open(HEX,"w").write(hexdump)
    subprocess.run(["text2pcap","-q","-T","40000,443",HEX,PCAP],check=True,capture_output=True)
    out = subprocess.run(["tshark","-r",PCAP,"-d","tcp.port==443,tls","-T","fields","-E","separator=|","-E","aggregator=,",
        "-e","tls.handshake.ciphersuite","-e","tls.handshake.extension.type","-e","tls.handshake.sig_hash_alg",
        "-e","tls.handshake.extensions_alpn_str","-e","tls.handshake.extensions.supported_version","-e","tls.handshake.version",
        "-e","tls.handshake.extensions_server_name"],capture_output=True,text=True).stdout.strip().splitlines()[0]
    return out.split("|")
def ints(s): return [int(x,0) for x in s.split(",") if x]
for f in sys.argv[1:]:
    cs, ex, sig, alpn, sv, ver, sni = fields(f)
    cs=[c for c in ints(cs) if c not in GREASE]; ex=[e for e in ints(ex) if e not in GREASE]
    sig=[s for s in ints(sig) if s not in GREASE]; sv=[v for v in ints(sv) if v not in GREASE]
    v = max(sv) if sv else int(ver,0)
    vc={0x304:"13",0x303:"12",0x302:"11",0x301:"10",0x300:"s3"}.get(v,"00")
    a1 = alpn.split(",")[0] if alpn else ""
    al = (a1[0]+a1[-1]) if a1 else "00"
    a=f"t{vc}{'d' if 0 in ex else 'i'}{min(len(cs),99):02}{min(len(ex),99):02}{al}"
    h=lambda s: hashlib.sha256(s.encode()).hexdigest()[:12]
    b=",".join(f"{c:04x}" for c in sorted(cs))
    e=",".join(f"{x:04x}" for x in sorted(x for x in ex if x not in (0,0x10)))
    c=e+("_"+",".join(f"{s:04x}" for s in sig) if sig else "")
    print(os.path.basename(f), sni or "-", alpn or "-", f"{a}_{h(b)}_{h(c)}")
