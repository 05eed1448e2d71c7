#!/bin/sh
# postfix.sh: the Postfix backend with real Postfix, in a private network
# namespace: check --backend postfix (addresses on the host or not), render
# into main.cf/master.cf/transport, postfix check and start per instance,
# then mail through every instance to smtp-sink (SMTP and LMTP), proving
# from its X-Client-Addr and X-Helo-Args headers that each instance sends
# from its own address with its own name; an address change restarts that
# instance only; a parameter change is a reload; a dropped instance is
# removed. Needs $VHOSTMTA (the binary) and $TOP (the source tree); needs
# root (skips otherwise) and postfix, smtp-sink, swaks, ip, ss, script
# (fails if any is missing: ./configure --install-deps installs them).
set -u
: "${VHOSTMTA:?}" "${TOP:?}"
PATH=$PATH:/usr/sbin:/sbin
export PATH

. "$TOP/tests/lib.sh"
preflight postfix ip ss script postfix postconf smtp-sink swaks user:postfix

map=$TOP/templates/example-map.xml
ns=vhostmta-pf-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-postfix.XXXXXX") || exit 1
# Postfix daemons and smtp-sink run as user postfix: they must reach
# everything below $work.
chmod 755 "$work"
out=$work/etc          # render -o
state=$work/state      # render --state-dir
sink=$work/sink        # SMTP sink dumps
lsink=$work/lsink      # LMTP sink dumps
sinkpids=

