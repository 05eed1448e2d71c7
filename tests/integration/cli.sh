#!/bin/sh
# cli.sh: the vhostmta command as an operator uses it: exit codes, the
# MAP:LINE: error: format, list and --json, render and params -c.
# Needs $VHOSTMTA (the binary) and $TOP (the source tree).
set -u
: "${VHOSTMTA:?}" "${TOP:?}"
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-cli.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
map=$TOP/templates/example-map.xml

. "$TOP/tests/lib.sh"

expect 0 "check example" "$VHOSTMTA" check -m "$map"
has "$work/out" "ok: 3 instances, 3 addresses, 5 domains" "check summary"

cat > "$work/bad.xml" <<'X'
<map xmlns="urn:vhostmta:map:1">
  <instance name="a" myhostname="mail.a.test">
    <address>192.0.2.1</address>
  </instance>
  <instance name="b" myhostname="localhost">
    <address>192.0.2.1</address>
    <param name="smtpd_timeout" value="5x"/>
  </instance>
</map>
X
expect 1 "check bad map" "$VHOSTMTA" check -m "$work/bad.xml"
has "$work/err" "$work/bad.xml:5: error: myhostname \"localhost\" is not a fully qualified domain name" "error line 5"
has "$work/err" "$work/bad.xml:6: error: address 192.0.2.1 is also used by instance \"a\" (line 2)" "error line 6"
has "$work/err" "$work/bad.xml:7: error: smtpd_timeout" "error line 7"
if [ "$(grep -c ': error: ' "$work/err")" = 3 ]; then ok; else bad "three errors in one run"; cat "$work/err"; fi
expect 1 "render refuses a bad map" "$VHOSTMTA" render -m "$work/bad.xml" -o "$work/never"
if [ -e "$work/never" ]; then bad "render wrote for a bad map"; else ok; fi

expect 1 "missing map" "$VHOSTMTA" check -m "$work/missing.xml"
has "$work/err" "$work/missing.xml: error: cannot open: No such file or directory" "missing map message"

printf '<!DOCTYPE map [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>\n<map xmlns="urn:vhostmta:map:1">&b;</map>\n' > "$work/bomb.xml"
expect 1 "entity bomb" "$VHOSTMTA" check -m "$work/bomb.xml"
has "$work/err" "bomb.xml:1: error: a DOCTYPE is not allowed" "DOCTYPE refused"

expect 0 "list" "$VHOSTMTA" list -m "$map"
has "$work/out" "alpha    127.0.0.2" "list row"
has "$work/out" "alpha.test,alpha-shop.test" "list domains"
expect 0 "list --json" "$VHOSTMTA" list -m "$map" --json
if python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert [i["name"] for i in d]==["alpha","bravo","charlie"]; assert d[0]["domains"][0]=={"name":"alpha.test","deliver":"smtp:[127.0.0.100]:2526"}; assert d[0]["host"] is None' "$work/out"; then ok; else bad "list --json content"; cat "$work/out"; fi

expect 0 "render" "$VHOSTMTA" render -m "$map" -o "$work/r"
has "$work/out" "3 instances rendered into $work/r: 7 files written, 0 unchanged" "render summary"
expect 0 "render again" "$VHOSTMTA" render -m "$map" -o "$work/r"
has "$work/out" "0 files written, 7 unchanged" "second render writes nothing"
for n in alpha bravo charlie; do
	expect 0 "params -c $n" "$VHOSTMTA" params -c "$work/r/$n/instance.cf" myhostname
	has "$work/out" "myhostname = mail.$n.test" "params -c $n"
done

printf 'myhostname = mail.x.test\nsmtpd_timeout = 10\n  0s\nbogus = 1\nmessage_size_limit = 12\n' > "$work/x.cf"
expect 1 "params -c bad file" "$VHOSTMTA" params -c "$work/x.cf"
has "$work/err" "$work/x.cf:4: error: unknown parameter \"bogus\"" "unknown parameter line"
has "$work/err" "$work/x.cf:5: error: message_size_limit" "bad value line"
expect 0 "params -d" "$VHOSTMTA" params -d smtpd_timeout
has "$work/out" "smtpd_timeout = 300s" "params -d"

