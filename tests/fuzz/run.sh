#!/bin/sh
# run.sh NAME DIR SECONDS MAXLEN: run the harness DIR/fuzz_NAME for SECONDS
# on a copy of its seed corpus, then print one summary line. Exit 1 when
# libFuzzer found something (the input is kept in DIR/findings/).
set -u
name=$1 dir=$2 secs=$3 maxlen=$4
bin=$dir/fuzz_$name
seeds=tests/fuzz/corpus/$name
corpus=$dir/corpus/$name
findings=$dir/findings
log=$dir/$name.log

# The harnesses' scratch files (queue commits fsync) go to memory when
# the caller did not choose a place.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
	TMPDIR=/dev/shm
	export TMPDIR
fi

[ -x "$bin" ] || { echo "$name: $bin is not built (make fuzz-build)"; exit 1; }
mkdir -p "$corpus" "$findings"
# The seeds are copied, never fuzzed in place: the tree's corpus stays curated.
[ -d "$seeds" ] && cp -p "$seeds"/* "$corpus"/ 2>/dev/null
dict=
[ -f "tests/fuzz/$name.dict" ] && dict=-dict=tests/fuzz/$name.dict

"$bin" -max_total_time="$secs" -max_len="$maxlen" -timeout=20 -print_final_stats=1 \
	-artifact_prefix="$findings/$name-" $dict "$corpus" > "$log" 2>&1
rc=$?

runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
time=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.* \(cov: [0-9]*\) \(ft: [0-9]*\).*/\1 \2/p')
if [ $rc = 0 ]; then
	echo "$name: ${runs:-?} runs in ${time:-$secs} s, no finding (${cov:-no coverage line})"
	exit 0
fi
crash=$(sed -n 's/.*Test unit written to \(.*\)/\1/p' "$log" | tail -n 1)
echo "$name: FINDING after ${runs:-?} runs: ${crash:-see $log}"
grep -E '^(==[0-9]+==ERROR|SUMMARY|.*invariant broken|.*runtime error)' "$log" | head -n 5
echo "$name: full report in $log"
exit 1
