#!/bin/sh
# instance.sh: one vhostmta-instance (the receive side) for real, in a
# private network namespace: listening sockets passed by
# systemd-socket-activate or bound by the instance itself (and refused when
# they do not match inet_interfaces); the relay policy from inside and
# outside mynetworks (swaks); SMTP smuggling and improper pipelining over
# raw sockets; hostile input (overlong and NUL commands, 5 MB without CRLF
# with the RSS measured, 10,000 pipelined RCPTs, commands out of order,
# clients vanishing mid-DATA) while well-behaved clients are still served;
# messages queued by swaks and smtp-source; and a crash test: kill -9 at
# random moments under load, no acknowledged message lost.
# Needs $VHOSTMTA_INSTANCE (the binary) and $TOP (the source tree); needs
# root (skips otherwise) and ip, ss, swaks, smtp-source,
# systemd-socket-activate, python3 (fails if any is missing).
set -u
: "${VHOSTMTA_INSTANCE:?}" "${TOP:?}"
PATH=$PATH:/usr/sbin:/sbin
export PATH
INST=$VHOSTMTA_INSTANCE

. "$TOP/tests/lib.sh"
preflight instance ip ss swaks smtp-source systemd-socket-activate python3 "$INST"

t_start=$(date +%s)
helper=$TOP/tests/tools/smtpclient.py
ns=vhostmta-inst-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-instance.XXXXXX") || exit 1
pids=  # every process we started (in the namespace); the cleanup ends them

cleanup() {
	rc=$?
	trap - EXIT INT TERM
	for p in $pids; do kill "$p" 2> /dev/null; done
	if [ -e "/run/netns/$ns" ]; then
		ns_drain "$ns"
	fi
	for p in $pids; do wait "$p" 2> /dev/null; done
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# stop PID SIGNAL SECONDS: signal, wait up to SECONDS, then KILL; exit
# status in $stopped_rc, "yes" in $stopped_in_time if it ended in time.
stop() {
	kill "-$2" "$1" 2> /dev/null
	if await "$3" dead "$1"; then stopped_in_time=yes; else
		stopped_in_time=no; kill -9 "$1" 2> /dev/null; fi
	wait "$1" 2> /dev/null
	stopped_rc=$?
}
# start_instance LOG CF: the instance, self-bound, in the namespace; its
# pid in $ipid (not through nsx: $! is the instance itself, ip netns exec
# execs it).
start_instance() {
	ip netns exec "$ns" "$INST" -c "$2" >> "$1" 2>&1 &
	ipid=$!
	pids="$pids $ipid"
}
# py DESCRIPTION ARGS...: the helper in the namespace; its "ok"/"not ok"
# lines count, other lines are shown.
py() {
	_what=$1; shift
	nsx python3 "$helper" "$@" > "$work/py.out" 2> "$work/py.err"
	_rc=$? _n=0
	while IFS= read -r _line; do
		case $_line in
		"ok "*) ok; _n=$((_n + 1)) ;;
		"not ok "*) bad "${_line#not ok }"; _n=$((_n + 1)) ;;
		*) echo "  $_line" ;;
		esac
	done < "$work/py.out"
	if [ $_rc != 0 ] || [ $_n = 0 ]; then
		bad "$_what: helper exit $_rc, $_n checks"; sed 's/^/  | /' "$work/py.err"; fi
}
# banner ADDR PORT: the first line the server sends, or "refused".
banner() { nsx python3 "$helper" banner "$1" "$2" 2> /dev/null | head -n 1; }
nfiles() { find "$1" -mindepth 1 -maxdepth 1 2> /dev/null | wc -l; }
# nqueued CF: the messages queued by the instance of CF (a queue file may
# hold several: one group commit).
nqueued() { "$INST" -c "$1" --list-queue 2> /dev/null | wc -l; }

# --- the namespace and the instance's files. ---
if ! ip netns add "$ns"; then
	bad "ip netns add $ns"
	finish instance
	exit 1
fi
nsx ip link set lo up
for a in 127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.9; do nsx ip addr add "$a/8" dev lo; done

