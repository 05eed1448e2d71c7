#!/bin/sh
# map.sh VHOSTMTA [N]: vhostmta check and render on a generated map of N
# instances and 2N domains (default 10,000). Prints the median of three
# runs of each step, the peak RSS, and the goals.
set -eu
vhostmta=$1
n=${2:-10000}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
command -v /usr/bin/time >/dev/null || { echo "bench: /usr/bin/time missing (Debian package: time)" >&2; exit 1; }

sh "$here/gen-map.sh" "$n" > "$work/map.xml"

# measure LABEL CMD...: run CMD, append "seconds maxrss-kB" to $work/LABEL.
measure() {
	label=$1; shift
	/usr/bin/time -f '%e %M' -o "$work/t" "$@" > "$work/out" 2>&1 || {
		echo "bench: $label failed:" >&2; cat "$work/out" >&2; exit 1; }
	cat "$work/t" >> "$work/$label"
}
median() { sort -n "$work/$1" | awk '{ s[NR] = $1; m[NR] = $2 } END { print s[2], m[2] }'; }

for run in 1 2 3; do
	measure check "$vhostmta" check -m "$work/map.xml"
	rm -rf "$work/out.d"
	measure render "$vhostmta" render -m "$work/map.xml" -o "$work/out.d"
	measure rerender "$vhostmta" render -m "$work/map.xml" -o "$work/out.d"
	grep -q ' 0 files written' "$work/out" || { echo "bench: re-render wrote files:" >&2; cat "$work/out" >&2; exit 1; }
done

size=$(wc -c < "$work/map.xml")
files=$(find "$work/out.d" -type f | wc -l)
printf 'vhostmta check/render: map of %s instances, %s domains, %s bytes; %s files rendered\n' \
	"$n" "$((2 * n))" "$size" "$files"
printf '%-26s %9s %12s   %s\n' step seconds "peak RSS" goal
set -- $(median check);    printf '%-26s %9s %9s MB   %s\n' "check" "$1" "$(($2 / 1024))" "< 1 s"
set -- $(median render);   printf '%-26s %9s %9s MB   %s\n' "render (empty dir)" "$1" "$(($2 / 1024))" "< 3 s"
set -- $(median rerender); printf '%-26s %9s %9s MB   %s\n' "render (nothing changed)" "$1" "$(($2 / 1024))" "< 0.5 s, 0 files written"
echo "(median of 3 runs; re-render checked to write no file)"
