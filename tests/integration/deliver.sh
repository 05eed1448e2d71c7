#!/bin/sh
# deliver.sh: the delivery side for real, in a private network namespace:
# the example map's three instances (alpha, bravo, charlie: three
# addresses, three myhostnames; here each with an IPv6 address too, and
# charlie on a non-loopback IPv4 address, so its source address is the
# one postconf(5) derives) plus delta, an instance whose mail expires in
# seconds. dnsmasq serves the MX and A/AAAA records, smtp-sink (-d) is
# every destination. Mail through each instance must arrive with
# X-Client-Addr = the instance's address and X-Helo-Args = its
# myhostname, over IPv4 and IPv6; inbound mail for hosted domains reaches
# its SMTP and LMTP next hops (LMTP over TCP and over a Unix socket).
# Failure paths, each asserted from the sink and the log: a destination
# down then up, a delay warning then expiry with a bounce, null MX, a
# mail loop, the source address removed. Then the crash test: kill -9
# during delivery of 10,000 messages, restart, every message delivered.
# Needs $VHOSTMTA, $VHOSTMTA_INSTANCE and $TOP; needs root (skips
# otherwise) and ip, ss, swaks, smtp-source, smtp-sink, dnsmasq.
set -u
: "${VHOSTMTA:?}" "${VHOSTMTA_INSTANCE:?}" "${TOP:?}"
PATH=$PATH:/usr/sbin:/sbin
export PATH

. "$TOP/tests/lib.sh"
preflight deliver ip ss swaks smtp-source smtp-sink dnsmasq

ns=vhostmta-dlv-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-deliver.XXXXXX") || exit 1
chmod 755 "$work" # smtp-sink runs as postfix and writes below it
pids=
sinks=

trap 'ns_cleanup $? $sinks' EXIT
trap 'exit 1' INT TERM

# --- the namespace, DNS, the sinks. ---
if ! ip netns add "$ns"; then
	bad "ip netns add $ns"
	finish deliver
	exit 1
fi
nsx ip link set lo up
for a in 127.0.0.2 127.0.0.3 127.0.0.5; do nsx ip addr add "$a/8" dev lo; done
nsx ip addr add 192.0.2.4/32 dev lo
for a in 2001:db8::2 2001:db8::3 2001:db8::4 2001:db8::5 2001:db8::100; do
	nsx ip addr add "$a/128" dev lo nodad
done

ip netns exec "$ns" dnsmasq --no-daemon --no-resolv --no-hosts --user=root \
	--listen-address=127.0.0.53 --bind-interfaces --local=/test/ \
	--mx-host=dest.test,mx.dest.test,10 --host-record=mx.dest.test,127.0.0.100,2001:db8::100 \
	--mx-host=v6.test,mx.v6.test,10 --host-record=mx.v6.test,2001:db8::100 \
	--mx-host=v4only.test,mx.v4only.test,10 --host-record=mx.v4only.test,127.0.0.100 \
	--mx-host=down.test,mx.down.test,10 --host-record=mx.down.test,127.0.0.101 \
	--mx-host=never.test,mx.never.test,10 --host-record=mx.never.test,127.0.0.102 \
	--mx-host=loop.test,mx.loop.test,10 --host-record=mx.loop.test,127.0.0.3 \
	--mx-host=nullmx.test,.,0 \
	> "$work/dnsmasq.log" 2>&1 &
sinks="$sinks $!"

