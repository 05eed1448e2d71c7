#!/bin/sh
# units.sh: the systemd side without a running systemd. The units as built
# (in $UNITDIR) pass systemd-analyze verify, templates instantiated with the
# drop-in vhostmta-generator writes; vhostmta@.service's security exposure
# is at most 2.0, and so is vhostmta-wake.service's (a root oneshot);
# `vhostmta wake` finds the queues with mail; the generator writes exactly
# the expected drop-ins and links, skips what it cannot use and always
# exits 0; `vhostmta apply --dry-run` prints the plan and writes nothing,
# and refuses a broken map.
# tests/integration/systemd.sh does the same against a real systemd.
set -u
: "${UNITDIR:?}" "${VHOSTMTA:?}"
command -v systemd-analyze >/dev/null || { echo "units: FAIL: systemd-analyze missing (Debian package: systemd)"; exit 1; }
: "${VHOSTMTA_INSTANCE:=$(dirname "$VHOSTMTA")/vhostmta-instance}"
MAX_EXPOSURE=2.0
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-units.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# same WHAT EXPECTED-FILE ACTUAL-FILE
same() {
	if cmp -s "$2" "$3"; then ok; else bad "$1"; diff -u "$2" "$3" | head -40; fi
}
host=$(hostname)

# ---- a test map: two instances here (one with its own port, one dual
# stack but IPv4 only), one on another host ----
cat > "$work/map.xml" <<EOF
<map xmlns="urn:vhostmta:map:1">
  <defaults>
    <param name="mynetworks" value="127.0.0.0/8"/>
  </defaults>
  <instance name="alpha" myhostname="mail.alpha.test" host="$host">
    <address>192.0.2.10</address>
    <address>[2001:db8::10]</address>
    <domain name="alpha.test"/>
  </instance>
  <instance name="bravo" myhostname="mail.bravo.test">
    <address>192.0.2.11</address>
    <param name="smtpd_listen_port" value="2525"/>
  </instance>
  <instance name="charlie" myhostname="mail.charlie.test">
    <address>[2001:db8::12]</address>
    <address>192.0.2.12</address>
    <param name="inet_protocols" value="ipv4"/>
  </instance>
  <instance name="other" myhostname="mail.other.test" host="not-$host">
    <address>192.0.2.13</address>
  </instance>
</map>
EOF
inst=$work/inst
tree() { (cd "$1" && find . | LC_ALL=C sort | while read -r f; do
	if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; elif [ -f "$f" ]; then echo "$f $(cksum < "$f")"; else echo "$f/"; fi
done); }

# ---- apply --dry-run on a fresh directory: everything new, nothing written ----
cat > "$work/plan.expected" <<EOF
daemon-reload
start vhostmta@alpha.socket (alpha: new)
start vhostmta@bravo.socket (bravo: new)
start vhostmta@charlie.socket (charlie: new)
start vhostmta.target
$work/map.xml: 3 instances: 3 new, 0 restarted, 0 reloaded, 0 removed (dry run: nothing changed)
EOF
if "$VHOSTMTA" apply --dry-run -m "$work/map.xml" -o "$inst" > "$work/plan.out" 2>&1; then ok; else bad "apply --dry-run exit $?"; cat "$work/plan.out"; fi
same "apply --dry-run plan (fresh)" "$work/plan.expected" "$work/plan.out"
if [ -e "$inst" ]; then bad "apply --dry-run created $inst"; else ok; fi

