#!/bin/sh
# tls.sh: STARTTLS in vhostmta-instance, both sides, in a private network
# namespace, with certificates made at test time (a test CA, a server
# certificate for mx.dest.test, one for wrong.test from the same CA, a
# self-signed one for mx.dest.test). The receiving instance A (level may)
# against openssl s_client (TLS 1.2/1.3 only, forward secret AEAD only)
# and swaks --tls; instance B (level verify, the test CA) relays through A
# to smtp-sink over verified TLS, dnsmasq serving the MX; plaintext
# injected after STARTTLS (CVE-2011-0411) never counts as TLS input;
# instance E (level encrypt) refuses mail before STARTTLS; delivery that
# TLS forbids is deferred with the reason logged (STARTTLS not offered, a
# certificate for another name, a self-signed one) and nothing arrives;
# SIGHUP puts a new certificate in place while a TLS session goes on.
# Needs $VHOSTMTA_INSTANCE and $TOP; needs root (skips otherwise) and ip,
# ss, openssl, swaks (with Net::SSLeay), smtp-sink, dnsmasq, python3.
set -u
: "${VHOSTMTA_INSTANCE:?}" "${TOP:?}"
PATH=$PATH:/usr/sbin:/sbin
export PATH
INST=$VHOSTMTA_INSTANCE

. "$TOP/tests/lib.sh"
missing=
command -v perl > /dev/null 2>&1 && perl -MNet::SSLeay -e 1 2> /dev/null ||
	missing="$missing Net::SSLeay(swaks --tls)"
preflight tls ip ss openssl swaks smtp-sink dnsmasq python3 "$INST"

t_start=$(date +%s)
ns=vhostmta-tls-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-tls.XXXXXX") || exit 1
chmod 755 "$work" # smtp-sink runs as postfix and writes below it
pids=

trap 'ns_cleanup $?' EXIT
trap 'exit 1' INT TERM

# --- 1. The certificates: EC P-256, made here with the openssl CLI. ---
pki=$work/pki
mkdir "$pki"
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
# leaf NAME: a key and a certificate for NAME, signed by the test CA.
leaf() {
	openssl req -new $ec -keyout "$pki/$1.key" -out "$pki/$1.csr" -subj "/CN=$1" &&
	printf 'subjectAltName = DNS:%s\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n' "$1" \
		> "$pki/$1.ext" &&
	openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
		-CAcreateserial -days 2 -extfile "$pki/$1.ext" -out "$pki/$1.pem"
}
{
	openssl req -x509 $ec -keyout "$pki/ca.key" -out "$pki/ca.pem" -days 2 \
		-subj "/CN=vhostmta test CA" -addext "basicConstraints = critical, CA:TRUE" \
		-addext "keyUsage = critical, keyCertSign, cRLSign" &&
	leaf mx.dest.test && leaf wrong.test &&
	openssl req -x509 $ec -keyout "$pki/self.key" -out "$pki/self.pem" -days 2 \
		-subj "/CN=mx.dest.test" -addext "subjectAltName = DNS:mx.dest.test"
} > "$work/pki.log" 2>&1
for c in mx.dest.test wrong.test; do
	expect 0 "certificate $c chains to the test CA" openssl verify -CAfile "$pki/ca.pem" "$pki/$c.pem"
done
expect 2 "the self-signed certificate does not chain to the test CA" \
	openssl verify -CAfile "$pki/ca.pem" "$pki/self.pem"
[ -s "$pki/self.pem" ] || { bad "no certificates"; sed 's/^/  | /' "$work/pki.log"; }
# A's certificate files; replaced (and SIGHUP) to switch what A serves.
usecert() { # NAME
	cp "$pki/$1.pem" "$work/a-cert.new" && cp "$pki/$1.key" "$work/a-key.new" &&
	mv "$work/a-cert.new" "$work/a-cert.pem" && mv "$work/a-key.new" "$work/a-key.pem"
}
usecert mx.dest.test

# --- the namespace, DNS, the sink. ---
if ! ip netns add "$ns"; then
	bad "ip netns add $ns"
	finish tls
	exit 1
fi
nsx ip link set lo up
for a in 127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5 127.0.0.6 127.0.0.100; do
	nsx ip addr add "$a/8" dev lo
