#!/bin/sh
# units.sh: the systemd units as built (in $UNITDIR) pass systemd-analyze
# verify, with an instance name filled in for templates.
set -u
: "${UNITDIR:?}"
command -v systemd-analyze >/dev/null || { echo "units: FAIL: systemd-analyze missing (Debian package: systemd)"; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-units.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
pass=0 fail=0
for u in "$UNITDIR"/*; do
	name=$(basename "$u")
	case $name in *@.*) inst=$(echo "$name" | sed 's/@\./@alpha./') ;; *) inst=$name ;; esac
	cp "$u" "$work/$inst"
	if out=$(cd "$work" && systemd-analyze verify --man=no "./$inst" 2>&1) && [ -z "$out" ]; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1)); echo "FAIL: systemd-analyze verify $inst:"; echo "$out"
	fi
done
[ "$pass" -gt 0 ] || { echo "units: FAIL: no unit in $UNITDIR"; exit 1; }
echo "units: $pass passed, $fail failed"
[ "$fail" = 0 ]