# ---- render as apply would (this host), then the generator ----
"$VHOSTMTA" render -m "$work/map.xml" -o "$inst" --host "$host" > /dev/null || bad "render failed"
gen=$work/gen
mkdir -p "$gen/normal" "$gen/early" "$gen/late"
if SYSTEMD_LOG_TARGET=console "$VHOSTMTA" generator -o "$inst" "$gen/normal" "$gen/early" "$gen/late" > "$work/gen.out" 2>&1; then ok; else bad "generator exit $?"; fi
if [ -s "$work/gen.out" ]; then bad "generator said something on a clean run:"; cat "$work/gen.out"; else ok; fi
unitdir_built=$(sed -n 's/^ *unitdir *= *//p' "${TOP:-.}/config.mk" 2>/dev/null)
: "${unitdir_built:=/lib/systemd/system}"
dropin() { # name cf-name lines...
	n=$1; shift
	printf '# Written by vhostmta-generator from %s/%s/instance.cf; regenerated at every\n' "$inst" "$n"
	printf '# daemon-reload: change the map and run vhostmta apply.\n[Socket]\n'
	for l; do printf 'ListenStream=%s\n' "$l"; done
}
exp=$work/gen.expected
mkdir -p "$exp/vhostmta.target.wants" "$exp/vhostmta@alpha.socket.d" "$exp/vhostmta@bravo.socket.d" "$exp/vhostmta@charlie.socket.d"
dropin alpha 192.0.2.10:25 '[2001:db8::10]:25' > "$exp/vhostmta@alpha.socket.d/50-listen.conf"
dropin bravo 192.0.2.11:2525 > "$exp/vhostmta@bravo.socket.d/50-listen.conf"
dropin charlie 192.0.2.12:25 > "$exp/vhostmta@charlie.socket.d/50-listen.conf"
for n in alpha bravo charlie; do ln -s "$unitdir_built/vhostmta@.socket" "$exp/vhostmta.target.wants/vhostmta@$n.socket"; done
tree "$exp" > "$work/tree.expected"
tree "$gen/normal" > "$work/tree.out"
same "generator output (drop-ins and links)" "$work/tree.expected" "$work/tree.out"
if [ -z "$(find "$gen/early" "$gen/late" -mindepth 1)" ]; then ok; else bad "generator wrote into the early or late directory"; fi

# ---- systemd-analyze verify: every unit, templates as instance alpha ----
vdir=$work/verify
mkdir -p "$vdir"
cp -r "$gen/normal/vhostmta@alpha.socket.d" "$vdir/"
# Every unit is copied first: a service needs its socket beside it.
for u in "$UNITDIR"/*; do
	name=$(basename "$u")
	case $name in *@.*) unit=$(echo "$name" | sed 's/@\./@alpha./') ;; *) unit=$name ;; esac
	cp "$u" "$vdir/$unit"
	# verify insists that ExecStart's program exists: before `make
	# install` it is the build's.
	prog=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$vdir/$unit")
	if [ -n "$prog" ] && [ ! -x "$prog" ]; then
		case $(basename "$prog") in
		vhostmta-instance) sed -i "s|^ExecStart=$prog|ExecStart=$VHOSTMTA_INSTANCE|" "$vdir/$unit" ;;
		vhostmta) sed -i "s|^ExecStart=$prog|ExecStart=$VHOSTMTA|" "$vdir/$unit" ;;
		esac
	fi
	echo "$unit" >> "$work/units.list"
done
while read -r unit; do
	if out=$(cd "$vdir" && systemd-analyze verify --man=no "./$unit" 2>&1) && [ -z "$out" ]; then
		ok
	else
		bad "systemd-analyze verify $unit:"; echo "$out"
	fi
done < "$work/units.list"
[ -f "$UNITDIR/vhostmta@.socket" ] && [ -f "$UNITDIR/vhostmta@.service" ] || bad "vhostmta@.socket or vhostmta@.service missing in $UNITDIR"
# vhostmta-wake.service: verified above; the target pulls it in, and it
# runs after the target (so after the sockets), without an ordering cycle.
if [ -f "$UNITDIR/vhostmta-wake.service" ] && grep -qx 'ExecStart=.*/vhostmta wake' "$UNITDIR/vhostmta-wake.service" &&
	grep -q '^Wants=.*vhostmta-wake.service' "$UNITDIR/vhostmta.target" &&
	grep -qx 'After=vhostmta.target' "$UNITDIR/vhostmta-wake.service"; then ok; else bad "vhostmta-wake.service missing or not wanted by vhostmta.target"; fi
if out=$(cd "$vdir" && systemd-analyze verify --man=no ./vhostmta.target ./vhostmta@alpha.socket ./vhostmta-wake.service 2>&1) &&
	! echo "$out" | grep -qi cycle && [ -z "$out" ]; then ok; else bad "verify of the target, a socket and the wake service together:"; echo "$out"; fi
