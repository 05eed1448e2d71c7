#!/bin/sh
# smtp.sh VHOSTMTA: the SMTP yardstick. In a private network namespace,
# smtp-source sends 10,000 messages of 2 KB over 20 parallel sessions into
# an instance on 127.0.0.2:25, which relays them (relayhost) to smtp-sink
# on 127.0.0.100:2526. Measured per backend: the durable acceptance rate
# (every message got its 250 after the queue file's fsync), the
# end-to-end relay rate (until the sink has received all of them), the
# RSS of an idle instance, and the start time of a fleet of 20 instances.
# Beside them, the harness ceiling: smtp-source straight into smtp-sink.
# Then STARTTLS: a chain of two instances of the same backend, hop1 on
# 127.0.0.2 relaying to hop2 on 127.0.0.3 (its relayhost), which relays
# to the sink; once in plaintext and once with STARTTLS between them
# (hop1 delivers with smtp_tls_security_level = encrypt, hop2 receives
# with a certificate), so each backend both sends and receives every
# message over TLS; the rate is end-to-end, until the sink has them all.
# smtp-source and smtp-sink speak no TLS, so the chain's ends are
# plaintext. Each measurement runs three times; the median is shown.
# Needs root.
#
# A backend is one function, backend_NAME ACTION ARGS (see backend_postfix);
# add its name to $backends and the table gets its column.
set -eu
[ $# -ge 1 ] || { echo "usage: sh bench/smtp.sh VHOSTMTA" >&2; exit 2; }
vhostmta=$1
PATH=$PATH:/usr/sbin:/sbin
export PATH

msgs=${MSGS:-10000} sessions=20 size=2048 runs=${RUNS:-3} fleet=20 idle=3
inst_addr=127.0.0.2 inst_port=25 hop2_addr=127.0.0.3
sink_addr=127.0.0.100 sink_port=2526
relay_timeout=180	# s after smtp-source ends, for the relay to finish
backends="vhostmta postfix"

bench=smtp.sh
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "needs root (network namespace, Postfix instances); run as root: sh bench/smtp.sh $vhostmta"
[ -x "$vhostmta" ] || die "$vhostmta: no such program"

# Install what is missing, and only that.
need postfix postfix; need postconf postfix
need smtp-source postfix; need smtp-sink postfix
need ip iproute2; need ss iproute2; need ps procps; need script bsdutils
need openssl openssl
install_missing

# The private namespace and the work directory (on disk under $TMPDIR:
# the queue's fsyncs are part of what is measured), and their cleanup on
# every exit path: every process in the namespace is ours.
ns=vhostmta-smtpbench-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/vhostmta-smtpbench.XXXXXX")
chmod 755 "$work"	# Postfix's unprivileged daemons reach data_directory
cleanup() {
	set +e
	trap - EXIT INT TERM HUP
	if ip netns list 2>/dev/null | grep -q "^$ns\\b"; then
		stops=
		for conf in "$work"/*/*/conf/*/main.cf; do
			[ -f "$conf" ] || continue
			ip netns exec "$ns" postfix -c "${conf%/main.cf}" stop >/dev/null 2>&1 &
			stops="$stops $!"
		done
		for p in $stops; do wait $p; done
		ns_drain 50
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

ip netns add "$ns"
ip -n "$ns" link set lo up
for a in $inst_addr $hop2_addr $sink_addr $(seq 1 $fleet | sed 's/^/127.0.1./'); do
	ip -n "$ns" addr add "$a/8" dev lo
done

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'; }
# listening ADDR-REGEX PORT: how many listening sockets match.
listening() { nsx ss -Hltn "sport = :$2" | awk -v re="^($1):$2\$" '$4 ~ re { n++ } END { print n + 0 }'; }
# wait_listening ADDR-REGEX PORT COUNT TIMEOUT-S: polls every 50 ms (two
# processes a poll: cheap beside the instances starting on the same cores).
wait_listening() {
	i=$(($4 * 20))
	while [ "$(listening "$1" "$2")" -lt "$3" ]; do
		[ $((i -= 1)) -gt 0 ] || return 1
		sleep 0.05
	done
}

# The maps: one instance on 127.0.0.2 relaying to the sink, and a fleet of
# $fleet instances on 127.0.1.1-$fleet (as bench/gen-map.sh, but small).
map() { # FIRST-NAME COUNT
	awk -v n="$2" -v one="$1" -v ia="$inst_addr" -v relay="[$sink_addr]:$sink_port" 'BEGIN {
		print "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
		print "<map xmlns=\"urn:vhostmta:map:1\">"
		print "  <defaults>"
		print "    <param name=\"mynetworks\" value=\"127.0.0.0/8\"/>"
		printf "    <param name=\"relayhost\" value=\"%s\"/>\n", relay
		print "  </defaults>"
		for (i = 1; i <= n; i++) {
			name = (one != "" ? one : "f" i)
			addr = (one != "" ? ia : "127.0.1." i)
			printf "  <instance name=\"%s\" myhostname=\"mail.%s.test\">\n", name, name
			printf "    <address>%s</address>\n", addr
			printf "    <domain name=\"%s.test\"/>\n", name
			printf "    <param name=\"smtp_bind_address\" value=\"%s\"/>\n", addr
			print "  </instance>"
		}
		print "</map>"
	}'
}
map bench 1 > "$work/bench.xml"
map "" $fleet > "$work/fleet.xml"

# The chain's maps: hop1 relays to hop2, hop2 to the sink; with "tls",
# STARTTLS between them (a test certificate made here), never plaintext.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj /CN=mail.hop2.test -addext subjectAltName=DNS:mail.hop2.test \
	-keyout "$work/hop2.key" -out "$work/hop2.pem" 2>/dev/null || die "openssl cannot make a test certificate"
chmod 644 "$work/hop2.key"	# Postfix's smtpd reads it as its own user
chain_map() { # plain|tls
	awk -v tls="$1" -v a1="$inst_addr" -v a2="$hop2_addr" -v sink="[$sink_addr]:$sink_port" \
	    -v cert="$work/hop2.pem" -v key="$work/hop2.key" 'BEGIN {
		print "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
		print "<map xmlns=\"urn:vhostmta:map:1\">"
		print "  <defaults>"
		print "    <param name=\"mynetworks\" value=\"127.0.0.0/8\"/>"
		print "  </defaults>"
		printf "  <instance name=\"hop1\" myhostname=\"mail.hop1.test\">\n"
		printf "    <address>%s</address>\n    <domain name=\"hop1.test\"/>\n", a1
		printf "    <param name=\"smtp_bind_address\" value=\"%s\"/>\n", a1
		printf "    <param name=\"relayhost\" value=\"[%s]:25\"/>\n", a2
		printf "    <param name=\"smtp_tls_security_level\" value=\"%s\"/>\n", tls == "tls" ? "encrypt" : "none"
		print "  </instance>"
		printf "  <instance name=\"hop2\" myhostname=\"mail.hop2.test\">\n"
		printf "    <address>%s</address>\n    <domain name=\"hop2.test\"/>\n", a2
		printf "    <param name=\"smtp_bind_address\" value=\"%s\"/>\n", a2
		printf "    <param name=\"relayhost\" value=\"%s\"/>\n", sink
		print "    <param name=\"smtp_tls_security_level\" value=\"none\"/>"
		if (tls == "tls") {
			print "    <param name=\"smtpd_tls_security_level\" value=\"may\"/>"
			printf "    <param name=\"smtpd_tls_cert_file\" value=\"%s\"/>\n", cert
			printf "    <param name=\"smtpd_tls_key_file\" value=\"%s\"/>\n", key
		}
		print "  </instance>"
		print "</map>"
	}'
}
chain_map plain > "$work/chain-plain.xml"
chain_map tls > "$work/chain-tls.xml"

# The sink: -c writes its counters ("sess=N quit=N mesg=N\r") to FILE.
# A backlog of 256 and at most 256 sessions (-m, the default) are well
# above the 20 sessions of the source or of the relaying instance.
sink_start() { # FILE
	# Not through nsx: $! must be the sink itself (ip netns exec execs it).
	ip netns exec "$ns" smtp-sink -c -u postfix "$sink_addr:$sink_port" 256 > "$1" 2>&1 &
	sink_pid=$!
	wait_listening "$sink_addr" $sink_port 1 10 || { cat "$1" >&2; die "smtp-sink did not start"; }
}
sink_count() { # FILE: messages the sink has received so far
	tail -c 64 "$1" | awk -v RS='\r' '/^sess=[0-9]+ quit=[0-9]+ mesg=[0-9]+$/ { n = substr($3, 6) } END { print n + 0 }'
}
sink_stop() { kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || :; sink_pid=; }

source_run() { # ADDR PORT OUT: the workload, timed by the caller
	nsx smtp-source -s $sessions -l $size -m $msgs -f bench@source.test -t user@dest.test "$1:$2" > "$3" 2>&1 ||
		{ cat "$3" >&2; die "smtp-source into $1:$2 failed"; }
}

# tree_mem PID: "RSS-kB PSS-kB PROCESSES" summed over PID and all its
# descendants, from one snapshot of the process table.
tree_mem() {
	ps -e -o pid=,ppid=,rss= | awk -v root="$1" '
		{ pp[$1] = $2; rss[$1] = $3 }
		END {
			if (!(root in pp)) exit 1
			t[root] = 1
			do { more = 0
				for (p in pp) if (!(p in t) && (pp[p] in t)) { t[p] = 1; more = 1 }
			} while (more)
			for (p in t) {
				r += rss[p]; n++
				f = "/proc/" p "/smaps_rollup"
				while ((getline l < f) > 0) if (l ~ /^Pss:/) { split(l, w); s += w[2] }
				close(f)
			}
			print r, s, n
		}'
}

# backend_postfix ACTION ARGS: Postfix instances rendered by
# `vhostmta render --backend postfix`.
#   available            fails, with the reason on stdout, if unusable
#   render MAP DIR       renders MAP under DIR (configuration and state)
#   start DIR NAME       starts instance NAME (returns when it is started)
#   stop DIR NAME        stops it (returns when it is gone)
#   master DIR NAME      the pid of its master process
#   verify DIR NAME N    fails unless the last run relayed exactly N messages
#   log DIR NAME         the tail of its log, for a failure report
#   tls DIR NAME         how many TLS sessions it has received
#   version              the version printed in the header
backend_postfix() {
	case $1 in
	relays)	return 0 ;;
	available)
		"$vhostmta" render --help 2>&1 | grep -q -- --backend ||
			{ echo "vhostmta render has no --backend yet"; return 1; } ;;
	render)
		"$vhostmta" render --backend postfix -m "$2" -o "$3/conf" --state-dir "$3/state" > "$3.render" 2>&1 ||
			{ cat "$3.render" >&2; die "vhostmta render --backend postfix -m $2 failed"; }
		# Postfix logs its TLS sessions only when asked (vhostmta always
		# does): the same log lines on both sides, and the chain's check.
		for cf in "$3"/conf/*/main.cf; do
			grep -q '^smtpd_tls_cert_file' "$cf" && echo 'smtpd_tls_loglevel = 1' >> "$cf"
		done; : ;;
	start)
		rm -f "$2/state/$3/maillog"
		nsx postfix -c "$2/conf/$3" start > "$2/state/$3.start" 2>&1 ;;
	stop)	nsx postfix -c "$2/conf/$3" stop > /dev/null 2>&1 ;;
	master)	sed -n '1s/ //gp' "$2/state/$3/queue/pid/master.pid" ;;
	verify)
		log=$2/state/$3/maillog i=0
		while [ "$(grep -c ' status=sent ' "$log")" -lt "$4" ] && [ $i -lt 100 ]; do
			sleep 0.1; i=$((i + 1))
		done
		sent=$(grep -c ' status=sent ' "$log") || :
		bad=$(grep -cE ' status=(deferred|bounced|expired)| reject: |fatal:|panic:' "$log") || :
		[ "$sent" = "$4" ] && [ "$bad" = 0 ] ||
			{ echo "$sent messages status=sent, $bad deferred/bounced/rejected/fatal"; return 1; } ;;
	log)	tail -n 20 "$2/state/$3/maillog" 2>/dev/null; cat "$2/state/$3.start" 2>/dev/null ;;
	tls)	grep -c 'TLS connection established from' "$2/state/$3/maillog" || : ;;
	version) postconf -d -h mail_version 2>/dev/null || dpkg-query -W -f '${Version}' postfix ;;
	esac
}

