#!/usr/bin/env python3
"""seeds.py: write the seed corpora of the fuzz harnesses into
tests/fuzz/corpus/NAME/ (run from the top directory). The seeds are
real dialogues, replies, DNS answers, configurations, queue files and
maps, each small; every harness's input layout is described at the top
of its fuzz_NAME.c."""
import os
import struct

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(TOP, "tests", "fuzz", "corpus")


def write(name, seeds):
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    for label, data in seeds.items():
        with open(os.path.join(d, label), "wb") as f:
            f.write(data)


def crlf(*lines):
    return b"".join(l.encode() + b"\r\n" for l in lines)


# ---- fuzz_smtpd: [count+flags] [splits] [events] [client bytes]
NOEV = b"\xff"


def smtpd_seed(reads, flags=0, ev=NOEV):
    """reads: what the client sends in each read (at most 7; the last one
    takes all the rest)."""
    assert len(reads) <= 7
    splits = bytes(len(r) for r in reads[:-1]) + b"\0"
    assert all(len(r) < 256 for r in reads[:-1])
    return bytes([(flags << 3) | len(splits)]) + splits + ev + b"".join(reads)


EHLO = crlf("EHLO client.example")
ENVELOPE = crlf("MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME", "RCPT TO:<user@hosted.test>")
DATA = crlf("DATA")
CONTENT = crlf("Subject: hi", "", "..stuffed", "body", ".")
QUIT = crlf("QUIT")
smtpd = {
    "basic": smtpd_seed([EHLO, ENVELOPE, DATA, CONTENT, QUIT]),
    "one-read-per-line": smtpd_seed([EHLO, crlf("MAIL FROM:<a@b.example>"),
                                     crlf("RCPT TO:<user@hosted.test>"), DATA,
                                     crlf("Subject: hi", ""), crlf("body", "."), QUIT]),
    "pipelined": smtpd_seed([crlf("EHLO c.example"),
                             crlf("MAIL FROM:<a@b.example>", "RCPT TO:<x@hosted.test>",
                                  "RCPT TO:<y@other.test>", "DATA"),
                             crlf("hello", "."), QUIT]),
    "starttls": smtpd_seed([EHLO, crlf("STARTTLS"), EHLO, ENVELOPE, DATA, CONTENT, QUIT]),
    "starttls-injection": smtpd_seed([EHLO, crlf("STARTTLS", "RSET")]),
    "encrypt": smtpd_seed([EHLO, crlf("MAIL FROM:<a@b.example>"), crlf("STARTTLS"), EHLO,
                           ENVELOPE, DATA, CONTENT], flags=1),
    "relay-denied": smtpd_seed([crlf("HELO c.example"), crlf("MAIL FROM:<a@b.example>"),
                                crlf("RCPT TO:<v@elsewhere.example>"), crlf("RCPT TO:<postmaster>"),
                                crlf("RCPT TO:<u@[192.0.2.1]>"),
                                crlf("RCPT TO:<@route.example:u@hosted.test>"),
                                crlf("RCPT TO:<u%elsewhere.example@hosted.test>")]),
    "relay-trusted": smtpd_seed([EHLO, crlf("MAIL FROM:<>", "RCPT TO:<v@elsewhere.example>",
                                            "RCPT TO:<w@[IPv6:2001:db8::1]>", "DATA"),
                                 crlf("."), QUIT], flags=4),
    "strict": smtpd_seed([crlf("MAIL FROM:a@b.example"), EHLO, crlf("MAIL FROM:a@b.example"),
                          crlf("MAIL FROM:<a@b.example> SIZE=5000"), crlf("VRFY u"),
                          crlf("NOOP"), crlf("HELP", "EXPN x", "FOO", "RSET", "RSET", "RSET")],
                         flags=2),
    "vrfy-disabled": smtpd_seed([crlf("HELO c.example"), crlf("VRFY u"),
                                 crlf("MAIL FROM:<a@b.example> BODY=7BIT")], flags=3),
    "shutdown-in-data": smtpd_seed([EHLO, ENVELOPE, DATA, crlf("Subject: x"), CONTENT, QUIT],
                                   ev=b"\xf4"),
    "shutdown-in-tls": smtpd_seed([EHLO, crlf("STARTTLS"), EHLO], ev=b"\xf2"),
    "timeout": smtpd_seed([EHLO, crlf("NOOP")], ev=b"\x1f"),
    "leave-while-queued": smtpd_seed([EHLO, ENVELOPE, DATA, CONTENT, QUIT], flags=16 | 8),
    "bare-lf": smtpd_seed([b"EHLO c.example\nQUIT\r\n"]),
    "long-line": smtpd_seed([b"NOOP " + b"x" * 600 + b"\r\n" + crlf("NOOP")], flags=2),
}