cleanup() {
	rc=$?
	trap - EXIT INT TERM
	if [ -e "/run/netns/$ns" ]; then
		for cf in "$out"/*/main.cf; do
			[ -f "$cf" ] && ip netns exec "$ns" postfix -c "${cf%/main.cf}" stop > /dev/null 2>&1
		done
		for p in $sinkpids; do kill "$p" 2> /dev/null; done
		ns_drain "$ns"
	fi
	for p in $sinkpids; do wait "$p" 2> /dev/null; done
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# pf CMD...: run CMD (one shell command line) in the namespace with a tty,
# so that Postfix prints its warnings and fatal errors; output in $work/tty.
pf() { nsx script -qec "$*" /dev/null > "$work/tty" 2>&1 < /dev/null; }
clean_tty() { # DESCRIPTION: $work/tty holds no warning or fatal error
	if grep -qiE 'warning|fatal|panic' "$work/tty"; then
		bad "$1 complains"; tr -d '\r' < "$work/tty" | sed 's/^/  | /'; else ok; fi
}
master_pid() { # NAME
	sed -n '1s/[^0-9]//gp' "$state/$1/queue/pid/master.pid" 2> /dev/null
}
is_master() { # PID: that process is alive and a Postfix master
	[ -n "$1" ] && [ "$(ps -o comm= -p "$1" 2> /dev/null)" = master ]
}
maillog() { # NAME: the end of an instance's log, for a failure message
	[ -f "$state/$1/maillog" ] && tail -n 15 "$state/$1/maillog" | sed "s/^/  $1 | /"
}
instance_lines() { # FILE: the render lines about instances, sorted
	grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*: (new|reload|removed|restart)' "$1" | sort
}
# render MAP DESCRIPTION: render with the Postfix backend into $out/$state.
render() {
	expect 0 "$2" "$VHOSTMTA" render --backend postfix -m "$1" -o "$out" --state-dir "$state"
	cp "$work/out" "$work/render.out"
}

# Instance facts of the example map.
addr_alpha=127.0.0.2 addr_bravo=127.0.0.3 addr_charlie=127.0.0.4
port=2525
addr() { eval "echo \$addr_$1"; }

if ! ip netns add "$ns"; then
	bad "ip netns add $ns"
	echo "postfix: $pass passed, $fail failed"
	exit 1
fi
nsx ip link set lo up
for n in alpha bravo charlie; do nsx ip addr add "$(addr $n)/8" dev lo; done

# --- check --backend postfix: outside the namespace, then inside it. ---
host_addrs=$(ip -o addr show | awk '{ sub("/.*", "", $4); print $4 }')
missing=
for n in alpha bravo charlie; do
	echo "$host_addrs" | grep -qxF "$(addr $n)" || missing="$missing $n"
done
if [ -n "$missing" ]; then
	expect 1 "check --backend postfix on a host without the addresses" \
		"$VHOSTMTA" check --backend postfix -m "$map"
	for n in $missing; do
		a=$(addr $n)
		# MAP:LINE is the line of the <address> element.
		la=$(grep -n "<address>$a</address>" "$map" | cut -d: -f1)
		if grep -qxF "$map:$la: error: address $a of instance \"$n\" is not configured on this host (Postfix refuses it)" "$work/err"; then
			ok; else bad "check names $a of $n (line $la)"; sed 's/^/  | /' "$work/err"; fi
	done
	eq "$(grep -c ': error: ' "$work/err")" "$(echo $missing | wc -w)" "check error count outside the namespace"
else
	echo "postfix.sh: note: this host has 127.0.0.2-4; check outside the namespace not asserted"
fi
expect 0 "check --backend postfix in the namespace" nsx "$VHOSTMTA" check --backend postfix -m "$map"
if grep -q 'error' "$work/out" "$work/err"; then bad "check in the namespace reports an error"; cat "$work/err"; else ok; fi

# --- render: the example map plus a relayhost, so that outbound mail to any
# non-hosted domain goes to the SMTP sink. ---
awk '{ print } /<defaults>/ { print "    <param name=\"relayhost\" value=\"[127.0.0.100]:2526\"/>" }' \
	"$map" > "$work/map.xml"
render "$work/map.xml" "render --backend postfix"
eq "$(instance_lines "$work/render.out" | tr '\n' ,)" "alpha: new,bravo: new,charlie: new," "first render"
for n in alpha bravo charlie; do
	for f in main.cf master.cf transport; do
		if [ -f "$out/$n/$f" ]; then ok; else bad "render wrote no $n/$f"; fi
	done
	q=$state/$n/queue
	eq "$(stat -c '%U %a' "$q" 2> /dev/null)" "root 755" "$n queue_directory owner and mode"
	eq "$(postconf -c "$out/$n" -h queue_directory data_directory maillog_file | tr '\n' ' ')" \
		"$q $state/$n/data $state/$n/maillog " "$n directories"
	eq "$(postconf -c "$out/$n" -h myhostname inet_interfaces | tr '\n' ' ')" \
		"mail.$n.test $(addr $n) " "$n identity"
done

# Rendering again writes nothing and reports no instance; so does the same
# map (same path: the files name it) when <defaults backend="postfix">
# selects the backend.
render "$work/map.xml" "render again"
eq "$(instance_lines "$work/render.out")" "" "second render reports no instance"
has "$work/render.out" " 0 files written" "second render writes nothing"
sed 's/<defaults>/<defaults backend="postfix">/' "$work/map.xml" > "$work/map-attr.xml"
mv "$work/map-attr.xml" "$work/map.xml"
expect 0 "render with <defaults backend=\"postfix\">" \
	"$VHOSTMTA" render -m "$work/map.xml" -o "$out" --state-dir "$state"
eq "$(instance_lines "$work/out")" "" "backend attribute: no instance changes"
has "$work/out" " 0 files written" "backend attribute renders the same files"

# --- postfix check and start, each instance. ---
for n in alpha bravo charlie; do
	if pf "postfix -c '$out/$n' check"; then ok; else bad "postfix -c $n check: exit $?"; fi
	clean_tty "postfix -c $n check"
	if pf "postfix -c '$out/$n' start"; then ok; else bad "postfix -c $n start: exit $?"; maillog $n; fi
	clean_tty "postfix -c $n start"
done
for n in alpha bravo charlie; do
	if await 10 listening "$(addr $n):$port"; then ok; else
		bad "$n does not listen on $(addr $n):$port"; nsx ss -ltn; maillog $n; fi
	if is_master "$(master_pid $n)"; then ok; else bad "$n: no master in master.pid"; fi
done

# --- the sinks. ---
mkdir "$sink" "$lsink"
chown postfix "$sink" "$lsink"
# Not through nsx: $! is then the sink itself (ip netns exec execs it).
ip netns exec "$ns" smtp-sink -u postfix -d "$sink/%M." 127.0.0.100:2526 100 > "$work/sink.log" 2>&1 &
sinkpids="$sinkpids $!"
ip netns exec "$ns" smtp-sink -L -u postfix -d "$lsink/%M." 127.0.0.100:2424 100 > "$work/lsink.log" 2>&1 &
sinkpids="$sinkpids $!"
for l in 127.0.0.100:2526 127.0.0.100:2424; do
	if await 10 listening "$l"; then ok; else bad "smtp-sink does not listen on $l"; cat "$work/sink.log" "$work/lsink.log"; fi
done

# send NAME FROM TO TOKEN: submit one message from 127.0.0.1 to instance NAME.
send() {
	nsx swaks --server "$(addr $1):$port" --local-interface 127.0.0.1 --ehlo client.test \
		--from "$2" --to "$3" --header "Subject: $4" --body "token $4" --timeout 10 \
		> "$work/swaks" 2>&1
}
# mail_via NAME FROM TO SINKDIR WANT-ADDR WANT-HELO DESCRIPTION
mail_via() {
	msg= tok=vhostmta-$$-$(date +%s%N)
	if send "$1" "$2" "$3" "$tok"; then ok; else
		bad "$7: swaks to $1 failed"; sed 's/^/  | /' "$work/swaks"; return; fi
	if await 30 has_msg "$4" "$tok"; then ok; else
		bad "$7: not at the sink in 30 s"; maillog "$1"; return; fi
	eq "$(hdr "$msg" X-Client-Addr)" "$5" "$7: X-Client-Addr"
	eq "$(hdr "$msg" X-Helo-Args)" "$6" "$7: X-Helo-Args"
	eq "$(hdr "$msg" X-Rcpt-Args | cut -d' ' -f1)" "<$3>" "$7: recipient"
}

# --- outbound through every instance, inbound to the SMTP and the LMTP hop. ---
for n in alpha bravo charlie; do
	mail_via $n "sender@$n.test" someone@elsewhere.test "$sink" "$(addr $n)" "mail.$n.test" "$n outbound"
done
mail_via alpha sender@elsewhere.test user@alpha.test "$sink" "$addr_alpha" mail.alpha.test "alpha inbound (SMTP)"
mail_via bravo sender@elsewhere.test user@bravo.test "$lsink" "$addr_bravo" mail.bravo.test "bravo inbound (LMTP)"
[ -n "${msg:-}" ] && eq "$(hdr "$msg" X-Client-Proto)" LMTP "bravo inbound: protocol"

# --- an address change restarts that instance only. ---
pid_alpha=$(master_pid alpha) pid_bravo=$(master_pid bravo) pid_charlie=$(master_pid charlie)
nsx ip addr add 127.0.0.5/8 dev lo
sed 's/127\.0\.0\.3/127.0.0.5/g' "$work/map.xml" > "$work/map2.xml"
render "$work/map2.xml" "render a new address for bravo"
eq "$(instance_lines "$work/render.out")" "bravo: restart (listeners changed)" "address change"
eq "$(postconf -c "$out/bravo" -h inet_interfaces smtp_bind_address | tr '\n' ' ')" "127.0.0.5 127.0.0.5 " "bravo's new address"
if pf "postfix -c '$out/bravo' check"; then ok; else bad "postfix -c bravo check after the change: exit $?"; fi
clean_tty "postfix -c bravo check after the change"
if pf "postfix -c '$out/bravo' stop"; then ok; else bad "postfix -c bravo stop: exit $?"; maillog bravo; fi
if pf "postfix -c '$out/bravo' start"; then ok; else bad "postfix -c bravo start: exit $?"; maillog bravo; fi
clean_tty "postfix -c bravo start after the change"
addr_bravo=127.0.0.5
if await 10 listening "127.0.0.5:$port"; then ok; else bad "bravo does not listen on 127.0.0.5:$port"; nsx ss -ltn; maillog bravo; fi
if listening "127.0.0.3:$port"; then bad "something still listens on 127.0.0.3:$port"; else ok; fi
p=$(master_pid bravo)
if is_master "$p" && [ "$p" != "$pid_bravo" ]; then ok; else bad "bravo's master was not restarted ($pid_bravo -> $p)"; fi
eq "$(master_pid alpha)" "$pid_alpha" "alpha's master untouched"
eq "$(master_pid charlie)" "$pid_charlie" "charlie's master untouched"
for p in "$pid_alpha" "$pid_charlie"; do
	if is_master "$p"; then ok; else bad "master $p is gone"; fi
done
mail_via bravo sender@bravo.test someone@elsewhere.test "$sink" 127.0.0.5 mail.bravo.test "bravo outbound from its new address"

# --- a parameter change is a reload. ---
awk '{ print } /<instance name="charlie"/ { print "    <param name=\"message_size_limit\" value=\"12345678\"/>" }' \
	"$work/map2.xml" > "$work/map3.xml"
render "$work/map3.xml" "render a new message_size_limit for charlie"
eq "$(instance_lines "$work/render.out")" "charlie: reload" "parameter change"
if pf "postfix -c '$out/charlie' reload"; then ok; else bad "postfix -c charlie reload: exit $?"; maillog charlie; fi
clean_tty "postfix -c charlie reload"
size_is() { # NAME SIZE: the EHLO reply of NAME advertises SIZE
	nsx swaks --server "$(addr $1):$port" --quit-after EHLO --timeout 5 2>&1 | grep -q "250[- ]SIZE $2\$"
}
if await 10 size_is charlie 12345678; then ok; else bad "charlie does not announce SIZE 12345678 after the reload"; maillog charlie; fi
eq "$(master_pid charlie)" "$pid_charlie" "charlie's master survives the reload"

# --- a dropped instance is removed. ---
if pf "postfix -c '$out/charlie' stop"; then ok; else bad "postfix -c charlie stop: exit $?"; fi
awk '/<instance name="charlie"/ { skip = 1 } !skip { print } /<\/instance>/ { skip = 0 }' \
	"$work/map3.xml" > "$work/map4.xml"
render "$work/map4.xml" "render without charlie"
eq "$(instance_lines "$work/render.out")" "charlie: removed" "dropped instance"
if [ -e "$out/charlie" ]; then bad "$out/charlie is still there"; else ok; fi
if [ -d "$state/charlie/queue" ]; then ok; else bad "render removed charlie's queue (a Postfix queue never is)"; fi
eq "$(master_pid alpha)" "$pid_alpha" "alpha's master untouched by the removal"

finish postfix
