# lib.sh: assertions shared by the integration tests (sourced, not run).
# The sourcing script sets $work (a scratch directory); results count in
# $pass and $fail, and finish prints "NAME: N passed, M failed".
pass=0 fail=0

# preflight NAME NEED...: SKIP (exit 0) unless root; otherwise FAIL (exit
# 1) unless every NEED is there: a command, an executable path (with a
# /), or user:NAME. What the caller noted in $missing counts too.
preflight() {
	_name=$1; shift
	if [ "$(id -u)" != 0 ]; then
		echo "$_name.sh: SKIP: needs root (network namespaces)"
		exit 0
	fi
	for _t; do
		case $_t in
		user:*) id "${_t#user:}" > /dev/null 2>&1 || missing="${missing:-} $_t" ;;
		*/*) [ -x "$_t" ] || missing="${missing:-} $_t" ;;
		*) command -v "$_t" > /dev/null 2>&1 || missing="${missing:-} $_t" ;;
		esac
	done
	if [ -n "${missing:-}" ]; then
		echo "FAIL: missing:$missing (./configure --install-deps installs them)"
		echo "$_name: 0 passed, 1 failed"
		exit 1
	fi
}

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# expect CODE DESCRIPTION CMD...: CMD exits with CODE; output in $work/out, $work/err.
expect() {
	code=$1 what=$2; shift 2
	"$@" > "$work/out" 2> "$work/err"
	rc=$?
	if [ "$rc" = "$code" ]; then ok; else
		bad "$what: exit $rc, expected $code"; sed 's/^/  | /' "$work/out" "$work/err"; fi
}
has() { # FILE TEXT DESCRIPTION
	if grep -qF -- "$2" "$1"; then ok; else bad "$3: '$2' not in $(basename "$1")"; sed 's/^/  | /' "$1"; fi
}
eq() { # GOT WANT DESCRIPTION
	if [ "$1" = "$2" ]; then ok; else bad "$3: got '$1', expected '$2'"; fi
}
finish() { # NAME
	echo "$1: $pass passed, $fail failed"
	[ "$fail" = 0 ]
}

# nsx CMD...: run CMD in the test's network namespace ($ns).
nsx() { ip netns exec "$ns" "$@"; }
# listening ADDR:PORT: something in the namespace listens there.
listening() { nsx ss -Hltn | awk '{ print $4 }' | grep -qxF "$1"; }
# await SECONDS CMD...: poll CMD every 0.1 s until it succeeds.
await() {
	_await=$(($1 * 10)); shift
	while ! "$@"; do
		_await=$((_await - 1))
		[ $_await -gt 0 ] || return 1
		sleep 0.1
	done
}
# ns_drain NS: end whatever still runs in the namespace (every process in
# it is the test's: 3 s to finish, then TERM, then KILL), then delete it.
ns_drain() {
	_i=0
	while [ -n "$(ip netns pids "$1" 2> /dev/null)" ] && [ $_i -lt 60 ]; do
		case $_i in
		30) kill $(ip netns pids "$1") 2> /dev/null ;;
		50) kill -9 $(ip netns pids "$1") 2> /dev/null ;;
		esac
		sleep 0.1
		_i=$((_i + 1))
	done
	ip netns del "$1"
}

# alive PID: running (a zombie is not); dead PID: not running.
alive() { [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2> /dev/null; }
dead() { ! alive "$1"; }
# hdr FILE NAME: the value of the first NAME: header line of FILE.
hdr() { sed -n "s/^$2: //p" "$1" | tr -d '\r' | head -n 1; }
# has_msg DIR TOKEN: the file in DIR (a sink's dumps) holding TOKEN, in $msg.
has_msg() { msg=$(grep -lF -- "$2" "$1"/* 2> /dev/null | head -n 1); [ -n "$msg" ]; }
# ns_cleanup RC [PID...]: the EXIT trap of a namespace test (trap
# 'ns_cleanup $?' EXIT): end $pids and the PIDs given, drain and delete
# the namespace $ns, remove $work (kept with KEEP=1), exit with RC.
ns_cleanup() {
	_rc=$1; shift
	trap - EXIT INT TERM
	for _p in $pids "$@"; do kill "$_p" 2> /dev/null; done
	if [ -e "/run/netns/$ns" ]; then
		ns_drain "$ns"
	fi
	for _p in $pids "$@"; do wait "$_p" 2> /dev/null; done
	[ -n "${KEEP:-}" ] || rm -rf "$work"
	exit "$_rc"
}

# logtail LOG: its last lines, indented, for a failure report.
logtail() { tail -n 25 "$1" | sed 's/^/  log | /'; }
# logged LOG TEXT...: every TEXT on one line of LOG.
logged() {
	_f=$1; shift
	_l=$(cat "$_f")
	for _t; do _l=$(printf '%s\n' "$_l" | grep -F -- "$_t") || return 1; done
}
# sanitizer_clean LOG DESCRIPTION: no sanitizer report, fatal or panic in LOG.
sanitizer_clean() {
	if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error|fatal:|panic:' "$1"; then
		bad "$2: the log has a sanitizer report or a fatal error"
		grep -E -A15 'AddressSanitizer|LeakSanitizer|runtime error|fatal:|panic:' "$1" | head -n 40 | sed 's/^/  | /'
	else ok; fi
}
