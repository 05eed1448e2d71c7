#!/bin/sh
# fleet.sh VHOSTMTA: `vhostmta run` with a fleet of instances. In a private
# network namespace with one address per instance on lo (127.1.x.y), a map
# of $FLEET_N instances (default 1000) is started with `vhostmta run`, and
# measured: the time until `vhostmta status` shows every instance running
# (and until every address accepts TCP), the memory of the idle fleet
# (summed RSS and PSS of the supervisor and every instance), a SIGHUP
# that changes one instance's parameter (until it has reloaded) and one
# that changes another's address (until it is restarted and ready), each
# checked to touch that instance only, and the stop (SIGTERM until the
# supervisor exits). vhostmta renders into a tmpfs, as into its default
# /run/vhostmta/instances; the queues are on disk under $TMPDIR.
#
# Beside them, Postfix for the same things, at a smaller fleet
# ($PF_FLEET_N, default 100; 0 leaves it out): a Postfix instance takes
# about 0.13 s of this machine's two cores to start, and four processes
# with some 26 MB of RSS (4 MB of PSS) once idle, so three starts of a
# thousand would take most of ten minutes; the per-instance rows compare
# the two. Three runs each, interleaved; the median is shown. Needs root.
#
# A backend is one function, backend_NAME ACTION (see backend_vhostmta);
# add its name to $backends and the table gets its column.
set -eu
[ $# -ge 1 ] || { echo "usage: sh bench/fleet.sh VHOSTMTA" >&2; exit 2; }
vhostmta=$1
PATH=$PATH:/usr/sbin:/sbin
export PATH

fleet_n=${FLEET_N:-1000} pf_fleet_n=${PF_FLEET_N:-100}
runs=3 idle=3 settle=1 port=25
spare=127.2.0.1		# the address the restarted instance moves to
ready_timeout=180	# s, for a whole fleet to start
change_timeout=20	# s, for one change to be applied
backends="vhostmta postfix"

bench=fleet.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "needs root (network namespace, Postfix instances); run as root: sh bench/fleet.sh $vhostmta"
[ -x "$vhostmta" ] || die "$vhostmta: no such program"
case $fleet_n$pf_fleet_n in *[!0-9]*) die "FLEET_N and PF_FLEET_N must be numbers" ;; esac
[ "$fleet_n" -ge 2 ] && [ "$fleet_n" -le 60000 ] || die "FLEET_N must be 2 to 60000"
[ "$pf_fleet_n" -le 60000 ] || die "PF_FLEET_N must be at most 60000"

# Install what is missing, and only that.
need postfix postfix; need postconf postfix
need ip iproute2; need ss iproute2; need nsenter util-linux; need ps procps
perl -MTime::HiRes -e 1 2>/dev/null || missing="$missing perl"
install_missing

# The private namespace and the work directory (on disk under $TMPDIR, as
# the queues would be), and their cleanup on every exit path: every
# process in the namespace is ours, and so is the log stamper.
ns=vhostmta-fleetbench-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-fleetbench.XXXXXX")
# vhostmta renders into a tmpfs when there is one, as it does by default
# (/run/vhostmta/instances).
run_dir=$(mktemp -d /dev/shm/vhostmta-fleetbench.XXXXXX 2>/dev/null) || run_dir=$(mktemp -d "$work/run.XXXXXX")
chmod 755 "$work" "$run_dir"	# the instances' user reads its instance.cf below them
sup_pid= stamp_pid= watch_pids= masters=
cleanup() {
	set +e
	trap - EXIT INT TERM HUP
	if ip netns list 2>/dev/null | grep -q "^$ns\\b"; then
		ns_drain 100
	fi
	[ -z "$stamp_pid$watch_pids" ] || kill $stamp_pid $watch_pids 2>/dev/null
	wait 2>/dev/null
	rm -rf "$work" "$run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# addr I: the address of instance fI, 127.1.0.1 onwards, 250 to a /24.
addr() { echo "127.1.$((($1 - 1) / 250)).$((($1 - 1) % 250 + 1))"; }
max=$fleet_n
[ "$pf_fleet_n" -le "$max" ] || max=$pf_fleet_n
ip netns add "$ns"
ip -n "$ns" link set lo up
awk -v n="$max" -v spare="$spare" 'BEGIN {
	for (i = 1; i <= n; i++)
		printf "addr add 127.1.%d.%d/8 dev lo\n", int((i - 1) / 250), (i - 1) % 250 + 1
	printf "addr add %s/8 dev lo\n", spare
}' > "$work/addrs"
ip -n "$ns" -batch "$work/addrs" || die "cannot add the fleet's addresses"

ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f\n", (b - a) / 1e6 }'; }
# listening ADDR-REGEX: how many sockets listen on $port at a matching
# address (nsenter, not ip netns exec: cheaper, polled every 5-50 ms).
listening() {
	nsenter --net="/run/netns/$ns" ss -Hltn "sport = :$port" |
		awk -v re="^($1):$port\$" '$4 ~ re { n++ } END { print n + 0 }'
}
fleet_re='127\.1\.[0-9]+\.[0-9]+'