# ---- fuzz_data: [count+flags] [splits] [content]
data = {
    "simple": b"\x00" + crlf("Subject: hi", "", "body", "."),
    "stuffed": b"\x02\x05\x00" + crlf("..one", ".", "...two", "."),
    "two-messages": b"\x00" + crlf("a", ".") + crlf("b", "."),
    "smuggling": b"\x00" + b"a\r\n\n.\r\nMAIL FROM:<x@y.example>\r\n" + crlf(".", "b", "."),
    "bare-cr": b"\x01\x03" + b"a\rb\r\n.\r\n",
    "too-big": b"\x00" + (b"y" * 70 + b"\r\n") * 60 + b".\r\n",
    "helo-split-dot": b"\x0b\x01\x01\x01" + crlf("x", "."),
    "unfinished": b"\x00" + crlf("Subject: never ends", "body"),
}

# ---- fuzz_mailaddr: [mode] [text]
M_MAIL, M_MAIL_STRICT, M_RCPT, M_RCPT_STRICT, M_IPADDR, M_IFLIST, M_NETLIST, M_NEXTHOP = range(8)
mailaddr = {
    "mail": bytes([M_MAIL]) + b"<a@b.example> SIZE=100 BODY=8BITMIME",
    "mail-null": bytes([M_MAIL_STRICT]) + b"<>",
    "mail-bare": bytes([M_MAIL]) + b"a.b@c.example",
    "mail-quoted": bytes([M_MAIL]) + b'<"a b\\"c"@d.example>',
    "mail-route": bytes([M_MAIL_STRICT]) + b"<@x.example,@y.example:u@z.example>",
    "mail-literal": bytes([M_MAIL]) + b"<u@[192.0.2.1]>",
    "rcpt-literal6": bytes([M_RCPT_STRICT]) + b"<u@[IPv6:2001:db8::1]>",
    "rcpt-postmaster": bytes([M_RCPT]) + b"<Postmaster>",
    "rcpt-percent": bytes([M_RCPT]) + b"<u%other.example@hosted.test>",
    "rcpt-param": bytes([M_RCPT]) + b"<u@hosted.test> NOTIFY=NEVER",
    "ip4": bytes([M_IPADDR]) + b"192.0.2.1",
    "ip6": bytes([M_IPADDR]) + b"[IPv6:2001:db8::ffff:1.2.3.4]",
    "iflist": bytes([M_IFLIST]) + b"192.0.2.1, [2001:db8::1]",
    "iflist-all": bytes([M_IFLIST]) + b"loopback-only",
    "netlist": bytes([M_NETLIST]) + b"127.0.0.0/8 [::1]/128 10.0.0.0/8,[2001:db8::]/32",
    "nexthop": bytes([M_NEXTHOP]) + b"smtp:[mx.example.com]:2525",
    "nexthop-lmtp": bytes([M_NEXTHOP | 0x80]) + b"unix:/run/dovecot/lmtp",
    "nexthop-ip6": bytes([M_NEXTHOP]) + b"lmtp:inet:[2001:db8::5]:24",
}