# The template itself has no Listen line: the generator's drop-in is needed.
if grep -q '^Listen' "$UNITDIR/vhostmta@.socket"; then bad "vhostmta@.socket has Listen lines of its own"; else ok; fi

# ---- the exposure of vhostmta@.service ----
sec=$(cd "$vdir" && systemd-analyze security --offline=true --no-pager ./vhostmta@alpha.service 2>&1)
exposure=$(echo "$sec" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [ -n "$exposure" ] && awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }'; then
	ok; echo "units: vhostmta@.service exposure $exposure (at most $MAX_EXPOSURE)"
else
	bad "vhostmta@.service exposure '${exposure:-?}' above $MAX_EXPOSURE:"; echo "$sec" | grep '✗'
fi

# The wake service runs as root: its sandbox keeps it read-only and
# offline (it talks to PID 1 over a Unix socket only).
sec=$(cd "$vdir" && systemd-analyze security --offline=true --no-pager ./vhostmta-wake.service 2>&1)
exposure=$(echo "$sec" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [ -n "$exposure" ] && awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }'; then
	ok; echo "units: vhostmta-wake.service exposure $exposure (at most $MAX_EXPOSURE)"
else
	bad "vhostmta-wake.service exposure '${exposure:-?}' above $MAX_EXPOSURE:"; echo "$sec" | grep '✗'
fi

# ---- vhostmta wake without systemd: finds the queues with mail; nothing
# to start is no call to systemd at all ----
wk=$work/wake
mkdir -p "$wk"
"$VHOSTMTA" render -m "$work/map.xml" -o "$wk/inst" --host "$host" -s "$wk/q" > /dev/null || bad "render for wake failed"
mkdir -p "$wk/q/alpha/incoming" "$wk/q/alpha/deferred" "$wk/q/bravo/deferred" "$wk/q/bravo/tmp"
touch "$wk/q/bravo/tmp/leftover"
if "$VHOSTMTA" wake -o "$wk/inst" > "$wk/out" 2>&1 && [ ! -s "$wk/out" ]; then ok; else bad "wake with empty queues:"; cat "$wk/out"; fi
if "$VHOSTMTA" wake -o "$work/missing" > "$wk/out" 2>&1 && [ ! -s "$wk/out" ]; then ok; else bad "wake with nothing rendered:"; cat "$wk/out"; fi
if [ ! -S /run/systemd/private ] && [ ! -S /run/dbus/system_bus_socket ]; then
	touch "$wk/q/bravo/deferred/B1" "$wk/q/bravo/deferred/B2"
	if "$VHOSTMTA" wake -o "$wk/inst" > "$wk/out" 2>&1; then bad "wake without systemd exited 0"; else
		grep -q 'vhostmta wake: cannot reach systemd' "$wk/out" && ok || { bad "wake without systemd:"; cat "$wk/out"; }
	fi
fi

# ---- the generator through its link, as systemd runs it ----
mkdir -p "$work/bin" "$gen/link"
ln -s "$VHOSTMTA" "$work/bin/vhostmta-generator"
# The link and `vhostmta generator` read the same (installed) directory:
# the link must dispatch to the generator and write the same.
mkdir -p "$gen/cmd"
if SYSTEMD_LOG_TARGET=console "$work/bin/vhostmta-generator" "$gen/link" "$gen/early" "$gen/late"; then ok; else bad "vhostmta-generator (link) exit $?"; fi
SYSTEMD_LOG_TARGET=console "$VHOSTMTA" generator "$gen/cmd" "$gen/early" "$gen/late"
tree "$gen/cmd" > "$work/cmd.tree"; tree "$gen/link" > "$work/link.tree"
same "vhostmta-generator (link) writes what vhostmta generator writes" "$work/cmd.tree" "$work/link.tree"
if SYSTEMD_LOG_TARGET=console "$work/bin/vhostmta-generator" 2> "$work/link.err"; then
	bad "vhostmta-generator without arguments exited 0"
else
	grep -q 'usage: vhostmta-generator' "$work/link.err" && ok || bad "vhostmta-generator usage line missing"
fi

