#!/bin/sh
# demo.sh VHOSTMTA: the example map checked and listed, then run by
# `vhostmta run` (three instances on 127.0.0.2-4, port 2525), one message sent
# through each to smtp-sink on 127.0.0.100, and the address and EHLO name
# each arrived with shown.
set -u
vhostmta=$1
instance=$(dirname "$vhostmta")/vhostmta-instance
top=$(cd "$(dirname "$0")/.." && pwd)
map=$top/templates/example-map.xml
# Under /tmp, not the source tree: the instances run as an unprivileged
# user, who must reach their configuration (a clone under /root is 0700).
base=${TMPDIR:-/tmp}/vhostmta-demo
rm -rf "$base"
mkdir -p "$base"
chmod 755 "$base"
out=$base/instances
state=$base/state
pids=

stop() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
}
trap stop EXIT INT TERM

echo "== vhostmta check: the example map"
"$vhostmta" check -m "$map" || exit 1
echo
echo "== vhostmta list: one instance per address"
"$vhostmta" list -m "$map"
echo
echo "== vhostmta run -m templates/example-map.xml -o $out --state-dir $state"
echo "   (the supervisor without systemd: it renders the map, binds every"
echo "   instance's addresses and starts one vhostmta-instance per address,"
echo "   as an unprivileged user, with the sockets passed as systemd would)"
rm -rf "$state"
mkdir -p "$state"
"$vhostmta" run -m "$map" -o "$out" --state-dir "$state" > "$base/run.log" 2>&1 &
pids="$pids $!"
# Wait until the three listen (at most 10 s).
i=0
while [ "$(ss -ltn 2>/dev/null | grep -cE '127\.0\.0\.[234]:2525')" -lt 3 ] && [ $i -lt 100 ]; do
	sleep 0.1; i=$((i + 1))
done
sleep 0.3
"$vhostmta" status -o "$out" | sed 's/^/   /'
echo
echo "== ${out}/alpha/instance.cf (rendered)"
sed 's/^/   /' "$out/alpha/instance.cf"
echo

# The destinations: smtp-sink (Postfix's test server) on 127.0.0.100 writes
# every message it gets, with the client's address (X-Client-Addr) and EHLO
# name (X-Helo-Args): alpha.test's next hop (SMTP, port 2526), bravo.test's
# (LMTP, port 2424), and port 25 for mail to the address literal
# [127.0.0.100], the outbound example.
sink=$base/sink
rm -rf "$sink"
mkdir -p "$sink"
if command -v smtp-sink >/dev/null && id postfix >/dev/null 2>&1; then
	chown postfix "$sink"
	chmod 755 "$base"
	for l in 127.0.0.100:2526 "-L 127.0.0.100:2424" 127.0.0.100:25; do
		set -- $l
		smtp-sink -u postfix -d "$sink/%M." "$@" 20 >> "$base/sink.log" 2>&1 &
		pids="$pids $!"
	done
	sleep 0.3
else
	echo "(smtp-sink is not installed: ./configure --install-deps installs it)"
fi
hdr() { sed -n "s/^$2: //p" "$1" | tr -d '\r' | head -n 1; }
send() { # NAME TO WHAT
	addr=$(awk '/^inet_interfaces/ {print $3}' "$out/$1/instance.cf")
	echo "== $3: a message to $2 through $1 ($addr:2525)"
	if ! command -v swaks >/dev/null; then
		echo "   (swaks is not installed: ./configure --install-deps installs it)"
		return
	fi
	tok=demo-$1-$$
	swaks --server "$addr:2525" --from "demo@example.test" --to "$2" \
		--header "Subject: vhostmta demo $tok" 2>&1 | grep -E '^<- +(220|250 2\.0\.0)|^ -> MAIL' | sed 's/^/   /'
	i=0 msg=
	while [ -z "$msg" ] && [ $i -lt 50 ]; do
		msg=$(grep -lF "$tok" "$sink"/* 2>/dev/null | head -n 1)
		sleep 0.1; i=$((i + 1))
	done
	echo "   log: $(grep -m1 "vhostmta/$1: .*status=" "$base/run.log")"
	if [ -n "$msg" ]; then
		echo "   arrived: X-Client-Addr: $(hdr "$msg" X-Client-Addr), X-Helo-Args: $(hdr "$msg" X-Helo-Args)"
	else
		echo "   not delivered yet; still queued: $("$instance" -c "$out/$1/instance.cf" --list-queue)"
	fi
	echo
}
send alpha user@alpha.test "inbound, SMTP next hop"
send bravo user@bravo.test "inbound, LMTP next hop"
send charlie 'user@[127.0.0.100]' "outbound"
cat <<EOT
Each instance received on its own address, with its own name in the
greeting, queued the message durably and delivered it from that same
address (X-Client-Addr) with that same EHLO name (X-Helo-Args).
The demo stopped the fleet again; to run it yourself:
  $vhostmta run -m $map -o $out --state-dir $state &
  swaks --server 127.0.0.2:2525 --from you@example.test --to user@alpha.test
  $vhostmta status -o $out       # the instances, their pids and queues
  $vhostmta queue -o $out        # what is queued, like mailq
The Postfix backend runs the same map with real Postfix: docs/postfix.md.
EOT
