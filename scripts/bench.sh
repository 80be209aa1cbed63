#!/usr/bin/env bash
# scripts/bench.sh — start the topology a benchmark needs, run gochat-bench, and stop
# exactly what it started.
#
#   scripts/bench.sh [-t all|split] [-g N] SCENARIO [-- extra gochat-bench flags]
#
# SCENARIO is a gochat-bench subcommand (conns, latency, throughput, fanout) with this
# script's default flags for it, or a set:
#   quick   all four at reduced size on -t all (make bench-quick; under 5 minutes)
#   full    all four at the issue's target sizes on -t split -g 16 (300k sockets need
#           16 gateways: a process may hold at most 20,000 open files here)
#
# -t all    one `gochat` process (embedded etcd, SQLite, in-process bus) under
#           data/bench/, on ports 18080 (HTTP+WS) and 19100 (admin); removed afterwards
# -t split  scripts/cluster.sh's development cluster with -g gateways (default 2). A
#           cluster that is already up is used as it is and left running.
#
# Benchmarks run gochat with logic.bcrypt_cost=4 (setup registers hundreds of accounts;
# no measured path hashes passwords) and a generated auth secret that gochat-bench uses
# to mint tokens for idle sockets (-secret). Results: bench/results/.
#
# BENCH_GOCHAT_FLAGS adds flags to the -t all gochat, e.g. to compare a setting:
#   BENCH_GOCHAT_FLAGS=-store.batch_window=1ms scripts/bench.sh throughput
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/bin
export GOTOOLCHAIN=local

topology=all
gateways=2
while getopts "t:g:h" opt; do
	case $opt in
	t) topology=$OPTARG ;;
	g) gateways=$OPTARG ;;
	*) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
scenario=${1:-}
[[ -n $scenario ]] || { echo "bench.sh: which scenario? (conns, latency, throughput, fanout, quick, full)" >&2; exit 2; }
shift
[[ ${1:-} == -- ]] && shift
extra=("$@")

case $scenario in
full) topology=split; gateways=16 ;;
quick) topology=all ;;
esac

say() { printf 'bench.sh: %s\n' "$*" >&2; }

started_all=""
started_cluster=""
cleanup() {
	if [[ -n $started_all ]]; then
		say "stopping gochat (pid $started_all)"
		kill -TERM "$started_all" 2>/dev/null || true
		for _ in $(seq 1 150); do kill -0 "$started_all" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$started_all" 2>/dev/null || true
		rm -rf "$ROOT/data/bench"
	fi
	if [[ -n $started_cluster ]]; then
		say "stopping the cluster this script started"
		"$ROOT/scripts/cluster.sh" down || true
	fi
}
trap cleanup EXIT

say "building bin/gochat and bin/gochat-bench"
mkdir -p "$BIN"
(cd "$ROOT" && go build -o "$BIN/gochat" ./cmd/gochat && cd bench && go build -o "$BIN/gochat-bench" ./cmd/gochat-bench)

export GOCHAT_LOGIC_BCRYPT_COST=4
gw_list=""
admin_list=""
secret=""
if [[ $topology == all ]]; then
	mkdir -p "$ROOT/data/bench"
	rm -rf "$ROOT/data/bench"/*
	secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
	(cd "$ROOT/data/bench" && GOCHAT_AUTH_SECRET=$secret exec "$BIN/gochat" \
		-gateway.addr=127.0.0.1:18080 -admin.addr=127.0.0.1:19100 \
		-logic.rpc_addr=127.0.0.1:19201 -task.rpc_addr=127.0.0.1:19301 -repo.rpc_addr=127.0.0.1:19401 \
		-log.level=warn ${BENCH_GOCHAT_FLAGS:-} >"$ROOT/data/bench/gochat.log" 2>&1) &
	started_all=$!
	for _ in $(seq 1 300); do
		curl -fsS http://127.0.0.1:19100/readyz >/dev/null 2>&1 && break
		kill -0 "$started_all" 2>/dev/null || { say "gochat exited; see data/bench/gochat.log"; tail -20 "$ROOT/data/bench/gochat.log" >&2; exit 1; }
		sleep 0.1
	done
	curl -fsS http://127.0.0.1:19100/readyz >/dev/null || { say "gochat not ready after 30 s"; exit 1; }
	gw_list=127.0.0.1:18080
	admin_list=127.0.0.1:19100
	gateways=1
elif [[ $topology == split ]]; then
	# status exits 0 both when every process runs and when nothing was started.
	if [[ -s $ROOT/data/cluster/processes.tsv ]] && "$ROOT/scripts/cluster.sh" status >/dev/null 2>&1; then
		say "using the cluster that is already up (left running)"
		gateways=$(grep -c '^gateway-' "$ROOT/data/cluster/processes.tsv")
	else
		"$ROOT/scripts/cluster.sh" up -n "$gateways"
		started_cluster=1
	fi
	secret=$(<"$ROOT/data/cluster/auth.secret")
	for i in $(seq 0 $((gateways - 1))); do
		gw_list+="${gw_list:+,}127.0.0.1:$((8080 + i))"
		admin_list+="${admin_list:+,}127.0.0.1:$((9110 + i))"
	done
else
	say "-t must be all or split"
	exit 2
fi

common=(-gateways "$gw_list" -admins "$admin_list" -topology "$topology" -out "$ROOT/bench/results")
bench() {
	local sub=$1
	shift
	say "gochat-bench $sub $*"
	"$BIN/gochat-bench" "$sub" "${common[@]}" -secret "$secret" "$@" "${extra[@]}"
}

# Default sizes per scenario and set.
case $scenario in
conns)
	# One all-mode process holds every socket, its Kitex loopback pools (both ends),
	# etcd and the store under this machine's 20,000 open files: its gateway holds
	# gateway.max_conns = 20,000 − 1,024 and closes the rest at accept.
	# 768 handshakes in flight: at 10,000/s with handshakes of 25–80 ms a storm needs
	# 250–800 in flight (Little's law), and the harness's default 256 capped it near
	# 9,000/s; at 1,024, the gateway's gateway.max_handshakes, an upgrade now and then
	# overlapped the one before it on the gateway and came back 503.
	if [[ $topology == all ]]; then bench conns -n 18000 -inflight 768; else bench conns -n 20000; fi
	;;
latency) bench latency -rate 2000 -pairs 100 -groups 10 -idle 5000 ;;
throughput) bench throughput -pairs 200 -inflight 25,50,100,200,800 ;;
fanout)
	# 100 probes (50 s at 2/s): the p99 of fewer is their maximum.
	bench fanout -receivers 10000 -probes 100 -messages 100 -rate 20
	;;
quick)
	bench conns -n 10000 -hold 3s
	bench latency -rate 2000 -pairs 50 -groups 5 -idle 2000 -duration 10s -warmup 2s
	bench throughput -pairs 50 -inflight 10,25,50,400 -step 5s -warmup 1s
	bench fanout -receivers 2000 -messages 50 -rate 20
	;;
full)
	bench conns -n 300000 -inflight 192 -hold 30s
	bench latency -rate 10k -pairs 200 -groups 20 -idle 10000
	bench throughput -pairs 400 -inflight 50,100,200,400,1600,12800
	bench fanout -receivers 10000 -probes 100 -messages 200 -rate 20
	;;
*)
	say "unknown scenario $scenario"
	exit 2
	;;
esac
