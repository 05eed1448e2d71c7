#!/bin/sh
# systemd.sh: vhostmta under a real systemd, booted as PID 1 of a throwaway
# container made of namespaces (shared/TESTING.md "Real systemd, without a
# VM"). The root file system is a Debian bookworm debootstrap, made once
# and cached in $VHOSTMTA_TEST_CACHE (default /var/cache/vhostmta-test);
# each run boots it through an overlay on a tmpfs, so the cache stays
# clean. The build (binaries, units, the generator link) is copied in with
# the configured paths, as `make install` would place it.
#
# Shown: apply starts the sockets, and the first connection to an
# instance's address starts it (socket activation) and its mail flows out
# from that address; after a map change apply reloads the instance whose
# parameter changed, restarts the one whose address changed, and leaves
# the third alone (same MainPID, no reload); `systemctl restart` under
# smtp-source load refuses no connection; a broken map is refused and
# the running instances go on, also across a daemon-reload; a start of
# vhostmta.target starts the instance with deferred mail (through
# vhostmta-wake.service), without a connection, and no other.
#
# Traffic stays inside the container's network namespace: the instances'
# addresses (192.0.2.0/24) and the test sink are on its loopback. swaks,
# smtp-source and smtp-sink are the host's, run in that namespace.
set -u
: "${VHOSTMTA:?}" "${UNITDIR:?}"
: "${VHOSTMTA_INSTANCE:=$(dirname "$VHOSTMTA")/vhostmta-instance}"
: "${TOP:=$(pwd)}"
CACHE=${VHOSTMTA_TEST_CACHE:-/var/cache/vhostmta-test}/bookworm-systemd
MIRROR=${VHOSTMTA_TEST_MIRROR:-http://deb.debian.org/debian}

skip() { echo "systemd: SKIP: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (namespaces, debootstrap)"
# The service's sandbox (PrivateUsers=) needs user namespaces, which the
# kernel refuses inside a chroot and some containers refuse outright.
unshare --user --map-root-user true 2> /dev/null ||
	skip "this machine refuses user namespaces (a chroot or a restricted container): the units' PrivateUsers= cannot work here"
for t in debootstrap unshare nsenter swaks smtp-source smtp-sink ip; do
	command -v $t > /dev/null || { echo "systemd: FAIL: $t missing (configure --install-deps)"; exit 1; }
done

# The configured paths, so the copies land where the units point.
cfg() { sed -n "s/^$1 *= *//p" "$TOP/config.mk"; }
SBINDIR=$(cfg sbindir) SYSCONFDIR=$(cfg sysconfdir) UNIT_DIR=$(cfg unitdir)
[ -n "$SBINDIR" ] && [ -n "$SYSCONFDIR" ] && [ -n "$UNIT_DIR" ] || { echo "systemd: FAIL: no paths in $TOP/config.mk"; exit 1; }
GENDIR=/usr/lib/systemd/system-generators
ETC=$SYSCONFDIR/vhostmta

if [ ! -x "$CACHE/lib/systemd/systemd" ]; then
	echo "systemd: making the container's root in $CACHE (once)"
	mkdir -p "$(dirname "$CACHE")"
	rm -rf "$CACHE.tmp"
	debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,iproute2 \
		bookworm "$CACHE.tmp" "$MIRROR" > "$CACHE.log" 2>&1 ||
		skip "debootstrap from $MIRROR failed (see $CACHE.log)"
	mv "$CACHE.tmp" "$CACHE"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-systemd.XXXXXX")
chmod 755 "$work"
upid= sinkpid= loadpid= blocker=
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# ---- the container ----------------------------------------------------------

# init.sh runs as PID 1 of the new namespaces: the root, the build, then
# systemd.
cat > "$work/init.sh" <<'EOF'
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs "$W/ovl"
mkdir "$W/ovl/upper" "$W/ovl/work"
mount -t overlay overlay -o "lowerdir=$CACHE,upperdir=$W/ovl/upper,workdir=$W/ovl/work" "$W/root"
R=$W/root
# The build, where make install puts it; the libraries it needs that the
# minimal root lacks come from this (same release) host.
install -d "$R$SBINDIR" "$R$UNIT_DIR" "$R$GENDIR" "$R$ETC"
install -m 755 "$VHOSTMTA" "$R$SBINDIR/vhostmta"
install -m 755 "$VHOSTMTA_INSTANCE" "$R$SBINDIR/vhostmta-instance"
install -m 644 "$UNITDIR"/* "$R$UNIT_DIR/"
ln -sf "$SBINDIR/vhostmta" "$R$GENDIR/vhostmta-generator"
for lib in $(ldd "$VHOSTMTA" "$VHOSTMTA_INSTANCE" | awk '/=> \// { print $3 }' | sort -u); do
	[ -e "$R$lib" ] || cp -L "$lib" "$R$lib"
done
if ldd "$VHOSTMTA_INSTANCE" | grep -q libasan; then
	# LeakSanitizer needs ptrace, which the unit's system call filter
	# forbids; everything else of the sanitizers stays on.
	mkdir -p "$R/etc/systemd/system/vhostmta@.service.d"
	printf '[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n' > "$R/etc/systemd/system/vhostmta@.service.d/asan.conf"
	mkdir -p "$R/etc/systemd/system/vhostmta-wake.service.d"
	cp "$R/etc/systemd/system/vhostmta@.service.d/asan.conf" "$R/etc/systemd/system/vhostmta-wake.service.d/"
fi
echo vhostmta-test > "$R/etc/hostname"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
# pivot_root, not chroot: the kernel refuses user namespaces (the unit's
# PrivateUsers=) to a chrooted process.
mkdir -p "$R/.oldroot"
cd "$R"
pivot_root . .oldroot
exec /usr/bin/env -i container=other PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	/bin/sh -c 'umount -l /.oldroot && rmdir /.oldroot; exec /lib/systemd/systemd'
EOF
mkdir "$work/ovl" "$work/root"

cleanup() {
	[ -n "$loadpid" ] && kill "$loadpid" 2> /dev/null
	[ -n "$sinkpid" ] && kill "$sinkpid" 2> /dev/null
	[ -n "$blocker" ] && kill "$blocker" 2> /dev/null
	if [ -n "$upid" ] && kill -0 "$upid" 2> /dev/null; then
		[ -n "${spid:-}" ] && incont systemctl poweroff > /dev/null 2>&1
		i=0
		while kill -0 "$upid" 2> /dev/null && [ $i -lt 100 ]; do sleep 0.2; i=$((i + 1)); done
		# Still there: SIGKILL to its PID 1 ends the whole namespace.
		[ -n "${spid:-}" ] || spid=$(awk '{ print $1 }' "/proc/$upid/task/$upid/children" 2> /dev/null)
		[ -n "$spid" ] && kill -9 "$spid" 2> /dev/null
		wait "$upid" 2> /dev/null
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

W=$work CACHE=$CACHE SBINDIR=$SBINDIR UNIT_DIR=$UNIT_DIR GENDIR=$GENDIR ETC=$ETC \
	VHOSTMTA=$VHOSTMTA VHOSTMTA_INSTANCE=$VHOSTMTA_INSTANCE UNITDIR=$UNITDIR \
	unshare --fork --pid --mount --uts --ipc --net sh "$work/init.sh" > "$work/console" 2>&1 &
upid=$!

# spid: the host's pid of the container's systemd, unshare's one child
# once it has exec'd systemd.
spid=
i=0
while [ -z "$spid" ] && [ $i -lt 200 ] && kill -0 "$upid" 2> /dev/null; do
	child=$(awk '{ print $1 }' "/proc/$upid/task/$upid/children" 2> /dev/null)
	[ -n "$child" ] && [ "$(cat "/proc/$child/comm" 2> /dev/null)" = systemd ] && spid=$child
	sleep 0.1; i=$((i + 1))
done
[ -n "$spid" ] || { echo "systemd: FAIL: the container did not boot:"; cat "$work/console"; exit 1; }

incont() { nsenter -t "$spid" -m -u -i -n -p -r -w "$@"; }
innet() { nsenter -t "$spid" -n "$@"; }

state=
i=0
while [ $i -lt 300 ]; do
	state=$(incont systemctl is-system-running 2> /dev/null)
	case $state in running|degraded) break ;; esac
	sleep 0.2; i=$((i + 1))
done
case $state in
running|degraded) echo "systemd: container booted ($state)"; ok ;;
*) echo "systemd: FAIL: container not running ($state)"; cat "$work/console"; exit 1 ;;
esac

# ---- helpers ------------------------------------------------------------------

mainpid() { incont systemctl show -p MainPID --value "vhostmta@$1.service"; }
active() { incont systemctl is-active "$1" 2> /dev/null; }
# send ADDR TO: one message through the instance at ADDR:25.
send() { innet swaks --server "$1:25" --from sender@client.test --to "$2" \
	--ehlo client.test --h-Subject "vhostmta systemd test" --timeout 20 2>&1; }
put_map() { incont sh -c "cat > $ETC/map.xml" < "$1"; }
apply() { incont "$SBINDIR/vhostmta" apply > "$work/apply.out" 2>&1; }
expect_lines() { # WHAT FILE: the lines of $work/expected appear in FILE, in order
	if awk 'BEGIN { n = k = 0 } NR == FNR { want[n++] = $0; next } $0 == want[k] { k++ } END { exit k != n }' \
		"$work/expected" "$2"; then ok; else bad "$1:"; cat "$2"; fi
}
wait_for() { # SECONDS CMD...: until CMD succeeds
	t=$(( $1 * 10 )); shift
	while [ $t -gt 0 ]; do "$@" && return 0; sleep 0.1; t=$((t - 1)); done
	return 1
}

# The instances' addresses and the sink's, on the container's loopback.
for a in 192.0.2.10 192.0.2.11 192.0.2.12 192.0.2.21 192.0.2.100; do
	innet ip addr add "$a/32" dev lo
done
mkdir -m 777 "$work/sink"
# Started directly, not through a function: $! must be its own pid.
nsenter -t "$spid" -n smtp-sink -u postfix -d "$work/sink/%M." 192.0.2.100:2526 100 > "$work/sink.log" 2>&1 &
sinkpid=$!

cat > "$work/map1.xml" <<'EOF'
<map xmlns="urn:vhostmta:map:1">
  <defaults deliver="smtp:[192.0.2.100]:2526">
    <param name="mynetworks" value="127.0.0.0/8"/>
    <param name="minimal_backoff_time" value="1s"/>
  </defaults>
  <instance name="alpha" myhostname="mail.alpha.test">
    <address>192.0.2.10</address>
    <domain name="alpha.test"/>
  </instance>
  <instance name="bravo" myhostname="mail.bravo.test">
    <address>192.0.2.11</address>
    <domain name="bravo.test"/>
  </instance>
  <instance name="charlie" myhostname="mail.charlie.test">
    <address>192.0.2.12</address>
    <domain name="charlie.test"/>
  </instance>
</map>
EOF

# ---- apply; the sockets listen, no instance runs yet --------------------------

incont mkdir -p "$ETC"
put_map "$work/map1.xml"
if apply; then ok; else bad "first apply exit $?:"; cat "$work/apply.out"; fi
cat > "$work/expected" <<'EOF'
daemon-reload
start vhostmta@alpha.socket (alpha: new)
start vhostmta@bravo.socket (bravo: new)
start vhostmta@charlie.socket (charlie: new)
start vhostmta.target (every instance)
EOF
expect_lines "first apply's actions" "$work/apply.out"
incont systemctl start vhostmta.target || bad "systemctl start vhostmta.target"
if incont test -f /run/systemd/generator/vhostmta@alpha.socket.d/50-listen.conf; then ok; else bad "no generator drop-in in the container"; fi
if [ "$(incont systemctl show -p Listen --value vhostmta@alpha.socket)" = "192.0.2.10:25 (Stream)" ]; then ok; else
	bad "vhostmta@alpha.socket listens on: $(incont systemctl show -p Listen --value vhostmta@alpha.socket)"; fi
for n in alpha bravo charlie; do
	[ "$(active vhostmta@$n.socket)" = active ] && ok || bad "vhostmta@$n.socket not active"
	[ "$(active vhostmta@$n.service)" = inactive ] && ok || bad "vhostmta@$n.service runs before any connection"
done
[ "$(active vhostmta.target)" = active ] && ok || bad "vhostmta.target not active"

# ---- the first connection starts the instance; the mail flows ------------------

if send 192.0.2.10 user@alpha.test > "$work/swaks1" && grep -q '250 2.0.0 Ok: queued' "$work/swaks1"; then ok; else bad "mail to alpha not accepted:"; tail -5 "$work/swaks1"; fi
[ "$(active vhostmta@alpha.service)" = active ] && ok || bad "vhostmta@alpha.service not started by its socket"
# Not root, and the queue is the state directory.
uid=$(incont stat -c %u "/proc/$(mainpid alpha)")
[ -n "$uid" ] && [ "$uid" != 0 ] && ok || bad "vhostmta@alpha.service runs as uid '$uid'"
got_sink() { grep -l '^X-Client-Addr: 192.0.2.10' "$work"/sink/* > /dev/null 2>&1; }
if wait_for 20 got_sink; then ok; else bad "alpha's mail did not reach the sink from 192.0.2.10"; incont journalctl -u vhostmta@alpha.service --no-pager | tail -5; fi
grep -h '^X-Helo-Args:' "$work"/sink/* 2> /dev/null | grep -q 'mail.alpha.test' && ok || bad "alpha's mail did not say EHLO mail.alpha.test"
send 192.0.2.11 user@bravo.test > "$work/swaks2"; grep -q '250 2.0.0 Ok: queued' "$work/swaks2" && ok || bad "mail to bravo not accepted"
send 192.0.2.12 user@charlie.test > "$work/swaks3"; grep -q '250 2.0.0 Ok: queued' "$work/swaks3" && ok || bad "mail to charlie not accepted"
pa=$(mainpid alpha) pb=$(mainpid bravo) pc=$(mainpid charlie)
[ "$pa" != 0 ] && [ "$pb" != 0 ] && [ "$pc" != 0 ] && ok || bad "MainPIDs $pa $pb $pc"

# ---- a map change: alpha a parameter, bravo its address, charlie nothing -------

sed -e 's|<domain name="alpha.test"/>|<domain name="alpha.test"/><param name="message_size_limit" value="5000000"/>|' \
    -e 's|192.0.2.11|192.0.2.21|' "$work/map1.xml" > "$work/map2.xml"
put_map "$work/map2.xml"
since=$(incont date '+%Y-%m-%d %H:%M:%S')
sleep 1
if apply; then ok; else bad "second apply exit $?:"; cat "$work/apply.out"; fi
cat > "$work/expected" <<'EOF'
daemon-reload
stop vhostmta@bravo.service (bravo: restart (listeners changed))
stop vhostmta@bravo.socket (bravo: restart (listeners changed))
reload vhostmta@alpha.service (alpha: reload)
start vhostmta@bravo.socket (bravo: restart (listeners changed))
EOF
expect_lines "second apply's actions" "$work/apply.out"
if grep -q charlie "$work/apply.out"; then bad "apply acted on the unchanged charlie:"; cat "$work/apply.out"; else ok; fi
[ "$(mainpid alpha)" = "$pa" ] && ok || bad "alpha's MainPID changed on a reload ($pa -> $(mainpid alpha))"
[ "$(mainpid charlie)" = "$pc" ] && ok || bad "charlie's MainPID changed ($pc -> $(mainpid charlie))"
[ "$(mainpid bravo)" != "$pb" ] && ok || bad "bravo was not restarted"
incont journalctl -u vhostmta@alpha.service --since "$since" --no-pager > "$work/j.alpha"
grep -q 'reloaded' "$work/j.alpha" && ok || { bad "alpha did not reload:"; tail -5 "$work/j.alpha"; }
incont journalctl -u vhostmta@charlie.service --since "$since" --no-pager > "$work/j.charlie"
grep -q 'reload' "$work/j.charlie" && bad "charlie was reloaded" || ok
if [ "$(incont systemctl show -p Listen --value vhostmta@bravo.socket)" = "192.0.2.21:25 (Stream)" ]; then ok; else
	bad "bravo's socket listens on $(incont systemctl show -p Listen --value vhostmta@bravo.socket)"; fi
send 192.0.2.21 user@bravo.test > "$work/swaks4"; grep -q '250 2.0.0 Ok: queued' "$work/swaks4" && ok || { bad "mail to bravo's new address not accepted"; tail -5 "$work/swaks4"; }
send 192.0.2.11 user@bravo.test > "$work/swaks5"; grep -q 'Connection refused' "$work/swaks5" && ok || bad "bravo's old address still answers"
# Applying the same map again touches nothing.
apply
grep -q '^\(start\|stop\|reload\) vhostmta@' "$work/apply.out" && bad "a second apply of the same map acted:" && cat "$work/apply.out" || ok

# ---- restart under load: systemd holds the socket, no connection is refused ----

before=$(ls "$work/sink" | wc -l)
nsenter -t "$spid" -n smtp-source -v -A -s 10 -m 600 -f load@client.test -t user@alpha.test 192.0.2.10:25 > "$work/load.out" 2>&1 &
loadpid=$!
sleep 0.5
for r in 1 2 3; do
	incont systemctl restart vhostmta@alpha.service || bad "systemctl restart vhostmta@alpha.service ($r)"
	sleep 0.3
done
wait "$loadpid"; lrc=$?; loadpid=
# (421s from the drains are expected: smtp-source -A warns and goes on.)
if [ $lrc = 0 ] && ! grep -qi 'refused\|fatal' "$work/load.out"; then ok; else bad "smtp-source during restarts (exit $lrc):"; grep -i 'refused\|fatal' "$work/load.out" | head -5; fi
[ "$(mainpid alpha)" != "$pa" ] && ok || bad "alpha was not restarted under load"
# Every message acknowledged to the client was queued. A session that a
# drain ends between two messages gets 421 for the next one, which is
# then not sent (a real client retries it later): smtp-source -A counts
# it as done, so the acknowledged count may be a little under 600.
acked=$(sed -n 's/.*<<< 250 2.0.0 Ok: queued as \([0-9A-F]*\).*/\1/p' "$work/load.out" | sort -u)
nacked=$(echo "$acked" | grep -c .)
none_lost() { # the journal may lag the replies a little
	incont journalctl -u vhostmta@alpha.service --since "$since" --no-pager > "$work/j.load"
	lost=0
	for id in $acked; do grep -q "$id: from=<load@client.test>, .* (queued)" "$work/j.load" || lost=$((lost + 1)); done
	[ "$lost" = 0 ]
}
wait_for 10 none_lost
echo "systemd: smtp-source 600 messages over 10 sessions, alpha restarted 3 times: $(grep -ci 'refused' "$work/load.out") connections refused, $nacked acknowledged, $(grep -c 'from=<load@client.test>.*(queued)' "$work/j.load") queued by alpha"
[ "$nacked" -ge 550 ] && [ "$lost" = 0 ] && ok || bad "under restarts: $nacked of 600 messages acknowledged, $lost of them not queued"

# ---- a broken map: refused, the instances go on -----------------------------------

sed 's|192.0.2.21|192.0.2.10|' "$work/map2.xml" > "$work/map3.xml"
put_map "$work/map3.xml"
pa=$(mainpid alpha) pb=$(mainpid bravo) pc=$(mainpid charlie)
if apply; then bad "apply accepted a map with a duplicate address"; else
	grep -q 'error:' "$work/apply.out" && grep -q 'nothing changed' "$work/apply.out" && ok || { bad "apply's refusal is unclear:"; cat "$work/apply.out"; }
fi
incont systemctl daemon-reload
for n in alpha bravo charlie; do
	[ "$(active vhostmta@$n.socket)" = active ] && ok || bad "vhostmta@$n.socket stopped after a broken map"
done
[ "$(mainpid alpha)" = "$pa" ] && [ "$(mainpid bravo)" = "$pb" ] && [ "$(mainpid charlie)" = "$pc" ] && ok ||
	bad "an instance was touched by a broken map"
send 192.0.2.21 user@bravo.test > "$work/swaks6"; grep -q '250 2.0.0 Ok: queued' "$work/swaks6" && ok || bad "bravo stopped accepting after a broken map"

# ---- an instance's socket stopped by hand: apply starts it, touches no other --
put_map "$work/map2.xml"
incont systemctl stop vhostmta@charlie.socket
pa=$(mainpid alpha) pb=$(mainpid bravo)
apply || { bad "apply after a stopped socket:"; cat "$work/apply.out"; }
grep -qx 'start vhostmta@charlie.socket (charlie: unchanged, socket inactive)' "$work/apply.out" && ok ||
	{ bad "apply did not start charlie's stopped socket:"; cat "$work/apply.out"; }
[ "$(active vhostmta@charlie.socket)" = active ] && ok || bad "vhostmta@charlie.socket not active again"
[ "$(mainpid alpha)" = "$pa" ] && [ "$(mainpid bravo)" = "$pb" ] && ok || bad "alpha or bravo touched"

# ---- an instance gone from the map: stopped, its units gone, its queue kept -----
send 192.0.2.12 user@charlie.test > /dev/null
sed '/name="charlie"/,/<\/instance>/d' "$work/map2.xml" > "$work/map4.xml"
put_map "$work/map4.xml"
apply || { bad "apply removing charlie:"; cat "$work/apply.out"; }
cat > "$work/expected" <<'EOF'
daemon-reload
stop vhostmta@charlie.socket (charlie: removed)
stop vhostmta@charlie.service (charlie: removed)
EOF
expect_lines "apply's actions removing charlie" "$work/apply.out"
[ "$(active vhostmta@charlie.service)" != active ] && [ "$(active vhostmta@charlie.socket)" != active ] && ok ||
	bad "charlie still runs"
incont test -e "$ETC/instances/charlie" && bad "charlie's configuration is still there" || ok
incont test -e /run/systemd/generator/vhostmta@charlie.socket.d && bad "the generator still writes charlie's socket" || ok
incont test -d /var/lib/private/vhostmta/charlie && ok || bad "charlie's queue directory was removed"
send 192.0.2.12 user@charlie.test | grep -q 'Connection refused' && ok || bad "charlie's address still answers"
[ "$(mainpid alpha)" = "$pa" ] && [ "$(mainpid bravo)" = "$pb" ] && ok || bad "alpha or bravo touched by charlie's removal"

# ---- systemd refuses a start: apply says so, exits 1, and the next apply
# carries the change out (it was kept, not lost with the rendered files) ----
innet ip addr add 192.0.2.30/32 dev lo
nsenter -t "$spid" -n smtp-sink -u postfix 192.0.2.30:25 10 > /dev/null 2>&1 &
blocker=$!
sleep 0.3
sed 's|</map>|  <instance name="delta" myhostname="mail.delta.test">\n    <address>192.0.2.30</address>\n  </instance>\n</map>|' \
	"$work/map4.xml" > "$work/map5.xml"
put_map "$work/map5.xml"
if apply; then bad "apply succeeded although delta's address is taken:"; cat "$work/apply.out"; else
	grep -q 'vhostmta apply: start vhostmta@delta.socket (delta: new): job failed' "$work/apply.out" && ok ||
		{ bad "apply's report of a failed start:"; cat "$work/apply.out"; }
fi
kill "$blocker"; wait "$blocker" 2> /dev/null; blocker=
incont systemctl reset-failed vhostmta@delta.socket
apply && ok || { bad "apply after the address was freed:"; cat "$work/apply.out"; }
grep -qx 'start vhostmta@delta.socket (delta: new)' "$work/apply.out" && ok ||
	{ bad "the second apply did not carry out delta's start:"; cat "$work/apply.out"; }
[ "$(active vhostmta@delta.socket)" = active ] && ok || bad "vhostmta@delta.socket not active"
apply
grep -q 'delta' "$work/apply.out" && { bad "a third apply still acts on delta:"; cat "$work/apply.out"; } || ok

# ---- an instance.cf broken by hand (not in its listen parameters): the
# generator keeps its sockets and says so in the kernel log, the running
# instance goes on, the others are untouched; apply repairs it ----
send 192.0.2.30 postmaster@delta.test > /dev/null
pd=$(mainpid delta) pa=$(mainpid alpha)
[ "$pd" != 0 ] && ok || bad "delta not started by a connection"
incont sh -c "echo 'no_such_parameter = 1' >> $ETC/instances/delta/instance.cf"
incont systemctl daemon-reload
incont grep -qx 'ListenStream=192.0.2.30:25' /run/systemd/generator/vhostmta@delta.socket.d/50-listen.conf && ok ||
	bad "the generator dropped delta's sockets"
incont journalctl -k --no-pager | grep -q 'vhostmta-generator: .*delta/instance.cf has errors' && ok ||
	bad "no kernel log line from the generator about delta"
[ "$(incont systemctl show -p LoadState --value vhostmta@delta.socket)" = loaded ] && ok || bad "delta's socket unit not loaded"
[ "$(mainpid delta)" = "$pd" ] && ok || bad "delta stopped by a daemon-reload"
send 192.0.2.30 postmaster@delta.test > "$work/swaks.delta"
grep -q '^<-  220' "$work/swaks.delta" && ok || { bad "delta no longer answers"; cat "$work/swaks.delta"; }
[ "$(mainpid alpha)" = "$pa" ] && [ "$(active vhostmta@alpha.socket)" = active ] && ok || bad "alpha touched"
apply || { bad "apply repairing delta:"; cat "$work/apply.out"; }
grep -qx 'reload vhostmta@delta.service (delta: reload)' "$work/apply.out" && ok || { bad "apply did not reload delta:"; cat "$work/apply.out"; }
incont systemctl restart vhostmta@delta.service && [ "$(active vhostmta@delta.service)" = active ] && ok ||
	{ bad "delta cannot be restarted after apply"; incont journalctl --no-pager -n 20 | grep delta; }
send 192.0.2.30 postmaster@delta.test | grep -q '^<-  220' && ok || bad "delta does not answer after apply"

# ---- STARTTLS inside the sandbox: the dynamic user cannot read a key that
# is root's; a drop-in gives it the key's group (docs/instance.md, TLS) ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=mail.alpha.test \
	-keyout "$work/alpha.key" -out "$work/alpha.pem" 2> /dev/null || bad "openssl cannot make a certificate"
incont sh -c 'getent group ssl-cert > /dev/null || groupadd -r ssl-cert; mkdir -p /etc/vhostmta/tls'
incont sh -c 'cat > /etc/vhostmta/tls/alpha.pem' < "$work/alpha.pem"
incont sh -c 'cat > /etc/vhostmta/tls/alpha.key' < "$work/alpha.key"
incont sh -c 'chown root:ssl-cert /etc/vhostmta/tls/alpha.key && chmod 0640 /etc/vhostmta/tls/alpha.key && chmod 0644 /etc/vhostmta/tls/alpha.pem'
sed 's|<domain name="alpha.test"/>|<domain name="alpha.test"/><param name="smtpd_tls_security_level" value="may"/><param name="smtpd_tls_cert_file" value="/etc/vhostmta/tls/alpha.pem"/><param name="smtpd_tls_key_file" value="/etc/vhostmta/tls/alpha.key"/>|' \
	"$work/map4.xml" > "$work/map5.xml"
put_map "$work/map5.xml"
since=$(incont date '+%Y-%m-%d %H:%M:%S')
sleep 1
apply || { bad "apply with TLS parameters:"; cat "$work/apply.out"; }
grep -qx 'reload vhostmta@alpha.service (alpha: reload)' "$work/apply.out" && ok || { bad "apply did not reload alpha:"; cat "$work/apply.out"; }
key_refused() { incont journalctl -u vhostmta@alpha.service --since "$since" --no-pager | grep -q 'cannot load the private key /etc/vhostmta/tls/alpha.key.*STARTTLS is not offered'; }
wait_for 10 key_refused && ok || { bad "alpha read a key it should not be able to read:"; incont journalctl -u vhostmta@alpha.service --since "$since" --no-pager | tail -5; }
tls_send() { innet swaks --server 192.0.2.10:25 --tls --from sender@client.test --to user@alpha.test \
	--ehlo client.test --timeout 20 2>&1; }
tls_send > "$work/swaks.tls0"; grep -q 'STARTTLS' "$work/swaks.tls0" && ! grep -q 'queued as' "$work/swaks.tls0" && ok ||
	{ bad "STARTTLS worked without the key:"; tail -5 "$work/swaks.tls0"; }
incont mkdir -p /etc/systemd/system/vhostmta@alpha.service.d
printf '[Service]\nSupplementaryGroups=ssl-cert\n' | incont sh -c 'cat > /etc/systemd/system/vhostmta@alpha.service.d/tls.conf'
incont systemctl daemon-reload
incont systemctl restart vhostmta@alpha.service || bad "restart of alpha with the drop-in"
tls_send > "$work/swaks.tls1"
grep -q 'queued as' "$work/swaks.tls1" && grep -q 'TLS started' "$work/swaks.tls1" && ok ||
	{ bad "no mail over STARTTLS with the key's group:"; tail -8 "$work/swaks.tls1"; }
incont journalctl -u vhostmta@alpha.service --since "$since" --no-pager | grep -q 'Anonymous TLS connection established from' && ok ||
	bad "alpha logged no TLS session"

# ---- deferred mail survives a stop of the target: the next start of
# vhostmta.target starts its instance (vhostmta-wake.service) without any
# connection; an instance with an empty queue stays stopped ----
kill "$sinkpid"; wait "$sinkpid" 2> /dev/null; sinkpid=
qfiles() { incont find "/var/lib/private/vhostmta/$1/incoming" "/var/lib/private/vhostmta/$1/deferred" -type f 2> /dev/null | wc -l; }
deferred() { [ "$(incont find /var/lib/private/vhostmta/alpha/deferred -type f 2> /dev/null | wc -l)" -gt 0 ]; }
send 192.0.2.10 user@alpha.test > "$work/swaks.wake"
grep -q '250 2.0.0 Ok: queued' "$work/swaks.wake" && ok || { bad "mail to alpha not accepted (sink down)"; tail -5 "$work/swaks.wake"; }
wait_for 30 deferred && ok || bad "alpha's message was not deferred with the sink down"
[ "$(qfiles bravo)" = 0 ] && ok || bad "bravo's queue is not empty ($(qfiles bravo) files)"
incont systemctl stop vhostmta.target || bad "systemctl stop vhostmta.target"
[ "$(active vhostmta@alpha.service)" != active ] && [ "$(active vhostmta@bravo.service)" != active ] && ok ||
	bad "an instance still runs after stopping vhostmta.target"
[ "$(active vhostmta@alpha.socket)" != active ] && ok || bad "alpha's socket still active after stopping vhostmta.target"
deferred && ok || bad "alpha's deferred message is gone after the stop"
since=$(incont date '+%Y-%m-%d %H:%M:%S')
sleep 1
incont systemctl start vhostmta.target || bad "systemctl start vhostmta.target"
alpha_up() { [ "$(active vhostmta@alpha.service)" = active ]; }
wake_done() { incont journalctl -u vhostmta-wake.service --since "$since" --no-pager > "$work/j.wake" &&
	grep -q 'vhostmta-wake.service: Deactivated successfully\|Finished vhostmta-wake.service\|Failed' "$work/j.wake"; }
wait_for 30 alpha_up && ok || { bad "alpha, with deferred mail, not started by vhostmta.target"; incont journalctl -u vhostmta-wake.service --no-pager | tail -5; }
wait_for 30 wake_done && ok || { bad "vhostmta-wake.service did not finish:"; cat "$work/j.wake"; }
[ "$(incont systemctl show -p Result --value vhostmta-wake.service)" = success ] && ok ||
	{ bad "vhostmta-wake.service failed:"; cat "$work/j.wake"; }
grep -q 'start vhostmta@alpha.service (alpha: [0-9]* queue files*)' "$work/j.wake" && ok || { bad "no start line for alpha from vhostmta wake:"; cat "$work/j.wake"; }
grep -q 'vhostmta@bravo' "$work/j.wake" && bad "vhostmta wake started bravo (empty queue)" || ok
[ "$(active vhostmta@bravo.service)" = inactive ] && ok || bad "bravo, with an empty queue, was started ($(active vhostmta@bravo.service))"
[ "$(active vhostmta@bravo.socket)" = active ] && [ "$(active vhostmta@alpha.socket)" = active ] && ok || bad "sockets not active after starting vhostmta.target"

echo "systemd: $pass passed, $fail failed"
[ "$fail" = 0 ]