q=$work/queue
printf '# hosted domains of the test instance\nalpha.test\tsmtp:[127.0.0.100]:2526\n' > "$work/transport"
mkcf() { # FILE QUEUE-DIR ADDRESS
	cat > "$1" <<EOF
myhostname = mail.alpha.test
instance_name = alpha
inet_interfaces = $3
smtpd_listen_port = 2525
mynetworks = 127.0.0.0/30
queue_directory = $2
transport_table = $work/transport
EOF
}
cf=$work/instance.cf
mkcf "$cf" "$q" 127.0.0.2
EHLO_OK='250-PIPELINING'
GREETING='220 mail.alpha.test ESMTP vhostmta'

# --- 1a. Sockets from systemd-socket-activate. ---
log=$work/activate.log
ip netns exec "$ns" systemd-socket-activate -l 127.0.0.2:2525 "$INST" -c "$cf" > "$log" 2>&1 &
apid=$!
pids="$pids $apid"
if await 10 listening 127.0.0.2:2525; then ok; else bad "socket-activate: nothing listens on 127.0.0.2:2525"; logtail "$log"; fi
# The first connection starts the instance (the same process, exec'd).
eq "$(banner 127.0.0.2 2525)" "$GREETING" "socket-activated instance greets on 127.0.0.2:2525"
nsx swaks --server 127.0.0.2:2525 --quit-after EHLO --timeout 10 > "$work/swaks" 2>&1
has "$work/swaks" "$EHLO_OK" "socket-activated instance: EHLO offers PIPELINING"
eq "$(banner 127.0.0.3 2525)" refused "socket-activated instance: 127.0.0.3:2525 refuses"
# systemd-socket-activate execs the instance: the same pid, its name now.
if alive "$apid" && [ "$(cat "/proc/$apid/comm" 2>/dev/null)" = "$(basename "$INST" | cut -c1-15)" ]; then ok; else
	bad "socket-activated instance is not running as pid $apid"; logtail "$log"; fi
if grep -qi error "$log"; then bad "socket-activated instance logs an error"; logtail "$log"; else ok; fi
stop "$apid" TERM 10
eq "$stopped_in_time" yes "socket-activated instance ends on SIGTERM"
sanitizer_clean "$log" "socket-activated instance"

# --- 1b. A passed socket that does not match inet_interfaces at
# smtpd_listen_port: exit non-zero, naming the socket. ---
for l in 127.0.0.3:2525 127.0.0.2:2526; do
	log=$work/mismatch-$l.log
	ip netns exec "$ns" systemd-socket-activate -l "$l" "$INST" -c "$cf" > "$log" 2>&1 &
	mpid=$!
	pids="$pids $mpid"
	if await 10 listening "$l"; then
		banner "${l%:*}" "${l#*:}" > /dev/null # starts the instance
		if await 10 dead "$mpid"; then ok; else bad "passed socket $l: the instance still runs"; fi
	else bad "socket-activate: nothing listens on $l"; fi
	stop "$mpid" KILL 2
	if [ "$stopped_rc" != 0 ]; then ok; else bad "passed socket $l: exit 0, expected non-zero"; fi
	has "$log" "$l" "passed socket $l: the message names the socket"
	if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error' "$log"; then
		bad "passed socket $l: sanitizer report"; sed 's/^/  | /' "$log" | head -n 30; else ok; fi
done
grep -F "$l" "$log" | grep -v '^Listening' | head -n 1 | sed 's/^/  note: /'

# --- 1c. Self-bound (no LISTEN_FDS); keeps running for 2 to 5. ---
log=$work/instance.log
start_instance "$log" "$cf"
if await 10 listening 127.0.0.2:2525; then ok; else bad "self-bound instance does not listen on 127.0.0.2:2525"; logtail "$log"; fi
eq "$(banner 127.0.0.2 2525)" "$GREETING" "self-bound instance greets on 127.0.0.2:2525"
eq "$(banner 127.0.0.3 2525)" refused "self-bound instance: 127.0.0.3:2525 refuses"
eq "$(nsx ss -Hltn | awk '{ print $4 }' | sort | tr '\n' ' ')" "127.0.0.2:2525 " "self-bound instance listens on 127.0.0.2:2525 only"
if grep -qi error "$log"; then bad "self-bound instance logs an error"; logtail "$log"; else ok; fi
for d in tmp incoming corrupt; do
	if [ -d "$q/$d" ]; then ok; else bad "queue_directory has no $d/"; fi