sink=$work/sink lsink=$work/lsink hsink=$work/hsink dsink=$work/dsink csink=$work/csink
usink=$work/usink
mkdir "$sink" "$lsink" "$hsink" "$dsink" "$csink" "$usink"
chown postfix "$sink" "$lsink" "$hsink" "$dsink" "$csink" "$usink"
# start_sink DIR ADDR:PORT [-L]: not through nsx: $! is the sink itself.
start_sink() {
	ip netns exec "$ns" smtp-sink ${3:-} -u postfix -d "$1/%M." "$2" 100 >> "$work/sink.log" 2>&1 &
	sinks="$sinks $!"
	sinkpid=$!
}
start_sink "$sink" 127.0.0.100:25
start_sink "$sink" '[2001:db8::100]:25'
start_sink "$hsink" 127.0.0.100:2526
start_sink "$lsink" 127.0.0.100:2424 -L
start_sink "$usink" "unix:$work/lmtp.sock" -L
for l in 127.0.0.53:53 127.0.0.100:25 '[2001:db8::100]:25' 127.0.0.100:2526 127.0.0.100:2424; do
	if await 10 listening "$l"; then ok; else bad "nothing listens on $l"; cat "$work/sink.log" "$work/dnsmasq.log"; fi
done
if await 10 test -S "$work/lmtp.sock"; then ok; else bad "no LMTP sink on $work/lmtp.sock"; cat "$work/sink.log"; fi

# --- the map, rendered, and its instances started. ---
cat > "$work/map.xml" <<'EOF'
<map xmlns="urn:vhostmta:map:1">
  <defaults>
    <param name="mynetworks" value="127.0.0.0/8 [::1]/128"/>
    <param name="smtpd_listen_port" value="2525"/>
    <param name="dns_resolver" value="127.0.0.53"/>
    <param name="minimal_backoff_time" value="1s"/>
    <param name="maximal_backoff_time" value="2s"/>
  </defaults>
  <instance name="alpha" myhostname="mail.alpha.test">
    <address>127.0.0.2</address>
    <address>[2001:db8::2]</address>
    <domain name="alpha.test" deliver="smtp:[127.0.0.100]:2526"/>
    <param name="smtp_bind_address" value="127.0.0.2"/>
  </instance>
  <instance name="bravo" myhostname="mail.bravo.test">
    <address>127.0.0.3</address>
    <address>[2001:db8::3]</address>
    <domain name="bravo.test" deliver="lmtp:[127.0.0.100]:2424"/>
    <domain name="bravo-unix.test" deliver="lmtp:unix:@LMTPSOCK@"/>
    <param name="smtp_bind_address" value="127.0.0.3"/>
  </instance>
  <instance name="charlie" myhostname="mail.charlie.test">
    <address>192.0.2.4</address>
    <address>[2001:db8::4]</address>
    <domain name="charlie.test"/>
    <!-- smtp-source (the crash test) connects from the instance's own address -->
    <param name="mynetworks" value="127.0.0.0/8 [::1]/128 192.0.2.4/32"/>
  </instance>
  <instance name="delta" myhostname="mail.delta.test">
    <address>127.0.0.5</address>
    <address>[2001:db8::5]</address>
    <param name="smtp_bind_address" value="127.0.0.5"/>
    <param name="maximal_queue_lifetime" value="3s"/>
    <param name="delay_warning_time" value="1s"/>
  </instance>
</map>
EOF
sed -i "s|@LMTPSOCK@|$work/lmtp.sock|" "$work/map.xml"
mkdir -p "$work/state"
expect 0 "render the test map" "$VHOSTMTA" render -m "$work/map.xml" -o "$work/etc" \
	--state-dir "$work/state"
v4_alpha=127.0.0.2 v4_bravo=127.0.0.3 v4_charlie=192.0.2.4 v4_delta=127.0.0.5
v6_alpha=2001:db8::2 v6_bravo=2001:db8::3 v6_charlie=2001:db8::4 v6_delta=2001:db8::5
v4() { eval echo "\$v4_$1"; }
v6() { eval echo "\$v6_$1"; }
# start NAME: the instance, self-bound; its pid in ipid_NAME.
start() {
	ip netns exec "$ns" "$VHOSTMTA_INSTANCE" -c "$work/etc/$1/instance.cf" >> "$work/$1.log" 2>&1 &
	eval "ipid_$1=$!"
	pids="$pids $!"
}
for n in alpha bravo charlie delta; do
	start $n
