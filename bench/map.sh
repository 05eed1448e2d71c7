#!/bin/sh
# map.sh VHOSTMTA [N]: vhostmta check and render on a generated map of N
# instances and 2N domains (default 10,000). Prints the median of three
# runs of each step, the peak RSS, and the goals. A first render creates
# N directories and 2N+1 files, so it is measured on tmpfs (the program's
# own cost) and on the disk under $TMPDIR beside the yardstick of the
# same run: `cp -r` of the same tree onto the same disk.
set -eu
vhostmta=$1
n=${2:-10000}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-bench.XXXXXX")
mem=
[ -d /dev/shm ] && mem=$(mktemp -d /dev/shm/vhostmta-bench.XXXXXX)
trap 'rm -rf "$work" $mem' EXIT INT TERM
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
row() { # LABEL STEP GOAL
	set -- "$1" "$2" "$3" $(median "$2")
	printf '%-34s %8s s %6s MB   %s\n' "$1" "$4" "$(($5 / 1024))" "$3"
}

for run in 1 2 3; do
	measure check "$vhostmta" check -m "$work/map.xml"
	rm -rf "$work/out.d" "$work/cp.d"
	sync
	measure render_disk "$vhostmta" render -m "$work/map.xml" -o "$work/out.d"
	measure rerender_disk "$vhostmta" render -m "$work/map.xml" -o "$work/out.d"
	grep -q ' 0 files written' "$work/out" || { echo "bench: re-render wrote files:" >&2; cat "$work/out" >&2; exit 1; }
	if [ -n "$mem" ]; then
		rm -rf "$mem/out.d"
		measure render_mem "$vhostmta" render -m "$work/map.xml" -o "$mem/out.d"
		measure rerender_mem "$vhostmta" render -m "$work/map.xml" -o "$mem/out.d"
		grep -q ' 0 files written' "$work/out" || { echo "bench: re-render wrote files" >&2; exit 1; }
	fi
	# The yardstick: the same tree written to the same disk by cp -r.
	sync
	measure cp_disk cp -r "${mem:-$work}/out.d" "$work/cp.d"
done

files=$(find "$work/out.d" -type f | wc -l)
printf 'vhostmta check/render: %s instances, %s domains, map of %s bytes, %s files rendered\n' \
	"$n" "$((2 * n))" "$(wc -c < "$work/map.xml")" "$files"
printf '%-34s %10s %9s   %s\n' step time "peak RSS" goal
row "check" check "< 1 s"
[ -n "$mem" ] && row "render, empty dir (tmpfs)" render_mem "< 3 s"
row "render, empty dir (disk)" render_disk "< 3 s"
row "  yardstick: cp -r of that tree" cp_disk "same disk, same run"
set -- $(median render_disk) $(median cp_disk)
echo "  render/cp ratio on disk: $(awk -v a="$1" -v b="$3" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')"
[ -n "$mem" ] && row "render, nothing changed (tmpfs)" rerender_mem "< 0.5 s, writes nothing"
row "render, nothing changed (disk)" rerender_disk "< 0.5 s, writes nothing"
echo "(median of 3 runs; every re-render checked to write no file; disk = ${TMPDIR:-/tmp}, $(df -T "$work" | awk 'NR==2 {print $2}'))"