done
ip netns exec "$ns" dnsmasq --no-daemon --no-resolv --no-hosts --user=root \
	--listen-address=127.0.0.53 --bind-interfaces --local=/test/ \
	--mx-host=dest.test,mx.dest.test,10 --host-record=mx.dest.test,127.0.0.2 \
	> "$work/dnsmasq.log" 2>&1 &
pids="$pids $!"
sink=$work/sink
mkdir "$sink"
chown postfix "$sink"
ip netns exec "$ns" smtp-sink -u postfix -d "$sink/%M." 127.0.0.100:25 100 > "$work/sink.log" 2>&1 &
pids="$pids $!"
for l in 127.0.0.53:53 127.0.0.100:25; do
	if await 10 listening "$l"; then ok; else bad "nothing listens on $l"; cat "$work/sink.log" "$work/dnsmasq.log"; fi
done

# --- the instances: A receives (may) and relays dest.test to the sink;
# B sends (verify); C sends (encrypt) to the sink; E receives (encrypt). ---
printf 'dest.test\tsmtp:[127.0.0.100]:25\n' > "$work/transport"
: > "$work/empty"
mkcf() { # NAME ADDRESS MYHOSTNAME TRANSPORT-TABLE [PARAM-LINES]
	cat > "$work/$1.cf" <<EOF
myhostname = $3
instance_name = $1
inet_interfaces = $2
smtpd_listen_port = 25
mynetworks = 127.0.0.0/8
queue_directory = $work/queue-$1
transport_table = $4
dns_resolver = 127.0.0.53
smtp_bind_address = $2
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtp_connection_cache_time_limit = 1s
${5:-}
EOF
}
mkcf A 127.0.0.2 mx.dest.test "$work/transport" "smtpd_tls_security_level = may
smtpd_tls_cert_file = $work/a-cert.pem
smtpd_tls_key_file = $work/a-key.pem
smtpd_starttls_timeout = 10s"
mkcf B 127.0.0.3 mail.b.test "$work/empty" "smtp_tls_security_level = verify
smtp_tls_CAfile = $pki/ca.pem"
mkcf C 127.0.0.5 mail.c.test "$work/empty" "smtp_tls_security_level = encrypt
relayhost = [127.0.0.100]:25"
mkcf E 127.0.0.4 mail.e.test "$work/transport" "smtpd_tls_security_level = encrypt
smtpd_tls_cert_file = $pki/mx.dest.test.pem
smtpd_tls_key_file = $pki/mx.dest.test.key"
# start NAME: the instance, self-bound; its pid in ipid_NAME (not through
# nsx: $! is the instance itself).
start() {
	ip netns exec "$ns" "$INST" -c "$work/$1.cf" >> "$work/$1.log" 2>&1 &
	eval "ipid_$1=$!"
	pids="$pids $!"
}
for n in A B C E; do
	expect 0 "$n: --check" "$INST" -c "$work/$n.cf" --check
	start $n
done
for a in 127.0.0.2 127.0.0.3 127.0.0.5 127.0.0.4; do
	if await 10 listening "$a:25"; then ok; else bad "no instance listens on $a:25"; fi
done

# The raw-socket clients (plain and TLS): "ok"/"not ok" lines, as
# tests/tools/smtpclient.py prints them.
cat > "$work/tlsclient.py" <<'EOF'
import os, socket, ssl, sys, time

IMPROPER = "554 5.5.0 Error: improper use of SMTP command pipelining"
MUST = "530 5.7.0 Must issue a STARTTLS command first"

def check(cond, desc, detail=None):
    print(("ok " if cond else "not ok ") + desc)
    if not cond and detail is not None:
        for d in str(detail).splitlines()[:30]:
            print("  | " + d)
    sys.stdout.flush()
    return cond