# backend_vhostmta ACTION ARGS: vhostmta-instance, one per instance of the
# map rendered by `vhostmta render`; the same actions as backend_postfix.
instance=$(dirname "$vhostmta")/vhostmta-instance
backend_vhostmta() {
	case $1 in
	available)
		[ -x "$instance" ] || { echo "$instance: not built"; return 1; } ;;
	relays)	return 0 ;;
	render)
		"$vhostmta" render -m "$2" -o "$3/conf" --state-dir "$3/state" > "$3.render" 2>&1 ||
			{ cat "$3.render" >&2; die "vhostmta render -m $2 failed"; } ;;
	start)
		rm -rf "$2/state/$3"
		mkdir -p "$2/state"
		# ip netns exec execs the instance: $! is its pid.
		ip netns exec "$ns" "$instance" -c "$2/conf/$3/instance.cf" > "$2/$3.log" 2>&1 &
		echo $! > "$2/$3.pid" ;;
	stop)
		pid=$(cat "$2/$3.pid" 2>/dev/null) || return 0
		kill "$pid" 2>/dev/null
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done ;;
	master)	cat "$2/$3.pid" ;;
	verify)
		log=$2/$3.log i=0
		while [ "$(grep -c ' status=sent ' "$log")" -lt "$4" ] && [ $i -lt 100 ]; do
			sleep 0.1; i=$((i + 1))
		done
		sent=$(grep -c ' status=sent ' "$log") || :
		bad=$(grep -cE ' status=(deferred|bounced|expired)|fatal:|panic:' "$log") || :
		n=$("$instance" -c "$2/conf/$3/instance.cf" --list-queue | wc -l)
		[ "$sent" = "$4" ] && [ "$bad" = 0 ] && [ "$n" = 0 ] ||
			{ echo "$sent messages status=sent, $bad deferred/bounced/fatal, $n still queued"; return 1; } ;;
	log)	tail -n 20 "$2/$3.log" 2>/dev/null ;;
	tls)	grep -c 'TLS connection established from' "$2/$3.log" || : ;;
	version) "$vhostmta" --version ;;
	esac
}