# ---- fuzz_reply: lines
reply = {
    "ehlo": crlf("250-mx.example.com Hello client", "250-PIPELINING", "250-SIZE 52428800",
                 "250-8BITMIME", "250-STARTTLS", "250-ENHANCEDSTATUSCODES", "250 CHUNKING"),
    "greeting": crlf("220-mx.example.com ESMTP", "220 no UCE"),
    "multi-dsn": crlf("550-5.7.1 Service unavailable;", "550-5.7.1 client host blocked",
                      "550 5.7.1 see https://example.com/rbl"),
    "pipelined": crlf("250 2.1.0 Ok", "250 2.1.5 Ok", "554 5.7.1 Relay access denied",
                      "354 End data with <CR><LF>.<CR><LF>"),
    "bare-code": b"250\r\n421\n",
    "mixed-code": crlf("250-first", "251 second"),
    "lmtp": crlf("250 2.0.0 <a@x> Saved", "452 4.2.2 <b@x> Quota exceeded"),
}


# ---- fuzz_dns: [mode: low 2 bits 0 MX, 1 A, 2 AAAA; the rest max] [answer]
def name(n):
    out = b""
    for label in n.split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def packet(qname, qtype, answers, rcode=0):
    hdr = struct.pack(">HHHHHH", 0x1234, 0x8180 | rcode, 1, len(answers), 0, 0)
    q = name(qname) + struct.pack(">HH", qtype, 1)
    body = b""
    for owner, rtype, rdata in answers:
        body += owner + struct.pack(">HHIH", rtype, 1, 300, len(rdata)) + rdata
    return hdr + q + body


PTR_Q = b"\xc0\x0c"  # a compression pointer to the question's name
MX, A, AAAA, CNAME = 15, 1, 28, 5
dns = {
    "mx": bytes([0 | 9 << 2]) + packet("example.com", MX, [
        (PTR_Q, MX, struct.pack(">H", 10) + name("mx1.example.com")),
        (PTR_Q, MX, struct.pack(">H", 20) + name("mx2.example.com")),
        (PTR_Q, MX, struct.pack(">H", 5) + b"\x03mx0\xc0\x0c")]),
    "mx-null": bytes([0 | 9 << 2]) + packet("example.com", MX, [
        (PTR_Q, MX, struct.pack(">H", 0) + b"\0")]),
    "mx-nodata": bytes([0]) + packet("example.com", MX, []),
    "mx-cname": bytes([0 | 3 << 2]) + packet("alias.example", MX, [
        (PTR_Q, CNAME, name("real.example")),
        (name("real.example"), MX, struct.pack(">H", 1) + name("mx.real.example"))]),
    "mx-bad-name": bytes([0 | 9 << 2]) + packet("example.com", MX, [
        (PTR_Q, MX, struct.pack(">H", 10) + b"\x05a_b!c\x07example\x00")]),
    "a": bytes([1 | 7 << 2]) + packet("mx.example.com", A, [
        (PTR_Q, A, bytes([192, 0, 2, 1])), (PTR_Q, A, bytes([192, 0, 2, 2])),
        (PTR_Q, A, bytes([192, 0, 2, 1]))]),
    "aaaa": bytes([2 | 7 << 2]) + packet("mx.example.com", AAAA, [
        (PTR_Q, AAAA, bytes.fromhex("20010db8000000000000000000000001"))]),
    "nxdomain": bytes([1]) + packet("none.example", A, [], rcode=3),
}

# ---- fuzz_cf: a .cf file
cf = {
    "instance": b"""# Generated by vhostmta render from /etc/vhostmta/map.xml; do not edit.
# Instance alpha: change the map, then run vhostmta render (or apply).
instance_name = alpha
myhostname = mail.alpha.test
inet_interfaces = 127.0.0.2
config_directory = /etc/vhostmta/instances/alpha
transport_table = $config_directory/transport
sibling_table = /etc/vhostmta/instances/host-addresses
queue_directory = /var/spool/vhostmta/alpha
mynetworks = 127.0.0.0/8 [::1]/128
smtp_bind_address = 127.0.0.2
smtpd_listen_port = 2525
""",
    "expansions": b"""myhostname = mail.example.com
smtpd_banner = ${myhostname} ESMTP $(mail_name) ${smtpd_tls_security_level?tls}${x:y}$$
inet_interfaces = 192.0.2.5,
    [2001:db8::5]
mynetworks = 127.0.0.0/8
  10.0.0.0/8
message_size_limit = 20480000
smtpd_timeout = 5m
smtpd_tls_security_level = may
""",
    "errors": b"myhostname = $myhostname\n  orphan\nunknown_thing = 1\n= x\nbad name = 2\n"
              b"message_size_limit = lots\nsmtpd_timeout = 3 fortnights\n$ = 1\n",
    "crlf": b"myhostname = mail.example.com\r\nmynetworks = 192.0.2.0/24\r\n",
}