# ---- nothing applied yet: nothing written, nothing said, exit 0 ----
mkdir -p "$gen/none"
if SYSTEMD_LOG_TARGET=console "$VHOSTMTA" generator -o "$work/missing" "$gen/none" > "$work/none.out" 2>&1 &&
	[ -z "$(ls -A "$gen/none")" ] && [ ! -s "$work/none.out" ]; then ok; else bad "generator with no instances"; cat "$work/none.out"; fi

# ---- a broken instance.cf (edited by hand): an instance whose addresses
# cannot be read is skipped, one with other errors keeps its sockets (at a
# daemon-reload systemd would close them for good); both logged; exit 0 ----
cp -r "$inst" "$work/inst-broken"
sed -i 's/^inet_interfaces = .*/inet_interfaces = 999.1.2.3/' "$work/inst-broken/bravo/instance.cf"
printf 'no_such_parameter = 1\n' >> "$work/inst-broken/charlie/instance.cf"
mkdir -p "$gen/broken"
if SYSTEMD_LOG_TARGET=console "$VHOSTMTA" generator -o "$work/inst-broken" "$gen/broken" > "$work/broken.out" 2>&1; then ok; else bad "generator exit $? on a broken instance.cf"; fi
(cd "$gen/broken" && find . | LC_ALL=C sort) > "$work/broken.tree"
printf '%s\n' . ./vhostmta.target.wants ./vhostmta.target.wants/vhostmta@alpha.socket \
	./vhostmta.target.wants/vhostmta@charlie.socket \
	./vhostmta@alpha.socket.d ./vhostmta@alpha.socket.d/50-listen.conf \
	./vhostmta@charlie.socket.d ./vhostmta@charlie.socket.d/50-listen.conf > "$work/broken.expected"
same "generator with broken instances skips bravo only" "$work/broken.expected" "$work/broken.tree"
grep -qx 'ListenStream=192.0.2.12:25' "$gen/broken/vhostmta@charlie.socket.d/50-listen.conf" && ok || bad "charlie's kept socket"
if grep -q '^<[0-9]*>vhostmta-generator: .*bravo/instance.cf.*inet_interfaces' "$work/broken.out" &&
	grep -q '^<[0-9]*>vhostmta-generator: .*charlie/instance.cf:[0-9]*: error: unknown parameter' "$work/broken.out" &&
	grep -q 'instance bravo skipped' "$work/broken.out" &&
	grep -q 'charlie/instance.cf has errors: .* its sockets are kept' "$work/broken.out"; then ok; else bad "generator log lines for broken instances:"; cat "$work/broken.out"; fi
# Without SYSTEMD_LOG_TARGET the lines go to the kernel log (as root).
if [ -w /dev/kmsg ] && dmesg > /dev/null 2>&1; then
	mkdir -p "$gen/kmsg"
	"$VHOSTMTA" generator -o "$work/inst-broken" "$gen/kmsg" > "$work/kmsg.out" 2>&1
	if dmesg | grep -F "$work/inst-broken/bravo/instance.cf" | grep -q 'vhostmta-generator'; then ok; else bad "no vhostmta-generator line in the kernel log"; fi
	[ -s "$work/kmsg.out" ] && bad "generator wrote to stderr although /dev/kmsg is writable" || ok
fi

# ---- a broken map: apply refuses, changes nothing; the generator keeps
# generating from what was applied ----
sed 's|<address>192.0.2.11</address>|<address>192.0.2.10</address>|' "$work/map.xml" > "$work/broken.xml"
tree "$inst" > "$work/inst.before"
if "$VHOSTMTA" apply --dry-run -m "$work/broken.xml" -o "$inst" > "$work/bm.out" 2>&1; then
	bad "apply --dry-run accepted a broken map"
else
	grep -q 'nothing changed' "$work/bm.out" && grep -q 'broken.xml:[0-9]*: error:' "$work/bm.out" && ok || { bad "apply on a broken map: no clear error"; cat "$work/bm.out"; }