done

# --- 2. The relay policy: RCPT replies from inside (127.0.0.1) and
# outside (127.0.0.9) mynetworks. ---
# rcpt SRC ADDRESS: the reply to RCPT TO:<ADDRESS> (swaks sends it verbatim).
rcpt() {
	nsx swaks --server 127.0.0.2:2525 --local-interface "$1" --ehlo client.test \
		--from sender@b.test --to "$2" --quit-after RCPT --timeout 10 > "$work/swaks" 2>&1
	awk '/^ -> RCPT TO:/ { getline; sub(/^<[-*~]* */, ""); print; exit }' "$work/swaks"
}
OK250='250 2.1.5 Ok'
SYNTAX='501 5.1.3 Bad recipient address syntax'
denied() { echo "554 5.7.1 <$1>: Relay access denied"; }
# case ADDRESS INSIDE-REPLY OUTSIDE-REPLY DESCRIPTION
relay_case() {
	got_in=$(rcpt 127.0.0.1 "$1")
	eq "$got_in" "$2" "relay: $4 <$1> from inside mynetworks"
	got_out=$(rcpt 127.0.0.9 "$1")
	eq "$got_out" "$3" "relay: $4 <$1> from outside mynetworks"
}
relay_case user@alpha.test "$OK250" "$OK250" "hosted domain"
relay_case user@ALPHA.TEST "$OK250" "$OK250" "hosted domain in upper case"
relay_case user@sub.alpha.test "$OK250" "$(denied user@sub.alpha.test)" "subdomain of a hosted domain"
relay_case user@foreign.test "$OK250" "$(denied user@foreign.test)" "foreign domain"
relay_case 'user@[127.0.0.2]' "$OK250" "$OK250" "own address literal"
relay_case 'user@[192.0.2.77]' "$OK250" "$(denied 'user@[192.0.2.77]')" "foreign address literal"
relay_case 'user@[127.0.0.3]' "$OK250" "$(denied 'user@[127.0.0.3]')" "literal of a host address that is not the instance's"
relay_case postmaster "$OK250" "$OK250" "bare postmaster"
relay_case postmaster@alpha.test "$OK250" "$OK250" "postmaster of the hosted domain"
relay_case postmaster@foreign.test "$OK250" "$(denied postmaster@foreign.test)" "postmaster of a foreign domain"
relay_case 'user%foreign.test@alpha.test' "$OK250" "$OK250" "%-hack to a hosted domain (no rewriting)"
relay_case 'user%alpha.test@foreign.test' "$OK250" "$(denied 'user%alpha.test@foreign.test')" "%-hack via a foreign domain"
relay_case '@alpha.test:user@foreign.test' "$OK250" "$(denied user@foreign.test)" "source route via the hosted domain"
relay_case '"user@foreign.test"@alpha.test' "$OK250" "$OK250" "quoted local part holding @"
relay_case 'user@foreign.test@alpha.test' "$SYNTAX" "$SYNTAX" "two @ (syntax)"
relay_case 'foreign.test!user@alpha.test' "$OK250" "$OK250" "bang path to a hosted domain (no rewriting)"
relay_case 'alpha.test!user@foreign.test' "$OK250" "$(denied 'alpha.test!user@foreign.test')" "bang path via a foreign domain"
relay_case 'foreign.test!user' "$SYNTAX" "$SYNTAX" "bang path without a domain"
# swaks splits --to at commas: a two-hop source route goes raw.
for src in 127.0.0.1 127.0.0.9; do
	want=$OK250
	[ $src = 127.0.0.9 ] && want=$(denied user@foreign.test)
	eq "$(nsx python3 "$helper" rcpt 127.0.0.2 2525 $src '<@alpha.test,@mail.alpha.test:user@foreign.test>' 2>&1)" \
		"$want" "relay: two-hop source route <@alpha.test,@mail.alpha.test:user@foreign.test> from $src"
done
# Whatever the exact replies: the outside client never gets 250 for a
# foreign destination.
for a in user@foreign.test user@sub.alpha.test 'user@[192.0.2.77]' '@alpha.test:user@foreign.test' \
	'user@foreign.test@alpha.test' 'foreign.test!user' 'alpha.test!user@foreign.test' \
	'user%alpha.test@foreign.test' 'user@foreign.test.' 'user@FOREIGN.test'; do
	got=$(rcpt 127.0.0.9 "$a")
	case $got in
	[45]*) ok ;;
	*) bad "relay: outside client, <$a> to a foreign destination: '$got'"; sed 's/^/  | /' "$work/swaks" | tail -n 6 ;;
	esac
done
eq "$(nqueued "$cf")" 0 "relay: nothing queued by RCPT-only sessions"

# --- 3. SMTP smuggling, and content in the DATA segment. ---
py "smuggling" smuggle 127.0.0.2 2525 "$q"
py "content with DATA" datapipe 127.0.0.2 2525 "$q"
eq "$(nqueued "$cf")" 0 "smuggling: the queue is empty"

# --- 4. Hostile input; a well-behaved swaks client keeps being served. ---
probe="swaks --server 127.0.0.2:2525 --local-interface 127.0.0.9 --ehlo probe.test --from probe@b.test --to user@alpha.test --timeout 20"
py "bad input" badinput 127.0.0.2 2525 "$q" "$ipid" "$probe"
if alive "$ipid"; then ok; else bad "the instance died during the bad input"; logtail "$log"; fi
nsx sh -c "$probe" > "$work/swaks" 2>&1
has "$work/swaks" "250 2.0.0 Ok: queued as" "after the bad input: a well-behaved client is queued"

# Past smtpd_soft_error_limit every reply comes smtpd_error_sleep_time late.
py "tarpit" tarpit 127.0.0.2 2525 "$probe"

# --- 5. Real messages: swaks, then smtp-source. ---
before=$(nqueued "$cf")
nsx swaks --server 127.0.0.2:2525 --local-interface 127.0.0.9 --ehlo client.test \
	--from sender@b.test --to user@alpha.test --header "Subject: instance-$$" \
	--body "token instance-$$" --timeout 10 > "$work/swaks" 2>&1
id=$(sed -n 's/.*250 2\.0\.0 Ok: queued as \([0-9A-Fa-f]*\).*/\1/p' "$work/swaks" | head -n 1)
if echo "$id" | grep -qxE '[0-9A-Fa-f]{16}'; then ok; else bad "swaks: no 16-hex queue id: '$id'"; tail -n 8 "$work/swaks" | sed 's/^/  | /'; fi
eq "$(nqueued "$cf")" $((before + 1)) "swaks: one more message queued"
# Its delivery fails (nothing listens at alpha.test's next hop): the
# message waits in deferred/, content and all.
f=$q/deferred/$id
if [ -n "$id" ] && await 10 test -f "$f"; then
	ok
	if grep -aq 'Received: from client.test (\[127.0.0.9\])' "$f"; then ok; else
		bad "queue file has no 'Received: from client.test ([127.0.0.9])'"; grep -a Received "$f" | head -n 3; fi
	has "$f" "Subject: instance-$$" "queue file holds the message"
	has "$f" "token instance-$$" "queue file holds the body"
	if [ "$(tail -c 5 "$f" | od -An -c | tr -d ' \n')" = 'E\0\0\0\0' ]; then ok; else bad "queue file does not end with END"; fi
	if [ -e "$q/tmp/$id" ]; then bad "$id is still in tmp/"; else ok; fi
else
	bad "queue file deferred/$id does not exist"; ls "$q/incoming" "$q/deferred" | head
fi

before=$(nqueued "$cf")
t0=$(date +%s.%N)
if nsx smtp-source -s 5 -m 200 -l 2048 -f a@b.test -t user@alpha.test 127.0.0.2:2525 > "$work/ss.out" 2>&1; then
	ok; else bad "smtp-source: exit $?"; sed 's/^/  | /' "$work/ss.out"; fi
t1=$(date +%s.%N)
eq "$(nqueued "$cf")" $((before + 200)) "smtp-source: exactly 200 more messages queued"
echo "  note: smtp-source: 200 messages in $(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") s"
eq "$(nfiles "$q/tmp")" 0 "after smtp-source: tmp/ is empty"
if alive "$ipid"; then ok; else bad "the instance died"; logtail "$log"; fi
stop "$ipid" TERM 10
eq "$stopped_in_time" yes "self-bound instance ends on SIGTERM"
sanitizer_clean "$log" "self-bound instance"

# --- 6. Crash test: kill -9 at random moments under load; every
# acknowledged message survives. ---
cq=$work/crashq
ccf=$work/crash.cf
mkcf "$ccf" "$cq" 127.0.0.4
clog=$work/crash.log
record=$work/acked
stopfile=$work/stop-inject
: > "$record"
start_instance "$clog" "$ccf"
await 10 listening 127.0.0.4:2525 || { bad "crash test: the instance does not listen on 127.0.0.4:2525"; logtail "$clog"; }
ip netns exec "$ns" python3 "$helper" inject 127.0.0.4 2525 "$record" "$stopfile" 6 > "$work/inject.out" 2> "$work/inject.err" &
jpid=$!
pids="$pids $jpid"
cycles=0 leftovers=0 notremoved=0 restart_fail=0
while [ $cycles -lt 10 ]; do
	r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
	ms=$((200 + r % 1300))
	sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
	kill -9 "$ipid"
	wait "$ipid" 2> /dev/null
	cycles=$((cycles + 1))
	# name:inode: the restarted instance may make a file of the same name
	# (a deferred file is rewritten under its first message's id).
	tmpfiles=$(cd "$cq/tmp" 2> /dev/null && for n in *; do [ -e "$n" ] && echo "$n:$(stat -c %i "$n")"; done)
	leftovers=$((leftovers + $(echo "$tmpfiles" | grep -c .)))
	echo "--- kill -9 (cycle $cycles) ---" >> "$clog"
	start_instance "$clog" "$ccf"
	if ! await 10 listening 127.0.0.4:2525; then
		restart_fail=$((restart_fail + 1)); logtail "$clog"; continue
	fi
	# The files of the killed instance's unfinished messages are gone:
	# the restarted instance said so for each (a file of the same name,
	# even on the same inode, may be its own new one).
	for f in $tmpfiles; do
		n=${f%:*}
		sed -n "/^--- kill -9 (cycle $cycles) ---\$/,\$p" "$clog" |
			grep -q "$n: removed incomplete queue file" || notremoved=$((notremoved + 1))
	done
done
sleep 1 # the last instance serves for a while
touch "$stopfile"
await 30 dead "$jpid" || bad "crash test: the injector does not stop"
wait "$jpid"
eq "$restart_fail" 0 "crash test: every restart listens again"
eq "$notremoved" 0 "crash test: tmp/ leftovers removed at start-up ($leftovers leftovers in $cycles cycles)"
if alive "$ipid"; then ok; else bad "crash test: the last instance is not running"; logtail "$clog"; fi
stop "$ipid" TERM 10
eq "$stopped_in_time" yes "crash test: the last instance ends on SIGTERM"
sed 's/^/  /' "$work/inject.out"
[ -s "$work/inject.err" ] && sed 's/^/  inject stderr | /' "$work/inject.err" | head -n 20
py "crash test" verify "$cq" "$record"
eq "$(nfiles "$cq/tmp")" 0 "crash test: tmp/ is empty after a clean stop"
acked=$(grep -c . "$record")
echo "  note: crash test: $acked messages acknowledged, $cycles kill -9 cycles," \
	"$(nqueued "$ccf") messages queued ($(nfiles "$cq/incoming") files in incoming/, $(nfiles "$cq/deferred") in deferred/), $(nfiles "$cq/corrupt") in corrupt/," \
	"$leftovers tmp/ leftovers after the kills, $(grep -c 'removed incomplete queue file' "$clog") removed at start-up," \
	"$(grep -c 'moved to corrupt/' "$clog") moved to corrupt/"
sanitizer_clean "$clog" "crash test instance"

echo "  note: instance.sh ran $(($(date +%s) - t_start)) s"
finish instance