# fleet_mem PID...: "RSS-kB PSS-kB PROCESSES" summed over every PID and all
# its descendants, from one snapshot of the process table.
fleet_mem() {
	ps -e -o pid=,ppid=,rss= | awk -v roots="$*" '
		{ pp[$1] = $2; rss[$1] = $3 }
		END {
			n = split(roots, r, " ")
			for (i = 1; i <= n; i++) if (r[i] in pp) t[r[i]] = 1
			do { more = 0
				for (p in pp) if (!(p in t) && (pp[p] in t)) { t[p] = 1; more = 1 }
			} while (more)
			for (p in t) {
				k += rss[p]; m++
				f = "/proc/" p "/smaps_rollup"
				while ((getline l < f) > 0) if (l ~ /^Pss:/) { split(l, w); s += w[2] }
				close(f)
			}
			if (!m) exit 1
			print k, s, m
		}'
}

# map N FILE [RELOAD-NAME [RESTART-NAME]]: a fleet of N instances f1..fN,
# one address each (port 25, smtp_bind_address set as the example map
# does for its loopback addresses). RELOAD-NAME gets one more parameter
# (a reload); RESTART-NAME moves to $spare (a restart).
map() {
	awk -v n="$1" -v rl="${3:-}" -v rs="${4:-}" -v spare="$spare" 'BEGIN {
		print "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
		print "<map xmlns=\"urn:vhostmta:map:1\">"
		print "  <defaults>"
		print "    <param name=\"mynetworks\" value=\"127.0.0.0/8\"/>"
		print "    <param name=\"smtpd_listen_port\" value=\"25\"/>"
		print "  </defaults>"
		for (i = 1; i <= n; i++) {
			name = "f" i
			a = sprintf("127.1.%d.%d", int((i - 1) / 250), (i - 1) % 250 + 1)
			if (name == rs)
				a = spare
			printf "  <instance name=\"%s\" myhostname=\"mail.%s.test\">\n", name, name
			printf "    <address>%s</address>\n", a
			printf "    <domain name=\"%s.test\"/>\n", name
			printf "    <param name=\"smtp_bind_address\" value=\"%s\"/>\n", a
			if (name == rl)
				print "    <param name=\"message_size_limit\" value=\"20480000\"/>"
			print "  </instance>"
		}
		print "</map>"
	}' > "$2.tmp" && mv "$2.tmp" "$2"
}

# A line stamper: each line of its input, prefixed with the wall-clock
# time it arrived (s, to the microsecond), so a log without times can be
# timed exactly, whatever the poll interval of the reader.
stamp() { perl -MTime::HiRes=time -ne 'BEGIN { $| = 1 } printf "%.6f %s", time, $_'; }
# stamped_ns FILE FROM-LINE EXTENDED-REGEX: the time (ns) of the first
# line at or after FROM-LINE matching, or failure.
stamped_ns() {
	tail -n "+$2" "$1" | awk -v re="$3" '$0 ~ re { printf "%.0f\n", $1 * 1e9; found = 1; exit }
		END { exit !found }'
}

