#!/bin/sh
# demo.sh VHOSTMTA: the example map checked, listed and rendered, then its
# three instances started on 127.0.0.2-4 (port 2525), one message sent
# through each, and what each queued shown. The manager's `vhostmta run`
# (a later step) will start the fleet itself; this script does it by hand.
set -u
vhostmta=$1
instance=$(dirname "$vhostmta")/vhostmta-instance
top=$(cd "$(dirname "$0")/.." && pwd)
map=$top/templates/example-map.xml
out=$top/build/demo
state=$out/state
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
echo "== vhostmta render -o $out --state-dir $state"
"$vhostmta" render -m "$map" -o "$out" --state-dir "$state" || exit 1
echo
echo "== ${out}/alpha/instance.cf"
cat "$out/alpha/instance.cf"
echo
rm -rf "$state"
mkdir -p "$state"
for n in alpha bravo charlie; do
	"$instance" -c "$out/$n/instance.cf" > "$out/$n.log" 2>&1 &
	pids="$pids $!"
done
# Wait until the three listen (at most 5 s).
i=0
while [ "$(ss -ltn 2>/dev/null | grep -cE '127\.0\.0\.[234]:2525')" -lt 3 ] && [ $i -lt 50 ]; do
	sleep 0.1; i=$((i + 1))
done
echo "== three instances, each listening on its own address only:"
ss -ltnp 2>/dev/null | grep -E '127\.0\.0\.[234]:2525' | awk '{print "   " $4, $6}'
echo
for n in alpha bravo charlie; do
	addr=$(awk '/^inet_interfaces/ {print $3}' "$out/$n/instance.cf")
	echo "== a message to user@$n.test through $n ($addr:2525)"
	if command -v swaks >/dev/null; then
		swaks --server "$addr:2525" --from "demo@example.test" --to "user@$n.test" \
			--header "Subject: vhostmta demo" 2>&1 | grep -E '^<- +(220|250 2\.0\.0)|^ -> MAIL' | sed 's/^/   /'
	else
		echo "   (swaks is not installed: ./configure --install-deps installs it)"
	fi
	echo "   queued in $state/$n/incoming: $(ls "$state/$n/incoming" | tr '\n' ' ')"
	echo "   log: $(grep -m1 'from=<demo' "$out/$n.log")"
	echo
done
cat <<EOT
Each instance received on its own address, with its own name in the
greeting, and queued the message durably (the delivery side, which sends
it on from that same address with that same EHLO name, comes next).
The demo stopped them again; to run one yourself:
  $instance -c $out/alpha/instance.cf &
  swaks --server 127.0.0.2:2525 --from you@example.test --to user@alpha.test
The Postfix backend runs the same map with real Postfix: docs/postfix.md.
EOT
