#!/bin/sh
# demo.sh VHOSTMTA: the example map checked, listed and rendered; what
# `make run` shows until the instances run.
set -eu
vhostmta=$1
top=$(cd "$(dirname "$0")/.." && pwd)
map=$top/templates/example-map.xml
out=$top/build/demo

echo "== vhostmta check: the example map"
"$vhostmta" check -m "$map"
echo
echo "== vhostmta list: one instance per address"
"$vhostmta" list -m "$map"
echo
echo "== vhostmta render -o $out"
"$vhostmta" render -m "$map" -o "$out"
echo
for d in "$out"/*/; do
	echo "== ${d}instance.cf"
	cat "${d}instance.cf"
	echo
done
echo "== each instance.cf read back by the parameter parser"
for d in "$out"/*/; do
	"$vhostmta" params -n -c "${d}instance.cf" myhostname inet_interfaces smtp_bind_address
done
