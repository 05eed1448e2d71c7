#!/bin/sh
# run.sh: `vhostmta run` and `vhostmta status` for real, in a private
# network namespace. The supervisor renders a map of four instances
# (alpha, bravo, charlie on 127.0.0.2-4 as in the example map, and delta
# on 127.0.0.5 with idle_exit_time), binds their sockets and starts them
# as an unprivileged user; mail through each reaches smtp-sink from the
# instance's own address. Then: kill -9 of one instance (it comes back,
# the others keep their pids), an idle exit (the next connection starts
# it again), SIGHUP with one instance's parameter changed (reloaded, same
# pid) and another's address changed (restarted, new address only) while
# a third is not touched, SIGHUP with a broken map (nothing changes, the
# log says why), SIGTERM with mail queued (everything stops, exit 0), and
# a second run that delivers that mail. Also: a map with errors starts
# nothing, a second supervisor on the same directory is refused, status
# without a supervisor says so.
# Needs $VHOSTMTA, $VHOSTMTA_INSTANCE and $TOP; needs root (skips
# otherwise) and ip, ss, swaks, smtp-sink.
set -u
: "${VHOSTMTA:?}" "${VHOSTMTA_INSTANCE:?}" "${TOP:?}"
PATH=$PATH:/usr/sbin:/sbin
export PATH VHOSTMTA_INSTANCE

. "$TOP/tests/lib.sh"
preflight run ip ss swaks smtp-sink user:postfix

ns=vhostmta-run-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-run.XXXXXX") || exit 1
chmod 755 "$work" # the instances' user reads their instance.cf below it
pids=
sinkpid=
etc=$work/etc state=$work/state sink=$work/sink log=$work/run.log
user=nobody
uid=$(id -u $user)

trap 'ns_cleanup $? $sinkpid' EXIT
trap 'exit 1' INT TERM

logtail() { tail -n 25 "$log" | sed 's/^/  log | /'; }
logged() { grep -qF -- "$1" "$log" 2> /dev/null; }
logged_re() { grep -qE -- "$1" "$log" 2> /dev/null; }
# count TEXT: lines of the log with TEXT.
count() { grep -cF -- "$1" "$log"; }

# --- the namespace and the sink. ---
if ! ip netns add "$ns"; then
	bad "ip netns add $ns"
	finish run
	exit 1
fi
nsx ip link set lo up
mkdir "$sink" "$state"
chown postfix "$sink"
start_sink() {
	ip netns exec "$ns" smtp-sink -u postfix -d "$sink/%M." 127.0.0.100:2526 100 >> "$work/sink.log" 2>&1 &
	sinkpid=$!
	await 10 listening 127.0.0.100:2526 || { bad "smtp-sink does not listen"; cat "$work/sink.log"; }
}
start_sink

# map ADDR-OF-CHARLIE SIZE-LIMIT-OF-BRAVO FOURTH: the test map, its fourth
# instance on 127.0.0.5 delta (idle_exit_time 1s) or echo. relayhost
# sends all outbound mail to the sink; retries come after a second.
map() {
	cat > "$work/map.xml" <<EOF
<map xmlns="urn:vhostmta:map:1">
  <defaults>
    <param name="mynetworks" value="127.0.0.0/8 [::1]/128"/>
    <param name="smtpd_listen_port" value="2525"/>
    <param name="relayhost" value="[127.0.0.100]:2526"/>
    <param name="minimal_backoff_time" value="1s"/>
    <param name="maximal_backoff_time" value="1s"/>
  </defaults>
  <instance name="alpha" myhostname="mail.alpha.test">
    <address>127.0.0.2</address>
    <domain name="alpha.test"/>
    <param name="smtp_bind_address" value="127.0.0.2"/>
    <param name="smtp_tls_CAfile" value="$work/ca.pem"/>
  </instance>
  <instance name="bravo" myhostname="mail.bravo.test">
    <address>127.0.0.3</address>
    <param name="smtp_bind_address" value="127.0.0.3"/>
    <param name="message_size_limit" value="$2"/>
  </instance>
  <instance name="charlie" myhostname="mail.charlie.test">
    <address>$1</address>
    <param name="smtp_bind_address" value="$1"/>
  </instance>
  <instance name="$3" myhostname="mail.$3.test">
    <address>127.0.0.5</address>
    <param name="smtp_bind_address" value="127.0.0.5"/>
EOF
	[ "$3" = delta ] && echo '    <param name="idle_exit_time" value="1s"/>' >> "$work/map.xml"
	printf '  </instance>\n</map>\n' >> "$work/map.xml"
}