# prepare BACKEND: $work/BACKEND/na says why it is not measured, or its
# two maps are rendered.
prepare() {
	b=$1 d=$work/$1
	mkdir -p "$d"
	backend_$b available > "$d/na" || return 0
	rm -f "$d/na"
	mkdir -p "$d/one" "$d/fleet"
	backend_$b render "$work/bench.xml" "$d/one"
	backend_$b render "$work/fleet.xml" "$d/fleet"
	for m in plain tls; do
		mkdir -p "$d/chain-$m"
		backend_$b render "$work/chain-$m.xml" "$d/chain-$m"
	done
}

# ceiling RUN: the workload straight into the sink.
ceiling() {
	d=$work/ceiling run=$1
	mkdir -p "$d"
	sink_start "$d/sink.$run"
	t0=$(now)
	source_run $sink_addr $sink_port "$d/source.$run"
	t1=$(now)
	sleep 0.2
	n=$(sink_count "$d/sink.$run")
	[ "$n" = $msgs ] || die "ceiling, run $run: the sink received $n messages, not $msgs"
	secs $t0 $t1 >> "$d/accept"
	sink_stop
}

# relay BACKEND RUN: one run of the workload through a fresh instance.
relay() {
	b=$1 d=$work/$1 run=$2
	sink_start "$d/sink.$run"
	backend_$b start "$d/one" bench ||
		{ backend_$b log "$d/one" bench >&2; die "$b: the instance did not start"; }
	wait_listening "$inst_addr" $inst_port 1 30 ||
		{ backend_$b log "$d/one" bench >&2; die "$b: the instance does not listen on $inst_addr:$inst_port"; }
	t0=$(now)
	source_run $inst_addr $inst_port "$d/source.$run"
	t1=$(now)
	if ! backend_$b relays; then
		why=$(backend_$b verify "$d/one" bench $msgs) ||
			{ backend_$b log "$d/one" bench >&2; die "$b, run $run: $why"; }
		secs $t0 $t1 >> "$d/accept"
		sleep $idle
		tree_mem "$(backend_$b master "$d/one" bench)" >> "$d/mem" ||
			die "$b: no process after the run"
		backend_$b stop "$d/one" bench
		sink_stop
		return 0
	fi
	i=$((relay_timeout * 20))
	while [ "$(sink_count "$d/sink.$run")" -lt $msgs ]; do
		[ $((i -= 1)) -gt 0 ] || { backend_$b log "$d/one" bench >&2
			die "$b: the sink got $(sink_count "$d/sink.$run") of $msgs messages ${relay_timeout}s after the source ended"; }
		sleep 0.05
	done
	t2=$(now)
	why=$(backend_$b verify "$d/one" bench $msgs) ||
		{ backend_$b log "$d/one" bench >&2; die "$b, run $run: $why"; }
	n=$(sink_count "$d/sink.$run")
	[ "$n" = $msgs ] || die "$b, run $run: the sink received $n messages, not $msgs"
	secs $t0 $t1 >> "$d/accept"
	secs $t0 $t2 >> "$d/relay"
	sleep $idle
	tree_mem "$(backend_$b master "$d/one" bench)" >> "$d/mem" ||
		die "$b: no master process after the run"
	backend_$b stop "$d/one" bench
	sink_stop
}