# The committed parameter reference is what the table generates.
"$VHOSTMTA" params --doc > "$work/parameters.md"
if cmp -s "$work/parameters.md" "$TOP/docs/parameters.md"; then ok; else
	bad "docs/parameters.md is stale: run make docs"; diff "$TOP/docs/parameters.md" "$work/parameters.md" | head; fi

expect 2 "no command" "$VHOSTMTA"
expect 2 "unknown command" "$VHOSTMTA" frobnicate
expect 2 "render without -o" "$VHOSTMTA" render -m "$map"
for c in check list render params; do
	expect 0 "$c --help" "$VHOSTMTA" "$c" --help
	has "$work/out" "usage: vhostmta $c" "$c help"
done

# vhostmta queue, with no instance running: the names checked first, then
# vhostmta-instance ($VHOSTMTA_INSTANCE, or the one beside $VHOSTMTA) run
# per instance; empty queues list nothing, and need no flush.
expect 0 "render for queue" "$VHOSTMTA" render -m "$map" -o "$work/rq" -s "$work/state"
for n in alpha bravo charlie; do mkdir -p "$work/state/$n/incoming"; done
expect 0 "queue, empty queues" "$VHOSTMTA" queue -o "$work/rq"
eq "$(cat "$work/out")" "-- 0 messages in 3 instances" "queue lists nothing"
expect 0 "queue NAME" "$VHOSTMTA" queue -o "$work/rq" bravo
eq "$(cat "$work/out")" "-- 0 messages in 1 instance" "queue of one instance"
expect 1 "queue unknown NAME" "$VHOSTMTA" queue -o "$work/rq" alpha nosuch
has "$work/err" "no instance \"nosuch\" in $work/rq" "unknown NAME named"
if grep -q messages "$work/out"; then bad "queue ran with an unknown NAME"; else ok; fi
expect 1 "queue missing DIR" "$VHOSTMTA" queue -o "$work/none"
has "$work/err" "$work/none: No such file or directory" "missing DIR named"
expect 1 "queue --delete, no such message" "$VHOSTMTA" queue -o "$work/rq" --delete 0123456789ABCDEF
has "$work/err" "0123456789ABCDEF: no instance in $work/rq has this message" "delete of no message"
expect 0 "queue --flush, nothing running, queues empty" "$VHOSTMTA" queue -o "$work/rq" --flush
has "$work/out" "-- 3 instances of 3 flushed" "flush summary"
expect 2 "queue --flush --delete" "$VHOSTMTA" queue -o "$work/rq" --flush --delete 0123456789ABCDEF
expect 2 "queue --delete junk" "$VHOSTMTA" queue -o "$work/rq" --delete 'x;rm'
expect 0 "queue --help" "$VHOSTMTA" queue --help
has "$work/out" "usage: vhostmta queue" "queue help"

# A renewed certificate (its file newer than the rendered configuration)
# makes render reload the instance once; nothing else does.
printf 'certificate\n' > "$work/cert.pem"
sed 's|<address>127.0.0.2</address>|<address>127.0.0.2</address><param name="smtpd_tls_security_level" value="may"/><param name="smtpd_tls_cert_file" value="'"$work"'/cert.pem"/>|' \
	"$map" > "$work/tls.xml"
grep -q smtpd_tls_cert_file "$work/tls.xml" || bad "the TLS map was not made (the example map changed?)"
expect 0 "render a map with a certificate" "$VHOSTMTA" render -m "$work/tls.xml" -o "$work/rt"
expect 0 "render it again" "$VHOSTMTA" render -m "$work/tls.xml" -o "$work/rt"
if grep -q ': reload' "$work/out"; then bad "an unchanged certificate reloads"; else ok; fi
tlsname=$(grep -l smtpd_tls_cert_file "$work"/rt/*/instance.cf | head -n 1)
touch -d '2000-01-01' "$tlsname"
expect 0 "render after a renewal" "$VHOSTMTA" render -m "$work/tls.xml" -o "$work/rt"
has "$work/out" "$(basename "$(dirname "$tlsname")"): reload" "a renewed certificate reloads its instance"
expect 0 "render after the reload" "$VHOSTMTA" render -m "$work/tls.xml" -o "$work/rt"
if grep -q ': reload' "$work/out"; then bad "the renewal reloads again"; else ok; fi

finish cli