class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buf = b""
    def send(self, data):
        self.sock.sendall(data.encode())
    def line(self):
        while b"\n" not in self.buf:
            d = self.sock.recv(4096)
            if not d:
                raise EOFError("connection closed")
            self.buf += d
        l, _, self.buf = self.buf.partition(b"\n")
        return l.rstrip(b"\r").decode("latin-1")
    def reply(self):
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines
    def cmd(self, text):
        self.send(text + "\r\n")
        return self.reply()
    def rest(self, limit=12.0):
        """Everything the server sends until it closes (or the limit)."""
        got, end = self.buf, time.time() + limit
        self.buf = b""
        while time.time() < end:
            self.sock.settimeout(max(0.1, end - time.time()))
            try:
                d = self.sock.recv(4096)
            except socket.timeout:
                return got, False
            except ConnectionResetError:
                return got, True
            if not d:
                return got, True
            got += d
        return got, False
    def starttls(self, cafile, name):
        ctx = ssl.create_default_context(cafile=cafile)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=name)
        return self.sock

def greeted(host, port):
    c = Conn(host, port)
    c.reply()
    return c, c.cmd("EHLO client.test")

# inject1: "STARTTLS\r\nEHLO" in one segment.
def inject1(host, port):
    c, _ = greeted(host, port)
    c.send("STARTTLS\r\nEHLO x\r\n")
    got, closed = c.rest()
    text = got.decode("latin-1")
    check(IMPROPER in text, "STARTTLS pipelined with EHLO: 554 improper pipelining", text)
    check("\n250" not in "\n" + text, "STARTTLS pipelined with EHLO: no 250 follows", text)
    check(closed, "STARTTLS pipelined with EHLO: the connection closes", text)

# inject2: STARTTLS, its 220, then plaintext instead of a handshake.
def inject2(host, port):
    c, _ = greeted(host, port)
    r = c.cmd("STARTTLS")
    check(r == ["220 2.0.0 Ready to start TLS"], "STARTTLS: 220 Ready to start TLS", r)
    c.send("EHLO x\r\n")
    got, closed = c.rest()
    check(b"250" not in got, "plaintext EHLO after the 220: no 250", repr(got))
    check(closed, "plaintext EHLO after the 220: the connection closes", repr(got))

# encrypt: mail before STARTTLS refused; after it, accepted.
def encrypt(host, port, cafile):
    c, ehlo = greeted(host, port)
    check("250-STARTTLS" in ehlo or "250 STARTTLS" in ehlo, "encrypt: EHLO offers STARTTLS", ehlo)
    for cmd in ("MAIL FROM:<a@b.test>", "RCPT TO:<user@dest.test>", "DATA", "VRFY user"):
        r = c.cmd(cmd)
        check(r == [MUST], "encrypt: %s before STARTTLS gets 530" % cmd.split()[0], r)
    r = c.cmd("STARTTLS")
    check(r[0].startswith("220 "), "encrypt: STARTTLS gets 220", r)
    c.starttls(cafile, "mx.dest.test")
    ehlo = c.cmd("EHLO client.test")
    check(ehlo[-1].startswith("250 "), "encrypt: EHLO inside TLS", ehlo)
    check(not any("STARTTLS" in l for l in ehlo), "encrypt: STARTTLS no longer offered", ehlo)
    r = c.cmd("STARTTLS")
    check(r == ["554 5.5.1 Error: TLS already active"], "encrypt: STARTTLS again: 554 TLS already active", r)
    r = c.cmd("MAIL FROM:<a@b.test>")
    check(r[0].startswith("250 "), "encrypt: MAIL inside TLS gets 250", r)
    r = c.cmd("QUIT")

# hold: a TLS session that goes on across a reload: EHLO, then wait for
# GOFILE, then a whole transaction.
def hold(host, port, cafile, ready, go, token):
    c, _ = greeted(host, port)
    c.cmd("STARTTLS")
    s = c.starttls(cafile, "mx.dest.test")
    cn = dict(x[0] for x in s.getpeercert()["subject"]).get("commonName")
    check(cn == "mx.dest.test", "held session: the certificate is mx.dest.test's", cn)
    ehlo = c.cmd("EHLO client.test")
    check(ehlo[-1].startswith("250 "), "held session: EHLO inside TLS", ehlo)
    open(ready, "w").close()
    end = time.time() + 30
    while not os.path.exists(go) and time.time() < end:
        time.sleep(0.05)
    check(os.path.exists(go), "held session: the reload happened")
    try:
        for cmd, want in (("MAIL FROM:<held@b.test>", "250 "), ("RCPT TO:<user@dest.test>", "250 "),
                          ("DATA", "354 ")):
            r = c.cmd(cmd)
            check(r[0].startswith(want), "held session after the reload: %s" % cmd.split()[0], r)
        r = c.cmd("Subject: %s\r\n\r\ntoken %s\r\n." % (token, token))
        check(r[0].startswith("250 2.0.0 Ok: queued as"), "held session after the reload: queued", r)
        r = c.cmd("QUIT")
        check(r[0].startswith("221"), "held session after the reload: QUIT", r)
    except (OSError, EOFError) as e:
        check(False, "held session after the reload: the session goes on", repr(e))