fi
if "$VHOSTMTA" apply -m "$work/broken.xml" -o "$inst" > "$work/bm2.out" 2>&1; then bad "apply accepted a broken map"; else ok; fi
tree "$inst" > "$work/inst.after"
same "a broken map changes no rendered file" "$work/inst.before" "$work/inst.after"
mkdir -p "$gen/again"
SYSTEMD_LOG_TARGET=console "$VHOSTMTA" generator -o "$inst" "$gen/again"
tree "$gen/again" > "$work/again.tree"
same "generator after a broken map: the applied instances" "$work/tree.expected" "$work/again.tree"

# ---- apply --dry-run with changes: the plan, and nothing written ----
sed -e 's|<address>192.0.2.10</address>|<address>192.0.2.20</address>|' \
    -e 's|<param name="smtpd_listen_port" value="2525"/>|<param name="smtpd_listen_port" value="2525"/><param name="message_size_limit" value="1000000"/>|' \
    -e '/name="charlie"/,/<\/instance>/d' \
    -e "s|host=\"not-$host\"|host=\"$host\"|" "$work/map.xml" > "$work/map2.xml"
cat > "$work/plan2.expected" <<EOF
daemon-reload
stop vhostmta@alpha.service (alpha: restart (listeners changed))
stop vhostmta@alpha.socket (alpha: restart (listeners changed))
stop vhostmta@charlie.socket (charlie: removed)
stop vhostmta@charlie.service (charlie: removed)
start vhostmta@alpha.socket (alpha: restart (listeners changed))
reload vhostmta@bravo.service (bravo: reload)
start vhostmta@other.socket (other: new)
start vhostmta.target
$work/map2.xml: 3 instances: 1 new, 1 restarted, 1 reloaded, 1 removed (dry run: nothing changed)
EOF
if "$VHOSTMTA" apply -n -m "$work/map2.xml" -o "$inst" > "$work/plan2.out" 2>&1; then ok; else bad "apply -n exit $?"; fi
same "apply --dry-run plan (changes)" "$work/plan2.expected" "$work/plan2.out"
tree "$inst" > "$work/inst.after2"
same "apply --dry-run writes nothing" "$work/inst.before" "$work/inst.after2"
# An unchanged map: no instance action at all.
"$VHOSTMTA" apply -n -m "$work/map.xml" -o "$inst" > "$work/plan3.out" 2>&1
if [ "$(grep -c '^\(start\|stop\|reload\) vhostmta@' "$work/plan3.out")" = 0 ]; then ok; else bad "apply -n on the applied map plans actions:"; cat "$work/plan3.out"; fi

# ---- changes a failed apply left undone are kept for the next one ----
printf '# left by a failed apply\nbravo restart\ncharlie new\nzulu removed\nbad/name new\nalpha bogus\n' > "$inst/.apply-pending"
cat > "$work/plan4.expected" <<EOF
daemon-reload
stop vhostmta@bravo.service (bravo: restart (listeners changed))
stop vhostmta@bravo.socket (bravo: restart (listeners changed))
stop vhostmta@zulu.socket (zulu: removed)
stop vhostmta@zulu.service (zulu: removed)
start vhostmta@bravo.socket (bravo: restart (listeners changed))
start vhostmta@charlie.socket (charlie: new)
start vhostmta.target
$work/map.xml: 3 instances: 1 new, 1 restarted, 0 reloaded, 1 removed (dry run: nothing changed)
EOF
"$VHOSTMTA" apply -n -m "$work/map.xml" -o "$inst" > "$work/plan4.out" 2>&1
same "apply --dry-run merges the pending changes" "$work/plan4.expected" "$work/plan4.out"
rm -f "$inst/.apply-pending"

# ---- apply without systemd: refuses before rendering anything ----
if [ ! -S /run/systemd/private ] && [ ! -S /run/dbus/system_bus_socket ]; then
	if "$VHOSTMTA" apply -m "$work/map.xml" -o "$work/nosd" > "$work/nosd.out" 2>&1; then
		bad "apply without systemd exited 0"
	else
		grep -q 'cannot reach systemd' "$work/nosd.out" && [ ! -e "$work/nosd" ] && ok || { bad "apply without systemd"; cat "$work/nosd.out"; }
	fi
fi

echo "units: $pass passed, $fail failed"
[ "$fail" = 0 ]