# backend_vhostmta ACTION: `vhostmta run` supervising $fleet_n instances;
# its state in $work/vhostmta. Every instance is fNUM.
#   available          fails, with the reason on stdout, if unusable
#   version            the version printed in the header
#   size               how many instances its fleet has
#   prepare            writes its maps (once, before the runs)
#   init               what comes before the clock of a run starts
#   start              starts the fleet (returns at once)
#   ready              how many instances are ready
#   roots              the pids whose process trees are the whole fleet
#   pids               "NAME PID" for every running instance
#   readylog           the time (ns) the fleet said it was ready, if it
#                      says so
#   arm KIND NAME      gets ready to time a change of NAME (untimed)
#   change KIND NAME   applies a change of NAME: reload (one parameter
#                      changed) or restart (its address changed)
#   poll KIND          how often to ask whether it is applied (s): often
#                      unless applied reads a stamped log, which is exact
#                      whenever it is read
#   applied KIND NAME  the time (ns) the change was in effect; fails if
#                      not yet
#   disarm             ends what arm started
#   touched KIND NAME  fails, with the reason on stdout, unless the change
#                      touched NAME only (beyond the pid check done here)
#   stop               SIGTERM to the fleet
#   stopped            fails while any of its process is left
#   log                the tail of its log, for a failure report
backend_vhostmta() {
	d=$work/vhostmta m=$fleet_n
	case $1 in
	available)
		"$vhostmta" help run >/dev/null 2>&1 || { echo "vhostmta has no run command"; return 1; }
		[ -x "${VHOSTMTA_INSTANCE:-$(dirname "$vhostmta")/vhostmta-instance}" ] ||
			{ echo "no vhostmta-instance beside $vhostmta"; return 1; } ;;
	version) "$vhostmta" --version ;;
	size)	echo $m ;;
	prepare)
		mkdir -p "$d"
		map $m "$d/a.xml"
		map $m "$d/b.xml" f$((m / 2))
		map $m "$d/c.xml" f$((m / 2)) f$((m / 2 + 1)) ;;
	init)
		# A fresh output directory, as /run after a boot; the queues in
		# $d/state stay from one run to the next. The stamper reads the
		# supervisor's standard error (and so its instances').
		rm -rf "$run_dir/out" "$d/log" "$d/fifo"
		cp "$d/a.xml" "$d/map.xml"
		mkfifo "$d/fifo"
		stamp < "$d/fifo" > "$d/log" &
		stamp_pid=$! ;;
	start)
		# ip netns exec execs the supervisor: $! is its pid.
		ip netns exec "$ns" "$vhostmta" run -m "$d/map.xml" -o "$run_dir/out" --state-dir "$d/state" \
			2> "$d/fifo" > /dev/null &
		sup_pid=$! ;;
	ready)	"$vhostmta" status -o "$run_dir/out" --json 2>/dev/null | grep -c '"state": "running"' || : ;;
	readylog) stamped_ns "$d/log" 1 ' vhostmta: ready: ' ;;
	roots)	echo $sup_pid ;;
	pids)	"$vhostmta" status -o "$run_dir/out" --json |
			sed -n 's/.*"name": "\([^"]*\)", "state": "[^"]*", "pid": \([0-9][0-9]*\),.*/\1 \2/p' ;;
	arm)	wc -l < "$d/log" > "$d/mark" ;;
	disarm)	;;
	poll)	echo 0.05 ;;
	change)
		case $2 in reload) new=b.xml ;; restart) new=c.xml ;; esac
		cp "$d/$new" "$d/map.new" && mv "$d/map.new" "$d/map.xml"
		kill -HUP $sup_pid ;;
	applied)
		from=$(($(cat "$d/mark") + 1))
		case $2 in
		reload)	t=$(stamped_ns "$d/log" $from " vhostmta: $3: reloaded \\(pid ") || return 1 ;;
		restart) t=$(stamped_ns "$d/log" $from " vhostmta: $3: ready \\(pid ") || return 1 ;;
		esac
		# The supervisor's own part: the map read, rendered and applied.
		stamped_ns "$d/log" $from ' vhostmta: .*: [0-9]+ instances?: [0-9]+ started' > "$d/applyline" ||
			rm -f "$d/applyline"
		echo $t ;;
	touched)
		case $2 in
		reload) want="0 started, 0 restarted, 1 reloaded, 0 removed" ;;
		restart) want="0 started, 1 restarted, 0 reloaded, 0 removed" ;;
		esac
		from=$(($(cat "$d/mark") + 1))
		got=$(tail -n "+$from" "$d/log" | sed -n 's/.* [0-9]* instances: \([0-9]* started, .*\)/\1/p')
		[ "$got" = "$want" ] || { echo "the supervisor says \"$got\", not \"$want\""; return 1; }
		# Neither the supervisor nor any other instance says a word about
		# another instance (the instances log as vhostmta/NAME).
		n=$(tail -n "+$from" "$d/log" | grep -E ' vhostmta(: |/)f[0-9]+: ' |
			grep -vE " vhostmta(: |/)$3: " | wc -l)
		[ "$n" = 0 ] || { echo "$n log lines about other instances"; return 1; } ;;
	stop)	kill -TERM $sup_pid ;;
	stopped)
		# The supervisor is our child: once it has exited (after its last
		# instance) it is a zombie until wait reaps it. Read without a
		# fork: this is polled every 5 ms while the fleet stops.
		st=
		{ read -r st < /proc/$sup_pid/stat; } 2>/dev/null || :
		st=${st##*) }
		case $st in
		''|Z*)	;;
		*)	return 1 ;;
		esac
		wait $sup_pid || die "vhostmta run exited with status $?"
		wait $stamp_pid 2>/dev/null || :
		sup_pid= stamp_pid= ;;
	log)	tail -n 20 "$d/log" 2>/dev/null ;;
	esac
}

# backend_postfix ACTION: $pf_fleet_n Postfix instances rendered by
# `vhostmta render --backend postfix` from the same kind of map, each
# started with `postfix -c DIR start`; the same actions as above. What
# `vhostmta run` does on SIGHUP is done here the way an operator (or
# systemctl) would: render, then `postfix reload` of the instance to
# reload, or a stop and a start of the instance to restart.
backend_postfix() {
	d=$work/postfix m=$pf_fleet_n
	case $1 in
	available)
		[ $m -ge 2 ] || { echo "not measured (PF_FLEET_N=$m)"; return 1; }
		"$vhostmta" render --help 2>&1 | grep -q -- --backend ||
			{ echo "vhostmta render has no --backend yet"; return 1; } ;;
	version) postconf -d -h mail_version 2>/dev/null || dpkg-query -W -f '${Version}' postfix ;;
	size)	echo $m ;;
	prepare)
		mkdir -p "$d"
		map $m "$d/a.xml"
		map $m "$d/b.xml" f$((m / 2))
		map $m "$d/c.xml" f$((m / 2)) f$((m / 2 + 1)) ;;
	init)
		pf_render a.xml
		for i in $(seq 1 $m); do rm -f "$d/state/f$i/maillog"; done
		pf_settle ;;
	start)
		for i in $(seq 1 $m); do
			nsx postfix -c "$d/conf/f$i" start > "$d/start.f$i" 2>&1 &
		done ;;
	ready)	listening "$fleet_re" ;;
	readylog) return 1 ;;
	roots)	for i in $(seq 1 $m); do pf_master f$i; done ;;
	pids)	for i in $(seq 1 $m); do echo "f$i $(pf_master f$i)"; done ;;
	arm)	# Its log, stamped line by line as postlogd writes it (tail -F
		# follows it with inotify).
		[ $2 = reload ] || return 0
		rm -f "$d/watch" "$d/wfifo"
		mkfifo "$d/wfifo"
		stamp < "$d/wfifo" > "$d/watch" &
		watch_pids=$!
		tail -n 0 -F "$d/state/$3/maillog" > "$d/wfifo" 2>/dev/null &
		watch_pids="$watch_pids $!"
		sleep 0.2 ;;
	disarm)
		[ -n "$watch_pids" ] || return 0
		kill $watch_pids 2>/dev/null || :
		wait $watch_pids 2>/dev/null || :
		watch_pids= ;;
	poll)	case $2 in reload) echo 0.05 ;; restart) echo 0.005 ;; esac ;;
	change)
		case $2 in
		reload)
			pf_render b.xml
			pf_settle "$3"
			nsx postfix -c "$d/conf/$3" reload > "$d/reload.out" 2>&1 ||
				{ cat "$d/reload.out" >&2; die "postfix reload of $3 failed"; } ;;
		restart)
			pf_render c.xml
			pf_settle "$3"
			# postfix stop returns once the master has let go of its lock
			# (the master process itself lingers about a second); the
			# new master binds the new address at once.
			nsx postfix -c "$d/conf/$3" stop > "$d/stop.$3" 2>&1 ||
				{ cat "$d/stop.$3" >&2; die "postfix stop of $3 failed"; }
			nsx postfix -c "$d/conf/$3" start > "$d/start.$3" 2>&1 ||
				{ cat "$d/start.$3" >&2; die "postfix start of $3 failed"; } ;;
		esac ;;
	applied)
		# The restart is done when change returns (postfix start waits
		# for its master); the new address is checked at once.
		case $2 in
		reload)	stamped_ns "$d/watch" 1 '/master\[[0-9]+\]: reload ' ;;
		restart) [ "$(listening "$(echo $spare | sed 's/\./\\./g')")" = 1 ] && now ;;
		esac ;;
	touched)
		# render says which instances need something: that one only.
		want="$3: $2"
		got=$(grep -E '^f[0-9]+: ' "$d/render.out" | sed 's/ (listeners changed)//')
		[ "$got" = "$want" ] || { echo "render says \"$got\", not \"$want\""; return 1; } ;;
	stop)	# SIGTERM to every master, as `postfix stop` does.
		masters=$(backend_postfix roots)
		kill -TERM $masters ;;
	stopped)
		for pid in $masters; do kill -0 $pid 2>/dev/null && return 1; done
		return 0 ;;
	log)	tail -n 20 "$d/state/f1/maillog" 2>/dev/null; cat "$d/start.f1" 2>/dev/null ;;
	esac
}
pf_master() { sed -n '1s/ //gp' "$work/postfix/state/$1/queue/pid/master.pid" 2>/dev/null; }
# pf_settle [NAME]: waits, untimed (the time goes to $work/postfix/untimed,
# which the caller subtracts), until NAME's configuration files (or every
# instance's) are two whole seconds old. Postfix will not read a main.cf
# written within the last second or two: it dozes 300 ms at a time until
# the file is old enough, which would add about 2 s to every figure here.
pf_settle() {
	t=$(now)
	while [ $(($(date +%s) - $(stat -c %Y "$work/postfix/conf"/${1:-*}/*.cf | sort -n | tail -n 1))) -lt 2 ]; do
		sleep 0.05
	done
	echo $(($(now) - t)) > "$work/postfix/untimed"
}
pf_render() { # MAP: renders $work/postfix/MAP (as map.xml, so that the
	# headers stay the same), what needs something in render.out
	cp "$work/postfix/$1" "$work/postfix/map.xml"
	"$vhostmta" render --backend postfix -m "$work/postfix/map.xml" -o "$work/postfix/conf" \
		--state-dir "$work/postfix/state" > "$work/postfix/render.out" 2>&1 ||
		{ cat "$work/postfix/render.out" >&2; die "vhostmta render --backend postfix -m $1 failed"; }
}


# change BACKEND KIND NAME: one change applied and timed, then checked to
# have touched NAME only: every other pid unchanged (and NAME's pid too
# for a reload, a new one for a restart).
change() {
	b=$1 d=$work/$1
	backend_$b pids > "$d/pids.before"
	backend_$b arm $2 $3
	poll=$(backend_$b poll $2)
	t0=$(now)
	backend_$b change $2 $3
	deadline=$((t0 + change_timeout * 1000000000))
	until t1=$(backend_$b applied $2 $3); do
		[ "$(now)" -lt $deadline ] || { backend_$b log >&2; die "$b: $2 of $3 not applied after ${change_timeout} s"; }
		sleep $poll
	done
	backend_$b disarm
	# What the backend did untimed (waits of its own) is not counted.
	if [ -f "$d/untimed" ]; then
		t1=$((t1 - $(cat "$d/untimed")))
		rm -f "$d/untimed"
	fi
	ms $t0 $t1 >> "$d/$2"
	if [ -f "$d/applyline" ]; then
		ms $t0 "$(cat "$d/applyline")" >> "$d/$2.apply"
		rm -f "$d/applyline"
	fi
	sleep $settle
	backend_$b pids > "$d/pids.after"
	why=$(backend_$b touched $2 $3) || die "$b, $2 of $3: $why"
	changed=$(awk 'NR == FNR { p[$1] = $2; next } !($1 in p) || p[$1] != $2 { print $1 }' \
		"$d/pids.before" "$d/pids.after" | tr '\n' ' ')
	n=$(wc -l < "$d/pids.after")
	[ "$n" = "$(backend_$b size)" ] || die "$b, $2 of $3: $n instances running afterwards"
	case $2 in reload) want= ;; restart) want="$3 " ;; esac
	[ "$changed" = "$want" ] || die "$b, $2 of $3: the pids changed of: ${changed:-none}"
	echo "1 of $n" > "$d/$2.touched"
}

# fleet BACKEND RUN: the whole fleet started, timed until every instance
# is ready (polled every 50 ms) and every address accepts TCP, its idle
# memory, a reload, a restart, and the stop.
fleet() {
	b=$1 d=$work/$1 run=$2 m=$(backend_$1 size)
	backend_$b init
	rm -f "$d/untimed"
	sleep 0.2
	t0=$(now)
	backend_$b start
	t_ready= t_listen=
	i=$((ready_timeout * 20))
	while :; do
		[ -n "$t_ready" ] || [ "$(backend_$b ready)" -lt $m ] || t_ready=$(now)
		[ -n "$t_listen" ] || [ "$(listening "$fleet_re")" -lt $m ] || t_listen=$(now)
		[ -z "$t_ready" ] || [ -z "$t_listen" ] || break
		[ $((i -= 1)) -gt 0 ] || { backend_$b log >&2
			die "$b: $(backend_$b ready) of $m instances ready after $ready_timeout s"; }
		sleep 0.05
	done
	ms $t0 $t_ready >> "$d/ready"
	if t=$(backend_$b readylog); then ms $t0 $t >> "$d/readylog"; fi
	ms $t0 $t_listen >> "$d/listen"
	sleep $idle
	fleet_mem $(backend_$b roots) >> "$d/mem" || die "$b: no process of the fleet is left"
	change $b reload f$((m / 2))
	change $b restart f$((m / 2 + 1))
	t0=$(now)
	backend_$b stop
	i=$((120 * 200))
	until backend_$b stopped; do
		[ $((i -= 1)) -gt 0 ] || die "$b: the fleet has not stopped after 120 s"
		sleep 0.005
	done
	t1=$(now)
	ms $t0 $t1 >> "$d/stop"
	[ "$(listening "$fleet_re|$(echo $spare | sed 's/\./\\./g')")" = 0 ] ||
		die "$b: addresses still listen after the stop"
}

for b in $backends; do
	mkdir -p "$work/$b"
	if backend_$b available > "$work/$b/na"; then
		rm -f "$work/$b/na"
		backend_$b prepare
	fi
done
# The runs interleaved, so that a noisy minute on the machine weighs on
# every column alike.
for run in $(seq 1 $runs); do
	for b in $backends; do na $b || fleet $b $run; done
done

# The table.
v=$work/vhostmta p=$work/postfix
cell() { # BACKEND VALUE
	if na "$1" || [ ! -d "$work/$1" ]; then echo 'n/a*'; else echo "$2"; fi
}
med() { # FILE [COLUMN] [DIVISOR] [FORMAT]: the median, divided, formatted
	[ -s "$1" ] || { echo n/a; return; }
	awk -v v="$(median "$1" "${2:-1}")" -v d="${3:-1}" -v f="${4:-%.0f}" 'BEGIN { printf f, v / d }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
row() { # LABEL VHOSTMTA POSTFIX RATIO GOAL
	printf '%-44s %9s %9s %9s   %s\n' "$1" "$(cell vhostmta "$2")" "$(cell postfix "$3")" "$4" "$5" |
		sed 's/ *$//'
}
goal() { # VALUE OP LIMIT TEXT: TEXT, met or not
	awk -v v="$1" -v l="$3" -v op="$2" -v t="$4" 'BEGIN {
		if (v == "n/a") { print t; exit }
		ok = op == "<" ? v + 0 < l + 0 : v + 0 <= l + 0
		printf "%s: %s\n", t, ok ? "met" : "NOT met"
	}'
}
n=$fleet_n pn=$pf_fleet_n
vr=$(med $v/ready 1 1000 %.2f) vl=$(med $v/listen 1 1000 %.2f)
pr=$(med $p/ready 1 1000 %.2f) pl=$(med $p/listen 1 1000 %.2f)
vri=$(med $v/ready 1 $n %.2f) pri=$(med $p/ready 1 $pn %.2f)
vrss=$(med $v/mem 1 1024) vpss=$(med $v/mem 2 1024)
prss=$(med $p/mem 1 1024) ppss=$(med $p/mem 2 1024)
vrssi=$(med $v/mem 1 $((n * 1024)) %.1f) vpssi=$(med $v/mem 2 $((n * 1024)) %.1f)
prssi=$(med $p/mem 1 $((pn * 1024)) %.1f) ppssi=$(med $p/mem 2 $((pn * 1024)) %.1f)
vrl=$(med $v/reload 1 1 %.1f) prl=$(med $p/reload 1 1 %.1f)
vrs=$(med $v/restart 1 1 %.1f) prs=$(med $p/restart 1 1 %.1f)
vst=$(med $v/stop 1 1000 %.2f) pst=$(med $p/stop 1 1000 %.2f)
vsti=$(med $v/stop 1 $n %.2f) psti=$(med $p/stop 1 $pn %.2f)
touched() { cat "$1" 2>/dev/null || echo n/a; }

printf 'vhostmta run fleet: %s instances on %s-%s:%s, one address each; Postfix %s at %s instances\n' \
	$n "$(addr 1)" "$(addr $n)" $port "$(backend_postfix version)" $pn
printf '%-44s %9s %9s %9s   %s\n' "" vhostmta Postfix "vhostmta/" "goal (vhostmta)"
printf '%-44s %9s %9s %9s\n' "" "$n inst" "$pn inst" Postfix
row "ready: all running (s)" $vr $pr - "$(goal $vr '<' 3 '< 3 s')"
row "  all addresses accept TCP (s)" $vl $pl - ""
row "  per instance (ms)" $vri $pri "$(ratio $vri $pri)" ""
row "idle memory, summed RSS (MB)" $vrss $prss - "$(goal $vrss '<' 2048 '< 2048 MB')"
row "  summed PSS (MB)" $vpss $ppss - "$(goal $vpss '<' 2048 '< 2048 MB')"
row "  RSS per instance (MB)" $vrssi $prssi "$(ratio $vrssi $prssi)" ""
row "  PSS per instance (MB)" $vpssi $ppssi "$(ratio $vpssi $ppssi)" ""
row "SIGHUP, one parameter changed: reloaded (ms)" $vrl $prl "$(ratio $vrl $prl)" "$(goal $vrl '<' 100 '< 100 ms')"
row "  instances touched" "$(touched $v/reload.touched)" "$(touched $p/reload.touched)" - "1"
row "SIGHUP, one address changed: restarted (ms)" $vrs $prs "$(ratio $vrs $prs)" "$(goal $vrs '<' 100 '< 100 ms')"
row "  instances touched" "$(touched $v/restart.touched)" "$(touched $p/restart.touched)" - "1"
row "stop: SIGTERM until all exited (s)" $vst $pst - ""
row "  per instance (ms)" $vsti $psti "$(ratio $vsti $psti)" ""
fs() { df -T "$1" | awk 'NR == 2 { print $2 }'; }
echo "(median of $runs runs. Ready: vhostmta status polled every 50 ms, ss for TCP. Memory: ${idle} s after ready,"
echo " $(procs $v/mem) vhostmta processes, $(procs $p/mem) Postfix. A change: timed from the SIGHUP until that instance's"
echo " \"reloaded\" or new \"ready\" log line; every other pid checked unchanged. vhostmta renders into"
echo " $(fs "$run_dir") (as its default /run/vhostmta/instances), queues and Postfix's files on ${TMPDIR:-/tmp}, $(fs "$work").)"
echo "(Postfix: ready = all listening. A change: vhostmta render --backend postfix, then postfix reload of that"
echo " instance until its master logs the reload, or postfix stop + start until the new address listens; not"
echo " counting the 2 s or so Postfix waits, 300 ms at a time, before it reads a just-written main.cf.)"
runs() { [ -s "$1" ] && awk -v d="$2" -v f="$3" '{ printf "%s" f, (NR > 1 ? "/" : ""), $1 / d }' "$1" || echo n/a; }
echo "(every run: vhostmta ready $(runs $v/ready 1000 %.2f) s (its own \"ready\" line $(runs $v/readylog 1000 %.2f) s),"
echo " reload $(runs $v/reload 1 %.1f) ms (the supervisor's read, render and apply $(runs $v/reload.apply 1 %.1f)),"
echo " restart $(runs $v/restart 1 %.1f) ms ($(runs $v/restart.apply 1 %.1f)), stop $(runs $v/stop 1000 %.2f) s;"
echo " Postfix ready $(runs $p/ready 1000 %.2f) s, reload $(runs $p/reload 1 %.1f) ms, restart $(runs $p/restart 1 %.1f) ms," \
	"stop $(runs $p/stop 1000 %.2f) s)"
for b in $backends; do
	na $b && echo "* $b: $(cat "$work/$b/na")"
done
:
