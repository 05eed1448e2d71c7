# lib.sh: what the benchmarks share (sourced, not run). The sourcing
# script sets $bench (its name, for messages) and, before calling
# ns_drain, $ns (its network namespace).

die() { echo "bench/$bench: $*" >&2; exit 1; }

# need CMD PACKAGE: note PACKAGE when CMD is missing; install_missing then
# installs what was noted, and only that.
missing=
need() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }
install_missing() {
	[ -n "$missing" ] || return 0
	pkgs=$(printf '%s\n' $missing | sort -u | tr '\n' ' ')
	echo "bench/$bench: installing $pkgs" >&2
	case " $pkgs " in *" postfix "*)
		echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections ;;
	esac
	export DEBIAN_FRONTEND=noninteractive
	{ apt-get install -y -q --no-install-recommends $pkgs ||
	  { apt-get update -q && apt-get install -y -q --no-install-recommends $pkgs; }
	} >&2 || die "cannot install $pkgs"
}

# ns_drain TICKS: every process in $ns gets TERM, then KILL, each with up
# to TICKS tenths of a second to end; then the namespace is deleted.
ns_drain() {
	for sig in TERM KILL; do
		pids=$(ip netns pids "$ns" 2>/dev/null)
		[ -n "$pids" ] || break
		kill -s $sig $pids 2>/dev/null
		i=0
		while [ $i -lt "$1" ] && [ -n "$(ip netns pids "$ns" 2>/dev/null)" ]; do
			sleep 0.1; i=$((i + 1))
		done
	done
	ip netns del "$ns"
}

nsx() { ip netns exec "$ns" "$@"; }
now() { date +%s%N; }
median() { # FILE [COLUMN]: the median of a column of numbers
	awk -v c="${2:-1}" '{ print $c }' "$1" | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}
na() { [ -f "$work/$1/na" ]; }
procs() { [ -s "$1" ] && median "$1" 3 || echo n/a; }