done
for n in alpha bravo charlie delta; do
	if await 10 listening "$(v4 $n):2525"; then ok; else bad "$n does not listen"; logtail "$work/$n.log"; fi
done

# send NAME TO TOKEN [FROM] [SERVER]: one message from 127.0.0.1 (or ::1
# for an IPv6 server) through instance NAME.
send() {
	_srv=${5:-$(v4 $1)} _li=127.0.0.1
	case $_srv in *:*) _li=::1 ;; esac
	nsx swaks --server "$_srv" --port 2525 --local-interface "$_li" --ehlo client.test \
		--from "${4:-sender@$1.test}" --to "$2" --header "Subject: $3" --body "token $3" \
		--timeout 10 > "$work/swaks" 2>&1
}
# mail_via NAME TO SINKDIR WANT-ADDR WANT-HELO DESCRIPTION [SERVER]
mail_via() {
	msg= tok=vhostmta-$$-$(date +%s%N)
	if send "$1" "$2" "$tok" "" "${7:-}"; then ok; else
		bad "$6: swaks to $1 failed"; sed 's/^/  | /' "$work/swaks"; return; fi
	if await 20 has_msg "$3" "$tok"; then ok; else
		bad "$6: not at the sink in 20 s"; logtail "$work/$1.log"; return; fi
	eq "$(hdr "$msg" X-Client-Addr)" "$4" "$6: X-Client-Addr"
	eq "$(hdr "$msg" X-Helo-Args)" "$5" "$6: X-Helo-Args"
	eq "$(hdr "$msg" X-Rcpt-Args | cut -d' ' -f1)" "<$2>" "$6: recipient"
}

# --- each instance from its own address with its own name. ---
for n in alpha bravo charlie delta; do
	mail_via $n "user@dest.test" "$sink" "$(v4 $n)" "mail.$n.test" "$n outbound, IPv4"
	mail_via $n "user@v6.test" "$sink" "ipv6:$(v6 $n)" "mail.$n.test" "$n outbound, IPv6"
done
if logged "$work/alpha.log" "to=<user@dest.test>" "relay=mx.dest.test[127.0.0.100]:25" \
	"dsn=2.0.0" "status=sent"; then ok; else bad "alpha: no delivery line"; logtail "$work/alpha.log"; fi
mail_via alpha user@alpha.test "$hsink" 127.0.0.2 mail.alpha.test "alpha inbound (SMTP next hop)" "[$v6_alpha]"
mail_via bravo user@bravo.test "$lsink" 127.0.0.3 mail.bravo.test "bravo inbound (LMTP next hop)"
[ -n "${msg:-}" ] && eq "$(hdr "$msg" X-Client-Proto)" LMTP "bravo inbound: protocol"
tok=unix-$$
send bravo user@bravo-unix.test "$tok"
if await 20 has_msg "$usink" "$tok"; then ok; else bad "bravo inbound (LMTP, Unix socket): not delivered"; logtail "$work/bravo.log"; fi
[ -n "$msg" ] && eq "$(hdr "$msg" X-Helo-Args)" mail.bravo.test "bravo inbound (LMTP, Unix socket): LHLO name"
if logged "$work/bravo.log" "to=<user@bravo-unix.test>" "relay=localhost[$work/lmtp.sock]" "status=sent"; then
	ok; else bad "bravo inbound (LMTP, Unix socket): no delivery line"; logtail "$work/bravo.log"; fi

# --- a destination down, then up. ---
tok=down-$$
send alpha user@down.test "$tok"
if await 10 logged "$work/alpha.log" "to=<user@down.test>" "status=deferred" \
	"connect to mx.down.test[127.0.0.101]:25: Connection refused"; then ok; else
	bad "down.test: no deferral logged"; logtail "$work/alpha.log"; fi