# ---- fuzz_queue: a queue file (records: type, 4-byte length, payload)
def rec(t, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return t.encode() + struct.pack(">I", len(payload)) + payload


def qmsg(qid, rcpts, content, retry=None, with_id=True):
    out = rec("V", "1") + (rec("I", qid) if with_id else b"")
    out += rec("T", "1763800000000000") + rec("C", "198.51.100.7 client.example")
    out += rec("S", "a@b.example")
    for r in rcpts:
        out += rec("R", r)
    out += rec("A", "BODY=8BITMIME")
    for chunk in content:
        out += rec("D", chunk)
    if retry:
        out += rec("Y", retry) + rec("W", "host mx.example.com[192.0.2.9] said: 451 4.3.0 try later")
    return out + rec("E", b"")


queue = {
    "one": qmsg("01958C2A1B2C3001", ["user@hosted.test"],
                ["Received: from client.example\r\n", "Subject: hi\r\n\r\nbody\r\n"]),
    "batch": qmsg("01958C2A1B2C3002", ["a@hosted.test", "b@hosted.test"], ["x\r\n"]) +
    qmsg("01958C2A1B2C3003", ["c@hosted.test"], ["y\r\n"]),
    "deferred": qmsg("01958C2A1B2C3004", ["d@elsewhere.example"], ["z\r\n"],
                     retry="3 1763800600000000 1"),
    "no-id": qmsg("", ["user@hosted.test"], ["body\r\n"], with_id=False),
    "truncated": qmsg("01958C2A1B2C3005", ["user@hosted.test"], ["body\r\n"])[:-5],
}

# ---- fuzz_map: map files
with open(os.path.join(TOP, "templates", "example-map.xml"), "rb") as f:
    example = f.read()
map_seeds = {
    "example": example,
    "fleet": b"""<?xml version="1.0"?>
<map xmlns="urn:vhostmta:map:1">
  <defaults backend="vhostmta">
    <param name="mynetworks" value="127.0.0.0/8"/>
  </defaults>
  <instance myhostname="mail.example.com" name="example" host="mx1">
    <address>203.0.113.5</address>
    <address>[2001:db8::5]</address>
    <domain name="example.com" deliver="lmtp:unix:/run/dovecot/lmtp"/>
    <domain name="example.net"/>
    <param name="message_size_limit" value="20480000"/>
  </instance>
  <instance myhostname="mail.example.com" host="mx1">
    <address>203.0.113.5</address>
    <domain name="Example.COM" deliver="smtp:[mx.example.org]:2525"/>
  </instance>
</map>
""",
    "entity": b"""<?xml version="1.0"?>
<!DOCTYPE map [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>
<map xmlns="urn:vhostmta:map:1"><instance myhostname="&b;"/></map>
""",
    "external": b"""<?xml version="1.0"?>
<!DOCTYPE map SYSTEM "file:///etc/passwd">
<map xmlns="urn:vhostmta:map:1"/>
""",
    "deep": b'<map xmlns="urn:vhostmta:map:1">' + b"<instance>" * 12 + b"</instance>" * 12 + b"</map>",
}

write("smtpd", smtpd)
write("data", data)
write("mailaddr", mailaddr)
write("reply", reply)
write("dns", dns)
write("cf", cf)
write("queue", queue)
write("map", map_seeds)