# chain BACKEND plain|tls RUN: one run of the workload through hop1 and
# hop2, until the sink has every message; both hops' logs are checked,
# and under tls, that TLS carried the messages.
chain() {
	b=$1 d=$work/$1/chain-$2 run=$3
	sink_start "$d/sink.$run"
	for h in hop2 hop1; do
		backend_$b start "$d" $h || { backend_$b log "$d" $h >&2; die "$b: $h did not start"; }
	done
	wait_listening "$inst_addr|$hop2_addr" $inst_port 2 30 ||
		{ backend_$b log "$d" hop1 >&2; backend_$b log "$d" hop2 >&2; die "$b: the chain does not listen"; }
	t0=$(now)
	source_run $inst_addr $inst_port "$d/source.$run"
	i=$((relay_timeout * 20))
	while [ "$(sink_count "$d/sink.$run")" -lt $msgs ]; do
		[ $((i -= 1)) -gt 0 ] || { backend_$b log "$d" hop1 >&2; backend_$b log "$d" hop2 >&2
			die "$b, $2 chain: the sink got $(sink_count "$d/sink.$run") of $msgs messages"; }
		sleep 0.05
	done
	t1=$(now)
	for h in hop1 hop2; do
		why=$(backend_$b verify "$d" $h $msgs) ||
			{ backend_$b log "$d" $h >&2; die "$b, $2 chain, run $run, $h: $why"; }
	done
	if [ "$2" = tls ]; then
		n=$(backend_$b tls "$d" hop2)
		[ "$n" -gt 0 ] || die "$b, tls chain, run $run: hop2 logged no TLS session"
		echo "$n" >> "$d/tlssessions"
	fi
	secs $t0 $t1 >> "$d/relay"
	for h in hop1 hop2; do backend_$b stop "$d" $h; done
	sink_stop
}