if "$VHOSTMTA_INSTANCE" -c "$work/etc/alpha/instance.cf" --list-queue | grep -q "deferred tries=1"; then
	ok; else bad "down.test: not listed as deferred"; fi
start_sink "$dsink" 127.0.0.101:25
if await 15 has_msg "$dsink" "$tok"; then ok; else bad "down.test: not delivered after the sink came up"; logtail "$work/alpha.log"; fi
eq "$(hdr "$msg" X-Client-Addr)" 127.0.0.2 "down.test: X-Client-Addr"
if await 5 logged "$work/alpha.log" "to=<user@down.test>" "status=sent"; then ok; else bad "down.test: no sent line"; fi

# --- expiry: delta warns after 1 s, gives up after 3 s and returns the
# message. ---
tok=expire-$$
send delta user@never.test "$tok" bounce-me@dest.test
if await 20 logged "$work/delta.log" "to=<user@never.test>" "status=expired"; then ok; else
	bad "never.test: no expiry logged"; logtail "$work/delta.log"; fi
if await 10 has_msg "$sink" "Action: delayed"; then ok; else
	bad "never.test: no delay warning (delay_warning_time 1s)"; logtail "$work/delta.log"; fi
[ -n "$msg" ] && has "$msg" "Final-Recipient: rfc822; user@never.test" "delay warning: the recipient"
if await 10 has_msg "$sink" "Action: failed"; then ok; else
	bad "never.test: no bounce at the sink"; logtail "$work/delta.log"; fi
if [ -n "$msg" ]; then
	eq "$(hdr "$msg" X-Mail-Args | cut -d' ' -f1)" "<>" "bounce: null sender"
	eq "$(hdr "$msg" X-Rcpt-Args | cut -d' ' -f1)" "<bounce-me@dest.test>" "bounce: to the sender"
	eq "$(hdr "$msg" X-Client-Addr)" 127.0.0.5 "bounce: from delta's address"
	has "$msg" "Final-Recipient: rfc822; user@never.test" "bounce: the recipient"
	has "$msg" "$tok" "bounce: the original's headers"
fi

# --- null MX, and a loop. ---
send alpha user@nullmx.test nullmx-$$ bounce-null@dest.test
if await 10 logged "$work/alpha.log" "to=<user@nullmx.test>" "dsn=5.1.10" "status=bounced"; then
	ok; else bad "null MX: not bounced"; logtail "$work/alpha.log"; fi
if await 10 has_msg "$sink" "Final-Recipient: rfc822; user@nullmx.test"; then ok; else
	bad "null MX: no bounce at the sink"; fi
send alpha user@loop.test loop-$$ bounce-loop@dest.test
if await 10 logged "$work/alpha.log" "to=<user@loop.test>" "status=bounced" \
	"mail for loop.test loops back to myself"; then ok; else
	bad "loop: not bounced as a loop"; logtail "$work/alpha.log"; fi
if await 10 has_msg "$sink" "Final-Recipient: rfc822; user@loop.test"; then ok; else
	bad "loop: no bounce at the sink"; fi
[ -n "$msg" ] && has "$msg" "loops back to myself" "loop: the bounce says why"

# --- the source address removed: deferred, never sent from another. ---
nsx ip addr del 192.0.2.4/32 dev lo
tok=bind-$$
send charlie user@v4only.test "$tok" "" "$v6_charlie"
if await 10 logged "$work/charlie.log" "to=<user@v4only.test>" "status=deferred" "192.0.2.4"; then
	ok; else bad "bind: no deferral naming the address"; logtail "$work/charlie.log"; fi
sleep 2
if has_msg "$sink" "$tok"; then bad "bind: delivered from another address"; else ok; fi
nsx ip addr add 192.0.2.4/32 dev lo
if await 15 has_msg "$sink" "$tok"; then ok; else bad "bind: not delivered once the address is back"; logtail "$work/charlie.log"; fi
[ -n "$msg" ] && eq "$(hdr "$msg" X-Client-Addr)" 192.0.2.4 "bind: X-Client-Addr"

# --- crash test: kill -9 during the delivery of 10,000 messages. ---
# charlie relays everything to the crash sink (a reload applies it). The
# sink is down while the messages are submitted, so all 10,000 are queued
# (deferred) before delivery starts, with a backoff long enough that no
# retry runs meanwhile (on a busy machine 10,000 messages retried every
# second or two would take the time the submission needs); then the sink
# comes up, --flush starts the deliveries, and charlie is killed with a
# fifth of them at the sink.
crash_n=${CRASH_N:-10000}
printf 'relayhost = [127.0.0.100]:26\nminimal_backoff_time = 300s\nmaximal_backoff_time = 600s\n' >> "$work/etc/charlie/instance.cf"
kill -HUP "$ipid_charlie"
sleep 0.5
nsx smtp-source -s 20 -l 1024 -m $crash_n -f crash@charlie.test -t user@crash.test 192.0.2.4:2525 \
	> "$work/source.out" 2>&1
eq "$?" 0 "crash: smtp-source submitted $crash_n messages"
nq() { "$VHOSTMTA_INSTANCE" -c "$work/etc/charlie/instance.cf" --list-queue 2> /dev/null | wc -l; }
eq "$(nq)" "$crash_n" "crash: all of them queued before delivery starts"
start_sink "$csink" 127.0.0.100:26
await 10 listening 127.0.0.100:26 || bad "crash sink does not listen"
nsx "$VHOSTMTA_INSTANCE" -c "$work/etc/charlie/instance.cf" --flush > "$work/flush.out" 2>&1 ||
	{ bad "crash: --flush failed:"; cat "$work/flush.out"; }
# distinct: the queue ids in our Received headers at the sink.
distinct() { grep -h -o 'mail.charlie.test (vhostmta) with [A-Z]* id [0-9A-F]*' "$csink"/* 2> /dev/null | sort -u | wc -l; }
atleast() { [ "$(ls "$csink" | wc -l)" -ge "$1" ]; }
await 60 atleast $((crash_n / 5)) || bad "crash: deliveries did not start"
kill -9 "$ipid_charlie"
wait "$ipid_charlie" 2> /dev/null
before=$(distinct)
if [ "$before" -lt "$crash_n" ]; then ok; else bad "crash: the kill came after the last delivery"; fi
start charlie
# What the killed instance had deferred waits for its long backoff: flush.
flushed() { nsx "$VHOSTMTA_INSTANCE" -c "$work/etc/charlie/instance.cf" --flush > "$work/flush.out" 2>&1; }
await 10 flushed || { bad "crash: --flush after the restart failed:"; cat "$work/flush.out"; }
if await 120 eval '[ "$(distinct)" -ge $crash_n ]'; then ok; else
	bad "crash: only $(distinct) of $crash_n messages arrived"; logtail "$work/charlie.log"; fi
echo "  crash: $before distinct messages before kill -9, $(distinct) after restart, $(ls "$csink" | wc -l) deliveries"
nq() { "$VHOSTMTA_INSTANCE" -c "$work/etc/charlie/instance.cf" --list-queue 2> /dev/null | wc -l; }
if await 30 eval '[ "$(nq)" = 0 ]'; then ok; else bad "crash: $(nq) messages still queued"; fi

# --- clean shutdown, no sanitizer reports. ---
for n in alpha bravo charlie delta; do
	eval "p=\$ipid_$n"
	kill "$p" 2> /dev/null
	await 10 dead "$p" || { bad "$n did not stop on SIGTERM"; kill -9 "$p"; }
	wait "$p" 2> /dev/null
	if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error|fatal:|panic:' "$work/$n.log"; then
		bad "$n: sanitizer report or fatal error"
		grep -E -A15 'AddressSanitizer|LeakSanitizer|runtime error|fatal:|panic:' "$work/$n.log" | head -n 40
	else ok; fi
done
finish deliver