if __name__ == "__main__":
    {"inject1": inject1, "inject2": inject2, "encrypt": encrypt, "hold": hold}[sys.argv[1]](*sys.argv[2:])
EOF
# py DESCRIPTION ARGS...: the client in the namespace; its "ok"/"not ok"
# lines count, other lines are shown.
py() {
	_what=$1; shift
	nsx python3 "$work/tlsclient.py" "$@" > "$work/py.out" 2> "$work/py.err"
	_rc=$?
	pyout "$_what" $_rc
}
pyout() { # DESCRIPTION EXIT-STATUS
	_n=0
	while IFS= read -r _line; do
		case $_line in
		"ok "*) ok; _n=$((_n + 1)) ;;
		"not ok "*) bad "${_line#not ok }"; _n=$((_n + 1)) ;;
		*) echo "  $_line" ;;
		esac
	done < "$work/py.out"
	if [ "$2" != 0 ] || [ $_n = 0 ]; then
		bad "$1: client exit $2, $_n checks"; sed 's/^/  | /' "$work/py.err"; fi
}

# --- 2. openssl s_client against A. ---
# sclient ARGS...: s_client -starttls smtp to A; output in $work/sc.out.
sclient() {
	nsx openssl s_client -starttls smtp -connect 127.0.0.2:25 -CAfile "$pki/ca.pem" "$@" \
		< /dev/null > "$work/sc.out" 2>&1
}
sclient -verify_hostname mx.dest.test -verify_return_error
eq "$?" 0 "s_client: the handshake succeeds"
if grep -qE 'New, TLSv1\.[23], Cipher is' "$work/sc.out"; then ok; else
	bad "s_client: no TLS 1.2 or 1.3"; sed 's/^/  | /' "$work/sc.out" | tail -n 30; fi
has "$work/sc.out" "Verify return code: 0 (ok)" "s_client: mx.dest.test verified against the test CA"
openssl x509 -in "$work/sc.out" -noout -subject -ext subjectAltName > "$work/cert.txt" 2>&1
has "$work/cert.txt" "CN = mx.dest.test" "s_client: the subject"
has "$work/cert.txt" "DNS:mx.dest.test" "s_client: the subjectAltName"
# Security level 0: the refusal must come from the server, not from the
# client's own policy (which refuses TLS 1.1 and SHA-1 suites anyway).
sclient -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'
sc=$?
if [ $sc != 0 ] && ! grep -q 'Cipher is [A-Z]' "$work/sc.out" && grep -q 'alert protocol version' "$work/sc.out"; then
	ok; else bad "s_client -tls1_1: not refused with a protocol version alert (exit $sc)"; sed 's/^/  | /' "$work/sc.out" | tail -n 15; fi
if await 5 logged "$work/A.log" "SSL_accept error from [127.0.0.1]:" "unsupported protocol"; then ok; else
	bad "A: TLS 1.1 not logged as refused"; logtail "$work/A.log"; fi
# TLS 1.2 without AEAD: AES128-SHA (no forward secrecy either) and the
# CBC suites an ECDSA certificate allows, which a server with OpenSSL's
# defaults would pick.
nonaead=AES128-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256
sclient -tls1_2 -cipher "$nonaead:@SECLEVEL=0"
sc=$?
if [ $sc != 0 ] && ! grep -q 'Cipher is [A-Z]' "$work/sc.out" && grep -q 'alert handshake failure' "$work/sc.out"; then
	ok; else bad "s_client -tls1_2 -cipher $nonaead: not refused (exit $sc)"; sed 's/^/  | /' "$work/sc.out" | tail -n 15; fi
if await 5 logged "$work/A.log" "SSL_accept error from [127.0.0.1]:" "no shared cipher"; then ok; else
	bad "A: TLS 1.2 without AEAD not logged as refused"; logtail "$work/A.log"; fi
sclient -tls1_2 -cipher 'ECDHE-ECDSA-AES128-GCM-SHA256'
eq "$?" 0 "s_client -tls1_2 with ECDHE-ECDSA-AES128-GCM-SHA256: accepted"
has "$work/sc.out" "New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256" "s_client -tls1_2: the suite"

# --- 3. swaks --tls to A: queued, the TLS session logged. ---
tok=swaks-$$
nsx swaks --server 127.0.0.2:25 --tls --ehlo client.test --from s@b.test --to user@dest.test \
	--header "Subject: $tok" --body "token $tok" --timeout 10 > "$work/swaks" 2>&1
eq "$?" 0 "swaks --tls to A"
has "$work/swaks" "250 2.0.0 Ok: queued as" "swaks --tls: queued"
has "$work/swaks" "TLS started with cipher TLSv1.3" "swaks --tls: TLS 1.3"
if logged "$work/A.log" "Anonymous TLS connection established from [127.0.0.1]:" "TLSv1.3 with cipher"; then
	ok; else bad "A: no 'Anonymous TLS connection established' line"; logtail "$work/A.log"; fi
if await 15 has_msg "$sink" "$tok"; then ok; else bad "swaks --tls: not at the sink"; logtail "$work/A.log"; fi
[ -n "$msg" ] && has "$msg" "(using TLSv1.3 with cipher" "swaks --tls: A's Received header names the TLS session"
# A's next hop (smtp-sink) offers no STARTTLS: level may goes plaintext.
if await 5 logged "$work/A.log" "to=<user@dest.test>" "status=sent" "tls=none"; then ok; else
	bad "A: the delivery to the sink is not logged with tls=none"; logtail "$work/A.log"; fi

# --- 4. B -> A over verified TLS -> the sink. ---
# send NAME TO TOKEN: one message from 127.0.0.1 into instance NAME, no TLS.
send() {
	nsx swaks --server "$(sed -n 's/^inet_interfaces = //p' "$work/$1.cf")" --port 25 \
		--local-interface 127.0.0.1 --ehlo client.test \
		--from "sender@$(echo "$1" | tr '[:upper:]' '[:lower:]').test" --to "$2" \
		--header "Subject: $3" --body "token $3" --timeout 10 > "$work/swaks" 2>&1
}
tok=b2a-$$
if send B "b2a-$$@dest.test" "$tok"; then ok; else bad "swaks to B failed"; sed 's/^/  | /' "$work/swaks"; fi
if await 15 has_msg "$sink" "$tok"; then ok; else bad "B -> A -> sink: not at the sink"; logtail "$work/B.log"; logtail "$work/A.log"; fi
if logged "$work/B.log" "Verified TLS connection established to mx.dest.test[127.0.0.2]:25: TLSv1.3 with cipher"; then
	ok; else bad "B: no 'Verified TLS connection established' line"; logtail "$work/B.log"; fi
if logged "$work/B.log" "to=<b2a-$$@dest.test>" "relay=mx.dest.test[127.0.0.2]:25" "status=sent" ", tls=TLSv1.3:" ":verified"; then
	ok; else bad "B: no delivery line with status=sent and tls=TLSv1.3:...:verified"; logtail "$work/B.log"; fi
if [ -n "$msg" ]; then
	eq "$(hdr "$msg" X-Client-Addr)" 127.0.0.2 "B -> A -> sink: X-Client-Addr is A's address"
	eq "$(hdr "$msg" X-Helo-Args)" mx.dest.test "B -> A -> sink: A's EHLO name"
	# A's Received header (below the sink's own), with its folded lines.
	tr -d '\r' < "$msg" | awk '/^Received: from mail\.b\.test / { r = 1; print; next }
		r && /^\t/ { print; next } { r = 0 }' > "$work/received"
	has "$work/received" "Received: from mail.b.test ([127.0.0.3])" "A's Received header: B's EHLO name and address"
	has "$work/received" "(using TLSv1." "A's Received header: the TLS session"
	has "$work/received" "by mx.dest.test (vhostmta) with ESMTPS id" "A's Received header: with ESMTPS"
fi

# --- 5. Plaintext injected after STARTTLS (CVE-2011-0411). ---
py "pipelined injection" inject1 127.0.0.2 25
if await 5 logged "$work/A.log" "improper command pipelining after STARTTLS from [127.0.0.1]:"; then ok; else
	bad "A: the pipelined injection is not logged"; logtail "$work/A.log"; fi
py "plaintext instead of the handshake" inject2 127.0.0.2 25
if await 5 logged "$work/A.log" "SSL_accept error from [127.0.0.1]:"; then ok; else
	bad "A: no 'SSL_accept error' line"; logtail "$work/A.log"; fi

# --- 6. E (encrypt): no mail before STARTTLS. ---
py "encrypt" encrypt 127.0.0.4 25 "$pki/ca.pem"
e_swaks() { nsx swaks --server 127.0.0.4:25 --ehlo client.test --from e@b.test --to user@dest.test --timeout 10 "$@" > "$work/swaks" 2>&1; }
e_swaks
sw=$?
if [ $sw != 0 ]; then ok; else bad "swaks without --tls to E: exit 0"; fi
has "$work/swaks" "530 5.7.0 Must issue a STARTTLS command first" "swaks without --tls to E: 530"
e_swaks --tls
eq "$?" 0 "swaks --tls to E"
has "$work/swaks" "250 2.0.0 Ok: queued as" "swaks --tls to E: queued"
# Configuration: encrypt without a loadable certificate is an error, may
# without one only a warning (and no STARTTLS).
mkcf X 127.0.0.6 mail.x.test "$work/empty" "smtpd_tls_security_level = encrypt
smtpd_tls_cert_file = $work/no-such-cert.pem"
expect 1 "encrypt with a missing certificate: --check fails" "$INST" -c "$work/X.cf" --check
has "$work/err" "no-such-cert.pem" "encrypt with a missing certificate: the message names the file"
start X
if await 10 dead "$ipid_X"; then ok; else bad "encrypt with a missing certificate: the instance runs"; fi
wait "$ipid_X"
x=$?
if [ $x != 0 ]; then ok; else bad "encrypt with a missing certificate: the instance exits 0"; fi
mkcf Y 127.0.0.6 mail.y.test "$work/empty" "smtpd_tls_security_level = may
smtpd_tls_cert_file = $work/no-such-cert.pem"
expect 0 "may with a missing certificate: --check passes" "$INST" -c "$work/Y.cf" --check
has "$work/err" "STARTTLS is not offered" "may with a missing certificate: the warning"
start Y
if await 10 listening 127.0.0.6:25; then
	nsx swaks --server 127.0.0.6:25 --quit-after EHLO --timeout 10 > "$work/swaks" 2>&1
	if grep -q STARTTLS "$work/swaks"; then bad "may with a missing certificate: STARTTLS offered"; else ok; fi
else bad "may with a missing certificate: the instance does not listen"; logtail "$work/Y.log"; fi

# --- 7a. C (encrypt) towards the sink, which offers no STARTTLS. ---
tok=c-$$
send C "c-$$@plain.test" "$tok"
if await 10 logged "$work/C.log" "to=<c-$$@plain.test>" "status=deferred" \
	"TLS is required, but was not offered by host 127.0.0.100[127.0.0.100]"; then ok; else
	bad "C: no deferral 'TLS is required, but was not offered'"; logtail "$work/C.log"; fi
if "$INST" -c "$work/C.cf" --list-queue | grep "from=<sender@c.test>" | grep -q "deferred tries="; then
	ok; else bad "C: the message is not listed as deferred"; "$INST" -c "$work/C.cf" --list-queue; fi

# --- 8. A reloads a new certificate; a TLS session under way goes on. ---
rm -f "$work/ready" "$work/go"
tok=held-$$
ip netns exec "$ns" python3 "$work/tlsclient.py" hold 127.0.0.2 25 "$pki/ca.pem" \
	"$work/ready" "$work/go" "$tok" > "$work/py.out" 2> "$work/py.err" &
hpid=$!
pids="$pids $hpid"
await 10 test -e "$work/ready" || bad "held session: not ready"
usecert wrong.test
kill -HUP "$ipid_A"
# The reload is done when a new session sees the new certificate.
newsubject() {
	sclient > /dev/null 2>&1
	openssl x509 -in "$work/sc.out" -noout -subject 2> /dev/null | grep -q "CN = wrong.test"
}
if await 10 newsubject; then ok; else bad "after SIGHUP: s_client does not see wrong.test"; logtail "$work/A.log"; fi
touch "$work/go"
await 15 dead "$hpid" || bad "held session: does not end"
wait "$hpid"
pyout "held session" $?
if await 15 has_msg "$sink" "$tok"; then ok; else bad "held session: its message is not at the sink"; fi
if alive "$ipid_A"; then ok; else bad "A died"; logtail "$work/A.log"; fi

# --- 7b. B (verify) towards A serving wrong.test, then a self-signed
# certificate for mx.dest.test: deferred, nothing arrives; then A's right
# certificate again: both delivered. ---
tok=wrong-$$
send B "wrong-$$@dest.test" "$tok"
if await 10 logged "$work/B.log" "to=<wrong-$$@dest.test>" "status=deferred" "dsn=4.7.5" \
	"Server certificate not verified ("; then ok; else
	bad "B: no deferral 'Server certificate not verified'"; logtail "$work/B.log"; fi
if logged "$work/B.log" "Trusted TLS connection established to mx.dest.test[127.0.0.2]:25"; then ok; else
	bad "B: no 'Trusted TLS connection established' line"; logtail "$work/B.log"; fi
usecert self
kill -HUP "$ipid_A"
sleep 0.5
tok2=self-$$
send B "self-$$@dest.test" "$tok2"
if await 10 logged "$work/B.log" "to=<self-$$@dest.test>" "status=deferred" \
	"Server certificate not trusted ("; then ok; else
	bad "B: no deferral 'Server certificate not trusted'"; logtail "$work/B.log"; fi
if logged "$work/B.log" "Untrusted TLS connection established to mx.dest.test[127.0.0.2]:25"; then ok; else
	bad "B: no 'Untrusted TLS connection established' line"; logtail "$work/B.log"; fi
if logged "$work/B.log" "status=deferred" "dsn=4.7.5" "Server certificate not trusted ("; then ok; else
	bad "B: no 'not trusted' deferral with dsn=4.7.5"; logtail "$work/B.log"; fi
# A message deferred at once because its destination has just failed
# (the other one's attempt) keeps that failure's status code.
if grep -F "Server certificate not" "$work/B.log" | grep -vF "dsn=4.7.5" > "$work/dsn"; then
	bad "B: a certificate failure deferred with another dsn than 4.7.5"; sed 's/^/  | /' "$work/dsn" | head -n 3
else ok; fi
eq "$("$INST" -c "$work/B.cf" --list-queue | grep -c "deferred tries=")" 2 "B: both messages deferred"
for t in "$tok" "$tok2"; do
	if has_msg "$sink" "$t"; then bad "$t: delivered through an unverified session"; else ok; fi
	if grep -q "$t" "$work/A.log"; then bad "$t: A saw it"; else ok; fi
done
if [ -z "$(find "$work/queue-A/incoming" "$work/queue-A/deferred" -type f)" ]; then ok; else
	bad "A queued something from B"; "$INST" -c "$work/A.cf" --list-queue; fi
usecert mx.dest.test
kill -HUP "$ipid_A"
sleep 0.5
"$INST" -c "$work/B.cf" --flush > /dev/null 2>&1
for t in "$tok" "$tok2"; do
	if await 15 has_msg "$sink" "$t"; then ok; else bad "$t: not delivered once A has its certificate again"; logtail "$work/B.log"; fi
done
if logged "$work/B.log" "to=<self-$$@dest.test>" "status=sent" ":verified"; then ok; else
	bad "B: the deferred message is not sent over verified TLS"; logtail "$work/B.log"; fi
if has_msg "$sink" "c-$$"; then bad "C's message reached the sink in plaintext"; else ok; fi

# --- clean shutdown, no sanitizer reports. ---
for n in A B C E Y; do
	eval "p=\$ipid_$n"
	kill "$p" 2> /dev/null
	await 10 dead "$p" || { bad "$n did not stop on SIGTERM"; kill -9 "$p"; }
	wait "$p" 2> /dev/null
	sanitizer_clean "$work/$n.log" "$n"
done
echo "  note: tls.sh ran $(($(date +%s) - t_start)) s"
finish tls