# supervise: vhostmta run in the namespace; its pid in $spid (ip netns
# exec execs it: $! is the supervisor itself).
supervise() {
	ip netns exec "$ns" "$VHOSTMTA" run -m "$work/map.xml" -o "$etc" --state-dir "$state" \
		--user $user >> "$log" 2>&1 &
	spid=$!
	pids="$pids $spid"
}
# status: the table, in $work/status.
status() { "$VHOSTMTA" status -o "$etc" > "$work/status" 2> "$work/status.err"; }
# field NAME COLUMN: one column of NAME's row of the status table.
field() { status; awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$work/status"; }
ipid() { field "$1" 3; }
state_is() { [ "$(field "$1" 2)" = "$2" ]; }
# send ADDR TOKEN [TO]: one message from 127.0.0.1 through the instance on ADDR.
send() {
	nsx swaks --server "$1" --port 2525 --local-interface 127.0.0.1 --ehlo client.test \
		--from sender@example.test --to "${3:-user@dest.test}" --header "Subject: $2" \
		--body "token $2" --timeout 10 > "$work/swaks" 2>&1
}
# mail_via NAME ADDR DESCRIPTION: a message through NAME reaches the sink
# from ADDR with NAME's EHLO name.
mail_via() {
	tok=run-$$-$(date +%s%N) msg=
	if send "$2" "$tok"; then ok; else bad "$3: swaks to $2 failed"; sed 's/^/  | /' "$work/swaks"; return; fi
	if await 20 has_msg "$sink" "$tok"; then ok; else bad "$3: not at the sink in 20 s"; logtail; return; fi
	eq "$(hdr "$msg" X-Client-Addr)" "$2" "$3: X-Client-Addr"
	eq "$(hdr "$msg" X-Helo-Args)" "mail.$1.test" "$3: X-Helo-Args"
}

# --- a map with errors starts nothing. ---
echo '<map xmlns="urn:vhostmta:map:1"><instance name="x"/></map>' > "$work/broken.xml"
expect 1 "run with a broken map" ip netns exec "$ns" "$VHOSTMTA" run -m "$work/broken.xml" \
	-o "$work/etc-broken" --state-dir "$state" --user $user
has "$work/err" "needs a myhostname attribute" "run with a broken map: the error"
has "$work/err" "errors, nothing started" "run with a broken map: nothing started"
expect 1 "status without a supervisor" "$VHOSTMTA" status -o "$etc"
has "$work/err" "vhostmta run is not running" "status without a supervisor: says so"

# --- start: four instances listening, ready, as the unprivileged user. ---
: > "$work/ca.pem" # alpha's smtp_tls_CAfile (never read: alpha makes no TLS connection)
map 127.0.0.4 20480000 delta
supervise
for a in 127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5; do
	if await 10 listening "$a:2525"; then ok; else bad "nothing listens on $a:2525"; logtail; fi
done
if await 10 logged "ready: 4 instances running"; then ok; else bad "not ready"; logtail; fi
status
has "$work/status" "instances run as $user" "status: the user"
for n in alpha bravo charlie delta; do
	p=$(ipid $n)
	eval "pid_$n=\$p"
	case $p in
	[0-9]*) ok ;;
	*) bad "status: no pid for $n"; sed 's/^/  | /' "$work/status"; continue ;;
	esac
	eq "$(awk '/^Uid:/ { print $2 "," $3 }' "/proc/$p/status")" "$uid,$uid" "$n runs as $user"
	eq "$(stat -c %U:%a "$state/$n")" "$user:700" "$n: its queue belongs to $user"
	nsx ss -Hltnp | grep -F "127.0.0." | grep -qF "pid=$p," && ok || bad "$n: the listening socket is not in pid $p"
done
expect 1 "a second supervisor for the same directory" ip netns exec "$ns" "$VHOSTMTA" run \
	-m "$work/map.xml" -o "$etc" --state-dir "$state" --user $user
has "$work/err" "another vhostmta run supervises" "second supervisor: says why"
"$VHOSTMTA" status -o "$etc" --json > "$work/json" 2>&1
has "$work/json" "\"name\": \"alpha\", \"state\": \"running\", \"pid\": $pid_alpha" "status --json"

# --- mail through each instance, from its own address. ---
mail_via alpha 127.0.0.2 "alpha"
mail_via bravo 127.0.0.3 "bravo"
mail_via charlie 127.0.0.4 "charlie"

# --- kill -9: the instance comes back and serves; the others are not touched. ---
kill -9 "$pid_alpha"
if await 10 eval 'state_is alpha running && [ "$(ipid alpha)" != "$pid_alpha" ]'; then ok; else
	bad "alpha did not come back after kill -9"; logtail; fi