# fleet BACKEND: every instance of the fleet started at once, timed until
# all listen, then stopped; $runs times.
fleet() {
	b=$1 d=$work/$1
	for run in $(seq 1 $runs); do
		pids=
		t0=$(now)
		for i in $(seq 1 $fleet); do
			backend_$b start "$d/fleet" f$i & pids="$pids $!"
		done
		wait_listening '127\.0\.1\.[0-9]+' $inst_port $fleet 120 ||
			{ backend_$b log "$d/fleet" f1 >&2; die "$b: only $(listening '127\.0\.1\.[0-9]+' $inst_port) of $fleet instances listen after 120 s"; }
		t1=$(now)
		for p in $pids; do wait $p || die "$b: a fleet instance failed to start"; done
		secs $t0 $t1 >> "$d/fleetstart"
		# The RSS of a fresh instance: one that has received nothing.
		sleep $idle
		for i in $(seq 1 $fleet); do
			tree_mem "$(backend_$b master "$d/fleet" f$i)" >> "$d/freshmem" ||
				die "$b: fleet instance f$i has no master process"
		done
		pids=
		for i in $(seq 1 $fleet); do
			backend_$b stop "$d/fleet" f$i & pids="$pids $!"
		done
		for p in $pids; do wait $p || :; done
	done
}

# The runs interleaved (ceiling, then each backend, three times), so that
# a noisy minute on the machine weighs on every column alike.
for b in $backends; do prepare $b; done
for run in $(seq 1 $runs); do
	ceiling $run
	for b in $backends; do na $b || relay $b $run; done