if logged "alpha: pid $pid_alpha killed by signal 9 (SIGKILL)"; then ok; else bad "no log line for the crash"; logtail; fi
status
has "$work/status" "killed by signal 9 (SIGKILL) at" "status: alpha's last error"
eq "$(field alpha 7)" 1 "status: alpha restarted once"
mail_via alpha 127.0.0.2 "alpha after kill -9"
eq "$(ipid bravo)" "$pid_bravo" "bravo kept its pid"
eq "$(ipid charlie)" "$pid_charlie" "charlie kept its pid"
pid_alpha=$(ipid alpha)

# --- idle exit: the socket stays, the next connection starts delta. ---
if await 10 state_is delta on-demand; then ok; else bad "delta did not exit when idle"; logtail; fi
if listening 127.0.0.5:2525; then ok; else bad "delta's socket closed while it is stopped"; fi
mail_via delta 127.0.0.5 "delta started by a connection"
if logged "delta: connection on 127.0.0.5:2525: starting it"; then ok; else bad "delta: no log line for the start on demand"; logtail; fi

# --- SIGHUP: bravo's parameter (reload), charlie's address (restart),
# delta removed and its address given to echo (new), alpha untouched. ---
map 127.0.0.6 10000000 echo
before=$(count "bravo: reloaded")
kill -HUP "$spid"
if await 10 listening 127.0.0.6:2525; then ok; else bad "charlie's new address does not listen"; logtail; fi
if await 10 eval '! listening 127.0.0.4:2525'; then ok; else bad "charlie's old address still listens"; fi
if await 10 eval '[ "$(count "bravo: reloaded")" -gt "$before" ]'; then ok; else bad "bravo was not reloaded"; logtail; fi
if await 10 state_is charlie running; then ok; else bad "charlie is not running after its restart"; logtail; fi
eq "$(ipid alpha)" "$pid_alpha" "SIGHUP: alpha kept its pid"
eq "$(ipid bravo)" "$pid_bravo" "SIGHUP: bravo kept its pid (reload)"
[ "$(ipid charlie)" != "$pid_charlie" ] && ok || bad "SIGHUP: charlie kept its pid (no restart)"
pid_charlie=$(ipid charlie)
send 127.0.0.3 "size-$$"
has "$work/swaks" "SIZE 10000000" "bravo announces its new message_size_limit"
mail_via charlie 127.0.0.6 "charlie on its new address"
if await 10 state_is echo running; then ok; else bad "echo (new) is not running"; logtail; fi
if logged "delta: removed"; then ok; else bad "delta: no log line for its removal"; logtail; fi
status
if grep -q '^delta ' "$work/status"; then bad "status still shows delta"; else ok; fi
pid_echo=$(ipid echo)
nsx ss -Hltnp | grep -F "127.0.0.5:2525" | grep -qF "pid=$pid_echo," && ok || bad "127.0.0.5:2525 is not echo's"
mail_via echo 127.0.0.5 "echo on delta's old address"

# --- SIGHUP after a renewed certificate (the map unchanged): alpha, whose
# CA file changed since its configuration was written, is reloaded, the
# others are not. ---
sleep 1
touch "$work/ca.pem"
before=$(count "alpha: reloaded") bravo_before=$(count "bravo: reloaded")
kill -HUP "$spid"
if await 10 eval '[ "$(count "alpha: reloaded")" -gt "$before" ]'; then ok; else bad "alpha was not reloaded for its renewed CA file"; logtail; fi
eq "$(ipid alpha)" "$pid_alpha" "renewal: alpha kept its pid"
eq "$(count "bravo: reloaded")" "$bravo_before" "renewal: bravo was not reloaded"

# --- SIGHUP with a broken map: nothing changes, the log says why. ---
cp "$etc/charlie/instance.cf" "$work/charlie.cf"
cp "$work/broken.xml" "$work/map.xml"
kill -HUP "$spid"
if await 10 logged "errors, nothing changed"; then ok; else bad "broken map: no log line"; logtail; fi
has "$log" "needs a myhostname attribute" "broken map: the error is logged"
for n in alpha bravo charlie echo; do
	eval "want=\$pid_$n"
	eq "$(ipid $n)" "$want" "broken map: $n kept its pid"
done
if cmp -s "$etc/charlie/instance.cf" "$work/charlie.cf"; then ok; else bad "broken map: instance.cf changed"; fi
for a in 127.0.0.2 127.0.0.3 127.0.0.6; do
	listening "$a:2525" && ok || bad "broken map: $a:2525 no longer listens"
done

# --- SIGTERM with mail queued: everything stops, exit 0, the mail stays. ---
kill "$sinkpid"
wait "$sinkpid" 2> /dev/null
sinkpid=
tok=queued-$$
send 127.0.0.2 "$tok"
eq "$?" 0 "queued: accepted while the sink is down"
if await 10 logged "status=deferred"; then ok; else bad "queued: not deferred"; logtail; fi
kill -TERM "$spid"
if await 20 dead "$spid"; then ok; else bad "the supervisor did not exit on SIGTERM"; logtail; fi
wait "$spid"
eq "$?" 0 "the supervisor's exit status after SIGTERM"
for n in alpha bravo charlie; do
	eval "p=\$pid_$n"
	dead "$p" && ok || bad "$n (pid $p) still runs after the supervisor exited"
done
if logged "every instance stopped: exiting"; then ok; else bad "no log line for the shutdown"; logtail; fi
expect 1 "status after the supervisor exited" "$VHOSTMTA" status -o "$etc"
"$VHOSTMTA" queue -o "$etc" alpha > "$work/queue" 2>&1
has "$work/queue" "from=<sender@example.test>" "the queued message is still on disk"

# --- the next run delivers it. ---
map 127.0.0.6 10000000 echo
log=$work/run2.log
supervise
if await 10 logged "alpha: ready"; then ok; else bad "second run: alpha not ready"; logtail; fi
start_sink
if await 20 has_msg "$sink" "$tok"; then ok; else bad "the queued message was not delivered by the next run"; logtail; fi
[ -n "$msg" ] && eq "$(hdr "$msg" X-Client-Addr)" 127.0.0.2 "the queued message: X-Client-Addr"
kill -TERM "$spid"
await 20 dead "$spid" || bad "second run: no exit on SIGTERM"
wait "$spid"
eq "$?" 0 "second run: exit status"

# --- not root: the instances run as the caller; no other user. ---
if command -v setpriv > /dev/null 2>&1; then
	mkdir "$work/nr"
	chown $user "$work/nr"
	asuser() { ip netns exec "$ns" setpriv --reuid=$user --regid="$(id -g $user)" --clear-groups \
		env HOME="$work/nr" "$@"; }
	expect 1 "not root: --user root" asuser "$VHOSTMTA" run -m "$work/map.xml" -o "$work/nr/etc" --user root
	has "$work/err" "only root can run instances as another user" "not root: --user refused"
	log=$work/run-nr.log
	# Not through asuser: $! must be the supervisor (each command execs the next).
	ip netns exec "$ns" setpriv --reuid=$user --regid="$(id -g $user)" --clear-groups \
		env HOME="$work/nr" "$VHOSTMTA" run -m "$work/map.xml" -o "$work/nr/etc" >> "$log" 2>&1 &
	spid=$!
	pids="$pids $spid"
	if await 10 logged "ready: 4 instances running"; then ok; else bad "not root: not ready"; logtail; fi
	has "$log" "queues in $work/nr/.local/state/vhostmta" "not root: the default state directory"
	p=$(asuser "$VHOSTMTA" status -o "$work/nr/etc" | awk '$1 == "alpha" { print $3 }')
	case $p in
	[0-9]*) eq "$(awk '/^Uid:/ { print $2 }' "/proc/$p/status")" "$uid" "not root: alpha runs as the caller" ;;
	*) bad "not root: no pid for alpha in status" ;;
	esac
	kill -TERM "$spid"
	await 10 dead "$spid" || bad "not root: no exit on SIGTERM"
	wait "$spid"
	eq "$?" 0 "not root: exit status"
fi

# --- an instance that keeps crashing: restarted with a doubling delay. ---
log=$work/run3.log
ip netns exec "$ns" env VHOSTMTA_INSTANCE=/bin/false "$VHOSTMTA" run -m "$work/map.xml" \
	-o "$work/etc3" --state-dir "$state" --user $user >> "$log" 2>&1 &
spid=$!
pids="$pids $spid"
for d in 0.1 0.2 0.4 0.8; do
	if await 10 logged_re "alpha: pid [0-9]+ exited with status 1 after [0-9.]+ s: restarting in $d s"; then
		ok; else bad "crash loop: no restart after $d s"; logtail; fi
done
"$VHOSTMTA" status -o "$work/etc3" > "$work/status" 2>&1
if grep -E '^alpha +(restarting|starting) ' "$work/status" | grep -qF "exited with status 1 at"; then
	ok; else bad "status of a crash loop"; sed 's/^/  | /' "$work/status"; fi
kill -TERM "$spid"
if await 5 dead "$spid"; then ok; else bad "crash loop: no exit on SIGTERM"; fi
wait "$spid"
eq "$?" 0 "crash loop: exit status"

if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error|panic:' "$work"/run*.log; then
	bad "sanitizer report or panic in the log"
	grep -E -A15 'AddressSanitizer|LeakSanitizer|runtime error|panic:' "$work"/run*.log | head -n 40
else ok; fi
finish run