done
for run in $(seq 1 $runs); do
	for m in plain tls; do
		for b in $backends; do na $b || chain $b $m $run; done
	done
done
for b in $backends; do na $b || fleet $b; done

# The table.
rate() { [ -s "$1" ] && awk -v n=$msgs -v t="$(median "$1")" 'BEGIN { printf "%.0f", n / t }' || echo n/a; }
mb() { [ -s "$1" ] && awk -v k="$(median "$1" "${2:-1}")" 'BEGIN { printf "%.1f", k / 1024 }' || echo n/a; }
s() { [ -s "$1" ] && median "$1" | awk '{ printf "%.2f", $1 }' || echo n/a; }
cell() { # BACKEND VALUE: the value, or n/a with the footnote mark
	if na "$1"; then echo 'n/a*'; else echo "$2"; fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a*" }'; }
row() { # LABEL VHOSTMTA POSTFIX CEILING
	printf '%-38s %9s %9s %17s %16s\n' "$1" "$(cell vhostmta "$2")" "$(cell postfix "$3")" "$(ratio "$2" "$3")" "$4"
}
v=$work/vhostmta p=$work/postfix c=$work/ceiling
pv=$(backend_postfix version)
printf 'vhostmta SMTP relay: smtp-source -s %s -l %s -m %s -> %s:%s -> relayhost smtp-sink %s:%s; Postfix %s\n' \
	$sessions $size $msgs $inst_addr $inst_port $sink_addr $sink_port "$pv"
printf '%-38s %9s %9s %17s %16s\n' "" vhostmta Postfix vhostmta/Postfix "harness ceiling"
row "durable acceptance rate (msg/s)" "$(rate $v/accept)" "$(rate $p/accept)" "$(rate $c/accept)"
row "end-to-end relay rate (msg/s)" "$(rate $v/relay)" "$(rate $p/relay)" "$(rate $c/accept)"
row "idle RSS per instance, after run (MB)" "$(mb $v/mem)" "$(mb $p/mem)" -
row "  the same, summed PSS (MB)" "$(mb $v/mem 2)" "$(mb $p/mem 2)" -
row "idle RSS per instance, fresh (MB)" "$(mb $v/freshmem)" "$(mb $p/freshmem)" -
row "two hops, plaintext (msg/s)" "$(rate $v/chain-plain/relay)" "$(rate $p/chain-plain/relay)" -
row "two hops, STARTTLS between (msg/s)" "$(rate $v/chain-tls/relay)" "$(rate $p/chain-tls/relay)" -
row "fleet start time, $fleet instances (s)" "$(s $v/fleetstart)" "$(s $p/fleetstart)" -
echo "(median of $runs runs; idle = ${idle} s after the relay run, $(procs $p/mem) Postfix processes;" \
	"fresh = ${idle} s after start, nothing received, $(procs $p/freshmem) processes; queue on ${TMPDIR:-/tmp}, $(df -T "$work" | awk 'NR==2 {print $2}'))"
runs() { [ -s "$1" ] && awk -v n=$msgs '{ printf "%s%.0f", (NR > 1 ? "/" : ""), n / $1 }' "$1" || echo n/a; }
echo "(every run: Postfix acceptance $(runs $p/accept) msg/s, relay $(runs $p/relay) msg/s," \
	"fleet start $(tr '\n' / < $p/fleetstart 2>/dev/null | sed 's|/$||') s; ceiling $(runs $c/accept) msg/s)"
echo "(two hops, every run: vhostmta plaintext $(runs $v/chain-plain/relay), STARTTLS $(runs $v/chain-tls/relay) msg/s;" \
	"Postfix plaintext $(runs $p/chain-plain/relay), STARTTLS $(runs $p/chain-tls/relay) msg/s;" \
	"TLS sessions hop2 received per run: vhostmta $(tr '\n' / < $v/chain-tls/tlssessions 2>/dev/null | sed 's|/$||')," \
	"Postfix $(tr '\n' / < $p/chain-tls/tlssessions 2>/dev/null | sed 's|/$||'))"
for b in $backends; do
	na $b && echo "* $b: $(cat "$work/$b/na")"
	na $b || backend_$b relays || echo "$b: no relay rate yet: the instance's delivery side is not written"
done
:
