#!/usr/bin/env bash
# Side-by-side comparison of dlock with Redis and etcd (and a bare TCP echo floor), on this
# machine, in one run: same load generator, same scenarios, loopback only.
#
#   bash benches/compare.sh            # RUNS=3 runs of every point, 5 s each, then the table
#   RUNS=2 DURATION=5s bash benches/compare.sh
#   bash benches/compare.sh idle       # only the idle scenario, dlock and the echo floor
#   bash benches/compare.sh tls        # dlock over TLS next to plain TCP (64 clients)
#   DLOCK_HTTP=off bash benches/compare.sh   # dlock-server without its HTTP listener
#   bash benches/compare.sh cluster    # 3-node dlock and etcd clusters, with fail-over times
#
# It installs what is missing (redis-server, etcd-server, protobuf-compiler) with apt-get,
# starts redis-server, etcd and a release dlock-server on loopback ports of its own with
# temporary data dirs, runs every backend through the scenarios, prints medians with the
# ratios dlock/redis, dlock/etcd and dlock/floor, and stops everything it started on exit.
# Raw rows are kept in target/compare/compare-<time>.csv.
#
# With the argument `idle` it runs only the idle scenario (IDLE_SESSIONS idle sessions, each
# holding a lock, next to one client that cycles) on a fresh dlock-server per run, and needs
# neither Redis nor etcd. Idle runs warm up for IDLE_WARMUP (60 s), the time the sessions'
# renewals take to drift apart as those of sessions connected at different times are, and
# then run the echo floor with as many connections, each making a round trip per renewal,
# against an echo-server process of its own (measured through its pid, as dlock-server is).
#
# With the argument `tls` it makes a throwaway CA and server certificate with openssl (the
# commands of the README's "Running it securely"), starts two dlock-servers, one plain and one
# with --tls-cert, and runs the uncontended and contended scenarios at 64 clients against
# both in each run; the table gives the medians and the median of the per-run ratios
# TLS / plain.
#
# With the argument `cluster` it starts a 3-node dlock cluster and a 3-member etcd cluster
# (all on 127.0.0.1, data in the temporary dir) next to a single dlock-server, runs
# uncontended 1 and 64 and contended 16 against each in every run (clients are given every
# member's address), then the `failover` bench: KILLS (default 20) leader SIGKILLs per
# cluster, each timed to the first grant by the new leader. BASELINE_SERVER=PATH adds a
# single node of another dlock-server build (say, the commit before a change) to every run,
# to tell whether the single node got slower.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-1s}"
MANY_LOCKS="${MANY_LOCKS:-1000000}"
MANY_SESSIONS="${MANY_SESSIONS:-1000}"
IDLE_SESSIONS="${IDLE_SESSIONS:-10000}"
IDLE_WARMUP="${IDLE_WARMUP:-60s}"
KILLS="${KILLS:-20}"
BASELINE_SERVER="${BASELINE_SERVER:-}"
BASE_PORT="${BASE_PORT:-17400}"
REDIS_PORT=$((BASE_PORT + 1))
ETCD_PORT=$((BASE_PORT + 2))
ETCD_PEER_PORT=$((BASE_PORT + 3))
DLOCK_PORT=$((BASE_PORT + 4))
DLOCK_MANY_PORT=$((BASE_PORT + 5))
DLOCK_IDLE_PORT=$((BASE_PORT + 6))
DLOCK_TLS_PORT=$((BASE_PORT + 7))
DLOCK_BASE_PORT=$((BASE_PORT + 8))
ECHO_IDLE_PORT=$((BASE_PORT + 9))
# Cluster mode: client ports +41..43 and raft ports +51..53 (dlock), client ports +61..63
# and peer ports +71..73 (etcd); the failover bench starts its own clusters on +101..133.
CLUSTER_DLOCK=$((BASE_PORT + 40))
CLUSTER_ETCD=$((BASE_PORT + 60))
FAILOVER_BASE=$((BASE_PORT + 100))
# Idle needs its sessions and the measuring client; the other scenarios stay under 10,000.
MAX_CONNECTIONS=$((IDLE_SESSIONS + 100 > 10000 ? IDLE_SESSIONS + 100 : 10000))

case "${1:-all}" in
    all) MODE=all ;;
    idle) MODE=idle ;;
    tls) MODE=tls ;;
    cluster) MODE=cluster ;;
    *) printf 'usage: compare.sh [all|idle|tls|cluster]\n' >&2; exit 2 ;;
esac

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

TMP="$(mktemp -d -t dlock-compare.XXXXXX)"
PIDS=()

cleanup() {
    local pid
    # The members the failover bench runs: it kills them itself on SIGTERM; these are in
    # case it could not.
    if [ -s "$TMP/failover.pids" ]; then
        for pid in $(cat "$TMP/failover.pids"); do
            kill -0 "$pid" 2>/dev/null && PIDS+=("$pid")
        done
    fi
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${PIDS[@]}"; do
        # Bounded wait, then the hard way.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process this script started.
stop_pid() {
    local pid="$1"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port="$1" what="$2" logfile="$3"
    for _ in $(seq 200); do
        port_open "$port" && return 0
        sleep 0.1
    done
    tail -20 "$logfile" >&2 || true
    die "$what did not open port $port"
}

# --- tools ---------------------------------------------------------------------------------
missing=()
if [ "$MODE" = all ]; then
    command -v redis-server >/dev/null || missing+=(redis-server)
fi
if [ "$MODE" = all ] || [ "$MODE" = cluster ]; then
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v protoc >/dev/null || missing+=(protobuf-compiler)
fi
command -v python3 >/dev/null || missing+=(python3)
if [ "$MODE" = tls ]; then
    command -v openssl >/dev/null || missing+=(openssl)
fi
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

if [ "$MODE" = all ]; then
    PORTS=("$REDIS_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$DLOCK_PORT" "$DLOCK_MANY_PORT" "$DLOCK_IDLE_PORT" "$ECHO_IDLE_PORT")
elif [ "$MODE" = tls ]; then
    PORTS=("$DLOCK_PORT" "$DLOCK_TLS_PORT")
elif [ "$MODE" = cluster ]; then
    PORTS=("$DLOCK_PORT" "$DLOCK_BASE_PORT")
    for i in 1 2 3; do
        PORTS+=($((CLUSTER_DLOCK + i)) $((CLUSTER_DLOCK + 10 + i)) $((CLUSTER_ETCD + i))
            $((CLUSTER_ETCD + 10 + i)))
        for k in 0 10 20 30; do PORTS+=($((FAILOVER_BASE + k + i))); done
    done
else
    PORTS=("$DLOCK_IDLE_PORT" "$ECHO_IDLE_PORT")
fi
for port in "${PORTS[@]}"; do
    port_open "$port" && die "port $port is in use (set BASE_PORT to move every port)"
done

# --- build ---------------------------------------------------------------------------------
log "building dlock-server, loadgen and echo-server (release)"
FEATURES=""
if [ "$MODE" = all ] || [ "$MODE" = cluster ]; then
    FEATURES="dlock-benches/peers"
fi
(cd "$ROOT" && cargo build --release --locked -p dlock-server -p dlock-benches \
    --features "$FEATURES" --bin dlock-server --bin loadgen --bin failover --bin echo-server)
# Copies, so that another build in the shared target dir cannot swap them mid-run.
mkdir -p "$TMP/bin"
cp "$ROOT/target/release/dlock-server" "$ROOT/target/release/loadgen" \
    "$ROOT/target/release/failover" "$ROOT/target/release/echo-server" "$TMP/bin/"
SERVER="$TMP/bin/dlock-server"
LOADGEN="$TMP/bin/loadgen"
ECHO_SERVER="$TMP/bin/echo-server"
FAILOVER="$TMP/bin/failover"
if [ -n "$BASELINE_SERVER" ]; then
    [ -x "$BASELINE_SERVER" ] || die "BASELINE_SERVER=$BASELINE_SERVER is not an executable"
    cp "$BASELINE_SERVER" "$TMP/bin/dlock-server-baseline"
fi

# Up to IDLE_SESSIONS sessions each side of the loopback, plus the servers' own files. loadgen
# raises its own limit too, and says so if a limit is still too low.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# Starts a dlock-server on port $1 with a fresh data dir and any further flags; prints its pid.
# DLOCK_BIN names another build of the server to start.
start_dlock() {
    local port="$1" dir="$TMP/dlock-$1-$RANDOM"
    shift
    mkdir -p "$dir"
    # The HTTP listener (metrics, status page) on a port of its own per server, as deployed;
    # DLOCK_HTTP=off measures without it.
    local http="${DLOCK_HTTP:-127.0.0.1:$((port + 100))}"
    "${DLOCK_BIN:-$SERVER}" --listen "127.0.0.1:$port" --data-dir "$dir" --log-level warn \
        --http-listen "$http" \
        --max-connections "$MAX_CONNECTIONS" --max-connections-per-peer "$MAX_CONNECTIONS" \
        --max-locks-per-session 100000 "$@" \
        >"$dir.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$port" dlock-server "$dir.log"
    echo "$pid"
}

mkdir -p "$ROOT/target/compare"
CSV="$ROOT/target/compare/compare-$(date -u +%Y%m%dT%H%M%SZ).csv"

FAILED=0
lg() {
    "$LOADGEN" --csv "$CSV" --label "run$run" --duration "$DURATION" --warmup "${LG_WARMUP:-$WARMUP}" \
        --dlock-addr "${LG_DLOCK_ADDR:-127.0.0.1:${LG_DLOCK_PORT:-$DLOCK_PORT}}" \
        --redis-addr "127.0.0.1:$REDIS_PORT" --etcd-addr "${LG_ETCD_ADDR:-127.0.0.1:$ETCD_PORT}" \
        "$@" || FAILED=1
}

# Idle on a fresh server, so that its CPU and RSS are the idle sessions' and nothing else's;
# then the echo floor with as many sessions, its server a process of its own too.
run_idle() {
    local pid
    start_dlock "$DLOCK_IDLE_PORT" >"$TMP/idle.pid"
    pid="$(cat "$TMP/idle.pid")"
    LG_WARMUP="$IDLE_WARMUP" LG_DLOCK_PORT="$DLOCK_IDLE_PORT" \
        lg -b dlock -s idle --sessions "$IDLE_SESSIONS" --server-pid "$pid"
    stop_pid "$pid"
    "$ECHO_SERVER" --listen "127.0.0.1:$ECHO_IDLE_PORT" >"$TMP/echo-server.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$ECHO_IDLE_PORT" echo-server "$TMP/echo-server.log"
    LG_WARMUP="$IDLE_WARMUP" lg -b echo -s idle --sessions "$IDLE_SESSIONS" \
        --echo-addr "127.0.0.1:$ECHO_IDLE_PORT" --server-pid "$pid"
    stop_pid "$pid"
}

if [ "$MODE" = idle ]; then
    for run in $(seq "$RUNS"); do
        log "idle: run $run of $RUNS"
        run_idle
    done
fi

# A CA and a server certificate for localhost / 127.0.0.1, as the README shows.
make_certs() {
    local d="$1"
    mkdir -p "$d"
    (
        cd "$d"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
            -subj "/CN=dlock bench CA" -keyout ca-key.pem -out ca.pem
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=localhost" -keyout server-key.pem -out server.csr
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -days 30 -extfile server.ext -out server.pem
    ) >"$d.log" 2>&1 || { cat "$d.log" >&2; die "openssl failed"; }
}

if [ "$MODE" = tls ]; then
    make_certs "$TMP/tls"
    log "starting a plain and a TLS dlock-server on 127.0.0.1:$DLOCK_PORT and :$DLOCK_TLS_PORT"
    start_dlock "$DLOCK_PORT" >"$TMP/plain.pid"
    start_dlock "$DLOCK_TLS_PORT" --tls-cert "$TMP/tls/server.pem" \
        --tls-key "$TMP/tls/server-key.pem" >"$TMP/tls.pid"
    for run in $(seq "$RUNS"); do
        log "tls: run $run of $RUNS"
        lg -b dlock --server-pid "$(cat "$TMP/plain.pid")" -s uncontended,contended -c 64
        lg -b dlock-tls --server-pid "$(cat "$TMP/tls.pid")" \
            --dlock-tls-addr "127.0.0.1:$DLOCK_TLS_PORT" --tls-ca "$TMP/tls/ca.pem" \
            --tls-server-name localhost -s uncontended,contended -c 64
    done
fi

# --- cluster -------------------------------------------------------------------------------
# Waits until a lock can be taken through the endpoints $2 of backend $1 (a cluster has
# elected its leader): one short loadgen point, tried again for at most 30 s.
wait_grant() {
    local backend="$1" addrs="$2" flag
    case "$backend" in
        dlock) flag=--dlock-addr ;;
        etcd) flag=--etcd-addr ;;
    esac
    for _ in $(seq 60); do
        "$LOADGEN" -b "$backend" "$flag" "$addrs" -s uncontended -c 1 --duration 100ms \
            --warmup 0s >"$TMP/wait-grant.log" 2>&1 && return 0
        sleep 0.5
    done
    cat "$TMP/wait-grant.log" >&2
    die "no lock granted by the $backend cluster at $addrs within 30 s"
}

if [ "$MODE" = cluster ]; then
    LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
    log "load average at the start: $LOAD_START"
    log "starting a single dlock-server on 127.0.0.1:$DLOCK_PORT"
    start_dlock "$DLOCK_PORT" >"$TMP/dlock.pid"
    if [ -n "$BASELINE_SERVER" ]; then
        log "starting the baseline dlock-server on 127.0.0.1:$DLOCK_BASE_PORT"
        DLOCK_BIN="$TMP/bin/dlock-server-baseline" start_dlock "$DLOCK_BASE_PORT" >"$TMP/base.pid"
    fi

    log "starting a 3-node dlock cluster on 127.0.0.1:$((CLUSTER_DLOCK + 1))..$((CLUSTER_DLOCK + 3))"
    DLOCK_PEERS=""
    DLOCK_ENDPOINTS=""
    for i in 1 2 3; do
        DLOCK_PEERS+="${DLOCK_PEERS:+,}$i=127.0.0.1:$((CLUSTER_DLOCK + i))/127.0.0.1:$((CLUSTER_DLOCK + 10 + i))"
        DLOCK_ENDPOINTS+="${DLOCK_ENDPOINTS:+,}127.0.0.1:$((CLUSTER_DLOCK + i))"
    done
    CLUSTER_PIDS=""
    for i in 1 2 3; do
        init=()
        [ "$i" = 1 ] && init=(--init)
        start_dlock "$((CLUSTER_DLOCK + i))" --node-id "$i" --peers "$DLOCK_PEERS" "${init[@]}" \
            >"$TMP/node$i.pid"
        CLUSTER_PIDS+="${CLUSTER_PIDS:+,}$(cat "$TMP/node$i.pid")"
    done
    wait_grant dlock "$DLOCK_ENDPOINTS"

    log "starting a 3-member etcd cluster on 127.0.0.1:$((CLUSTER_ETCD + 1))..$((CLUSTER_ETCD + 3))"
    ETCD_INITIAL=""
    ETCD_ENDPOINTS=""
    for i in 1 2 3; do
        ETCD_INITIAL+="${ETCD_INITIAL:+,}e$i=http://127.0.0.1:$((CLUSTER_ETCD + 10 + i))"
        ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}127.0.0.1:$((CLUSTER_ETCD + i))"
    done
    ETCD_PIDS=""
    for i in 1 2 3; do
        client="http://127.0.0.1:$((CLUSTER_ETCD + i))"
        peer="http://127.0.0.1:$((CLUSTER_ETCD + 10 + i))"
        etcd --name "e$i" --data-dir "$TMP/etcd-e$i" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$ETCD_INITIAL" --initial-cluster-state new \
            --initial-cluster-token dlock-compare --log-level warn >"$TMP/etcd-e$i.log" 2>&1 &
        PIDS+=("$!")
        ETCD_PIDS+="${ETCD_PIDS:+,}$!"
    done
    for i in 1 2 3; do
        wait_port "$((CLUSTER_ETCD + i))" etcd "$TMP/etcd-e$i.log"
    done
    wait_grant etcd "$ETCD_ENDPOINTS"

    # Every point of a run against each: uncontended 1 and 64, contended 16. CPU per cycle is
    # the sum over a cluster's three members.
    points() {
        lg "$@" -s uncontended -c 1,64
        lg "$@" -s contended -c 16
    }
    for run in $(seq "$RUNS"); do
        log "cluster: run $run of $RUNS"
        points -b dlock --server-pid "$(cat "$TMP/dlock.pid")"
        if [ -n "$BASELINE_SERVER" ]; then
            LG_DLOCK_PORT="$DLOCK_BASE_PORT" points -b dlock --backend-name dlock-base \
                --server-pid "$(cat "$TMP/base.pid")"
        fi
        LG_DLOCK_ADDR="$DLOCK_ENDPOINTS" points -b dlock --backend-name dlock-3 \
            --server-pid "$CLUSTER_PIDS"
        LG_ETCD_ADDR="$ETCD_ENDPOINTS" points -b etcd --backend-name etcd-3 --server-pid "$ETCD_PIDS"
    done

    log "fail-over: $KILLS leader kills of a fresh dlock cluster, then of a fresh etcd cluster"
    FAILOVER_CSV="${CSV%.csv}-failover.csv"
    "$FAILOVER" --backend dlock,etcd --kills "$KILLS" --dlock-server "$SERVER" \
        --base-port "$FAILOVER_BASE" --work-dir "$TMP/failover" --pid-file "$TMP/failover.pids" \
        --csv "$FAILOVER_CSV" --verbose &
    FAILOVER_PID=$!
    PIDS+=("$FAILOVER_PID")
    wait "$FAILOVER_PID" || FAILED=1
fi

# --- servers -------------------------------------------------------------------------------
if [ "$MODE" = all ]; then
    log "starting redis-server on 127.0.0.1:$REDIS_PORT"
    mkdir -p "$TMP/redis"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$TMP/redis" --save "" \
        --appendonly no --daemonize no --protected-mode yes --maxclients 10000 \
        >"$TMP/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_port "$REDIS_PORT" redis-server "$TMP/redis.log"

    log "starting etcd on 127.0.0.1:$ETCD_PORT"
    etcd --name compare --data-dir "$TMP/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "compare=http://127.0.0.1:$ETCD_PEER_PORT" \
        --log-level warn >"$TMP/etcd.log" 2>&1 &
    ETCD_PID=$!
    PIDS+=("$ETCD_PID")
    wait_port "$ETCD_PORT" etcd "$TMP/etcd.log"

    log "starting dlock-server on 127.0.0.1:$DLOCK_PORT"
    start_dlock "$DLOCK_PORT" >"$TMP/dlock.pid"

    # --- runs ------------------------------------------------------------------------------
    DLOCK_PID="$(cat "$TMP/dlock.pid")"
    # Runs loadgen against one backend, telling it the server's pid (for server CPU per cycle).
    on() {
        local backend="$1" pid
        shift
        case "$backend" in
            dlock) pid="$DLOCK_PID" ;;
            redis) pid="$REDIS_PID" ;;
            etcd) pid="$ETCD_PID" ;;
        esac
        lg -b "$backend" --server-pid "$pid" "$@"
    }

    for run in $(seq "$RUNS"); do
        log "run $run of $RUNS"
        lg -b echo -s uncontended -c 1,64
        for b in dlock redis etcd; do on "$b" -s uncontended -c 1,64; done
        for b in dlock redis etcd; do on "$b" -s contended -c 16,64; done
        for b in dlock redis etcd; do on "$b" -s readers-writers -c 16; done
        for b in dlock redis etcd; do on "$b" -s handoff -c 16; done
        # A fresh server per run, so its RSS is the locks' and nothing else's.
        start_dlock "$DLOCK_MANY_PORT" >"$TMP/many.pid"
        many_pid="$(cat "$TMP/many.pid")"
        LG_DLOCK_PORT="$DLOCK_MANY_PORT" lg -b dlock -s many-locks \
            --locks "$MANY_LOCKS" --sessions "$MANY_SESSIONS" --server-pid "$many_pid"
        stop_pid "$many_pid"
        run_idle
    done
fi

# --- table ---------------------------------------------------------------------------------
log "machine"
{
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores)"
    echo "memory: $(free -h | awk '/^Mem:/ {print $2}')  kernel: $(uname -r)"
    if [ "$MODE" = all ]; then
        echo "$(redis-server --version | cut -d' ' -f1-3)  etcd $(etcd --version | awk '/etcd Version/ {print $3}')  $(rustc --version)"
    elif [ "$MODE" = cluster ]; then
        echo "etcd $(etcd --version | awk '/etcd Version/ {print $3}')  $(rustc --version)"
        echo "load average at the start: $LOAD_START, at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    else
        rustc --version
    fi
} >&2

log "medians of $RUNS runs; ratios are medians of per-run ratios (raw rows: $CSV)"
python3 - "$CSV" "$MODE" "${FAILOVER_CSV:-}" <<'PY'
import csv, statistics, sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1])))
points = defaultdict(list)
for r in rows:
    points[(r["backend"], r["scenario"], int(r["clients"]))].append(r)

def med(backend, scenario, clients, field):
    vals = [float(r[field]) for r in points.get((backend, scenario, clients), []) if r[field] not in ("", None)]
    return statistics.median(vals) if vals else None

def note(backend, scenario, clients):
    rs = points.get((backend, scenario, clients), [])
    return rs[0]["note"] if rs else ""

def fmt(v, kind):
    if v is None:
        return "-"
    if kind == "rate":
        return f"{v:,.0f}"
    if kind == "us":
        return f"{v/1000:.2f} ms" if v >= 1000 else f"{v:.0f} us"
    if kind == "ratio":
        return f"{v:.2f}"
    if kind == "mb":
        return f"{v/1024:.1f} MB"
    if kind == "f1":
        return f"{v:.1f}"
    if kind == "b":
        return f"{v:.0f} B"
    return str(v)

def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None

def paired(num, den, scenario, clients, field):
    """Median over runs of num/den measured in the same run: drift between runs (other load
    on the machine) cancels out of each ratio."""
    by_run = defaultdict(dict)
    for b in (num, den):
        for r in points.get((b, scenario, clients), []):
            if r[field] not in ("", None):
                by_run[r["label"]][b] = float(r[field])
    vals = [ratio(v[num], v[den]) for v in by_run.values() if num in v and den in v]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def idle_summary():
    k = max((k for k in points if k[0] == "dlock" and k[1] == "idle"), default=None)
    if not k:
        return
    pct, held, per = med(*k, "server_cpu_pct"), med(*k, "rss_held_kb"), med(*k, "rss_bytes_per_lock")
    p50, p99, rate = med(*k, "cycle_p50_us"), med(*k, "cycle_p99_us"), med(*k, "ops_per_s")
    print(f"idle (dlock): {k[2]:,} idle sessions holding a lock each: server CPU "
          f"{fmt(pct, 'f1')}% of a core, RSS {fmt(held, 'mb')} ({fmt(per, 'b')} per session); "
          f"one working client next to them: {fmt(rate, 'rate')} cycles/s, cycle p50 "
          f"{fmt(p50, 'us')}, p99 {fmt(p99, 'us')}")
    floor = med("echo", "idle", k[2], "server_cpu_pct")
    if floor is not None:
        floor_rss = med("echo", "idle", k[2], "rss_held_kb")
        print(f"idle (echo floor, a round trip per renewal): server CPU {fmt(floor, 'f1')}% of a core, "
              f"RSS {fmt(floor_rss, 'mb')}; "
              f"dlock/floor {fmt(paired('dlock', 'echo', 'idle', k[2], 'server_cpu_pct'), 'ratio')}")
    notes = {r["note"] for r in points[k] if r["note"]}
    for n in sorted(notes):
        print(f"  note: {n}")

if sys.argv[2] == "idle":
    idle_summary()
    sys.exit(0)

if sys.argv[2] == "tls":
    # A point that failed (a client could not connect, say) has no figures to compare.
    for k in list(points):
        points[k] = [r for r in points[k] if not r["note"].startswith("failed")]
    W = [40, 14, 14, 12]
    def tline(*cells):
        print("".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, W))))
    tline("workload (median), 64 clients", "plain TCP", "TLS", "TLS/plain")
    for label, scenario, field, kind in [
        ("uncontended: cycles/s", "uncontended", "ops_per_s", "rate"),
        ("uncontended: cycle p50", "uncontended", "cycle_p50_us", "us"),
        ("uncontended: cycle p99", "uncontended", "cycle_p99_us", "us"),
        ("uncontended: server CPU us/cycle", "uncontended", "server_cpu_us_per_op", "f1"),
        ("uncontended: client CPU us/cycle", "uncontended", "client_cpu_us_per_op", "f1"),
        ("contended: handoffs/s", "contended", "handoffs_per_s", "rate"),
        ("contended: cycles/s", "contended", "ops_per_s", "rate"),
        ("contended: acquire p99", "contended", "acquire_p99_us", "us"),
    ]:
        p, t = med("dlock", scenario, 64, field), med("dlock-tls", scenario, 64, field)
        tline(label, fmt(p, kind), fmt(t, kind), fmt(paired("dlock-tls", "dlock", scenario, 64, field), "ratio"))
    for scenario in ("uncontended", "contended"):
        for b in ("dlock", "dlock-tls"):
            vals = [float(r["ops_per_s"]) for r in points.get((b, scenario, 64), [])]
            print(f"  {b} {scenario} cycles/s per run: " + ", ".join(f"{v:,.0f}" for v in vals))
    sys.exit(0)

if sys.argv[2] == "cluster":
    for k in list(points):
        points[k] = [r for r in points[k] if not r["note"].startswith("failed")]
    base = any(k[0] == "dlock-base" for k in points)
    cols = ["dlock 1 node"] + (["baseline 1"] if base else []) + ["dlock 3 nodes", "etcd 3 nodes",
            "dlock3/etcd3", "dlock3/dlock1"] + (["dlock1/base"] if base else [])
    W = [36] + [14] * len(cols)
    def cline(*cells):
        print("".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, W))))
    cline("workload (median)", *cols)
    def crow(label, scenario, clients, field, kind, inverse=False):
        vals = [med(b, scenario, clients, field) for b in (["dlock"] + (["dlock-base"] if base else []) + ["dlock-3", "etcd-3"])]
        if inverse:
            r1 = paired("etcd-3", "dlock-3", scenario, clients, field)
            r2 = paired("dlock", "dlock-3", scenario, clients, field)
            r3 = paired("dlock-base", "dlock", scenario, clients, field)
        else:
            r1 = paired("dlock-3", "etcd-3", scenario, clients, field)
            r2 = paired("dlock-3", "dlock", scenario, clients, field)
            r3 = paired("dlock", "dlock-base", scenario, clients, field)
        cells = [fmt(v, kind) for v in vals] + [fmt(r1, "ratio"), fmt(r2, "ratio")]
        if base:
            cells.append(fmt(r3, "ratio"))
        cline(label, *cells)
    crow("uncontended 1: cycles/s", "uncontended", 1, "ops_per_s", "rate")
    crow("uncontended 1: cycle p50 (x less)", "uncontended", 1, "cycle_p50_us", "us", inverse=True)
    crow("uncontended 64: cycles/s", "uncontended", 64, "ops_per_s", "rate")
    crow("uncontended 64: cycle p99 (x less)", "uncontended", 64, "cycle_p99_us", "us", inverse=True)
    crow("uncontended 64: server CPU us/cycle", "uncontended", 64, "server_cpu_us_per_op", "f1", inverse=True)
    crow("contended 16: handoffs/s", "contended", 16, "handoffs_per_s", "rate")
    crow("contended 16: acquire p99 (x less)", "contended", 16, "acquire_p99_us", "us", inverse=True)
    crow("contended 16: fairness min/max", "contended", 16, "fairness", "ratio")
    print("  (server CPU of a cluster: its three members added up; latency ratios: how many times smaller)")
    for b in ["dlock"] + (["dlock-base"] if base else []) + ["dlock-3", "etcd-3"]:
        for scenario, c in (("uncontended", 64), ("contended", 16)):
            field = "ops_per_s" if scenario == "uncontended" else "handoffs_per_s"
            vals = [float(r[field]) for r in points.get((b, scenario, c), []) if r[field] not in ("", None)]
            print(f"  {b} {scenario} {c}: {field} per run: " + ", ".join(f"{v:,.0f}" for v in vals))
    fo = {}
    if len(sys.argv) > 3 and sys.argv[3]:
        try:
            for r in csv.DictReader(open(sys.argv[3])):
                fo[r["backend"]] = r
        except FileNotFoundError:
            pass
    print()
    print("fail-over: leader SIGKILL to the first grant by the new leader (fresh client, fresh resource)")
    FW = [10, 7, 11, 11, 11, 24, 12, 16]
    def fline(*cells):
        print("".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, FW))))
    fline("cluster", "kills", "p50", "p99", "max", "connected p50/p99/max", "locks kept", "catch-up p50")
    for b in ("dlock", "etcd"):
        r = fo.get(b)
        if not r:
            fline(b, "-", "-", "-", "-", "-", "-", "-")
            continue
        m = lambda f: f"{float(r[f]):,.0f} ms"
        fline(b, r["kills"], m("first_grant_p50_ms"), m("first_grant_p99_ms"), m("first_grant_max_ms"),
              f'{float(r["cycler_p50_ms"]):,.0f}/{float(r["cycler_p99_ms"]):,.0f}/{float(r["cycler_max_ms"]):,.0f} ms',
              f'{r["holder_kept"]}/{r["kills"]}', m("catch_up_p50_ms"))
    for b in ("dlock", "etcd"):
        if b in fo:
            print(f"  {b} first grant per kill (ms): " + fo[b]["first_grant_samples_ms"].replace(";", " "))
    print()
    print("targets")
    def target(label, value, ok, kind="ratio"):
        status = "-" if value is None else ("PASS" if ok(value) else "MISS")
        print(f"  {status:<5} {label}: {fmt(value, kind)}")
    target("uncontended 64: dlock-3/etcd-3 cycles/s >= 10", paired("dlock-3", "etcd-3", "uncontended", 64, "ops_per_s"), lambda v: v >= 10)
    target("contended 16: dlock-3/etcd-3 handoffs/s >= 30", paired("dlock-3", "etcd-3", "contended", 16, "handoffs_per_s"), lambda v: v >= 30)
    p99 = float(fo["dlock"]["first_grant_p99_ms"]) * 1000 if "dlock" in fo else None
    target("fail-over p99 (dlock, first grant) <= 2 s", p99, lambda v: v <= 2_000_000, "us")
    if base:
        for scenario, c, field in (("uncontended", 1, "ops_per_s"), ("uncontended", 64, "ops_per_s"), ("contended", 16, "handoffs_per_s")):
            target(f"{scenario} {c}: single node / baseline >= 0.9 (no worse, within noise)",
                   paired("dlock", "dlock-base", scenario, c, field), lambda v: v >= 0.9)
    sys.exit(0)

W = [34, 12, 12, 12, 12, 12, 12, 12]
def line(*cells):
    print("".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, W))))

line("workload (median)", "floor", "dlock", "redis", "etcd", "dlock/redis", "dlock/etcd", "dlock/floor")
def row(label, scenario, clients, field, kind, floor=False, inverse=False):
    d, r, e = (med(b, scenario, clients, field) for b in ("dlock", "redis", "etcd"))
    f = med("echo", scenario, clients, field) if floor else None
    if inverse:  # latencies: how many times smaller dlock's is
        rr, re_ = paired("redis", "dlock", scenario, clients, field), paired("etcd", "dlock", scenario, clients, field)
    else:
        rr, re_ = paired("dlock", "redis", scenario, clients, field), paired("dlock", "etcd", scenario, clients, field)
    rf = paired("dlock", "echo", scenario, clients, field) if floor else None
    line(label, fmt(f, kind), fmt(d, kind), fmt(r, kind), fmt(e, kind),
         fmt(rr, "ratio"), fmt(re_, "ratio"), fmt(rf, "ratio"))

row("uncontended 1: cycles/s", "uncontended", 1, "ops_per_s", "rate", floor=True)
row("uncontended 1: cycle p50 (x less)", "uncontended", 1, "cycle_p50_us", "us", floor=True, inverse=True)
row("uncontended 64: cycles/s", "uncontended", 64, "ops_per_s", "rate", floor=True)
row("uncontended 64: cycle p99 (x less)", "uncontended", 64, "cycle_p99_us", "us", inverse=True)
row("uncontended 64: server CPU us/cycle", "uncontended", 64, "server_cpu_us_per_op", "f1", floor=True)
row("uncontended 64: client CPU us/cycle", "uncontended", 64, "client_cpu_us_per_op", "f1", floor=True)
for c in (16, 64):
    row(f"contended {c}: cycles/s", "contended", c, "ops_per_s", "rate")
    row(f"contended {c}: handoffs/s", "contended", c, "handoffs_per_s", "rate")
    row(f"contended {c}: acquire p99 (x less)", "contended", c, "acquire_p99_us", "us", inverse=True)
    row(f"contended {c}: fairness min/max", "contended", c, "fairness", "ratio")
row("readers-writers 16: cycles/s", "readers-writers", 16, "ops_per_s", "rate")
row("readers-writers 16: acquire p99", "readers-writers", 16, "acquire_p99_us", "us", inverse=True)
row("handoff 16: release->grant p50", "handoff", 16, "handoff_p50_us", "us", inverse=True)
row("handoff 16: release->grant p99", "handoff", 16, "handoff_p99_us", "us", inverse=True)
ml = max((k for k in points if k[0] == "dlock" and k[1] == "many-locks"), default=None)
if ml:
    held = med(*ml, "rss_held_kb")
    per = med(*ml, "rss_bytes_per_lock")
    locks = med(*ml, "locks")
    rate = med(*ml, "ops_per_s")
    print(f"many-locks (dlock): {locks:,.0f} locks over {ml[2]:,} sessions: server RSS {fmt(held, 'mb')} "
          f"held, {fmt(per, 'b')} per lock, acquired at {fmt(rate, 'rate')} locks/s")
idle_summary()
for b in ("etcd", "redis", "dlock"):
    n = note(b, "readers-writers", 16)
    if n.startswith("unsupported"):
        print(f"readers-writers ({b}): {n}")

print()
print("targets")
def target(label, value, ok):
    status = "-" if value is None else ("PASS" if ok(value) else "MISS")
    print(f"  {status:<5} {label}: {fmt(value, 'ratio')}")
target("uncontended 64: dlock/redis >= 1.3", paired("dlock", "redis", "uncontended", 64, "ops_per_s"), lambda v: v >= 1.3)
target("uncontended 64: dlock/etcd >= 10", paired("dlock", "etcd", "uncontended", 64, "ops_per_s"), lambda v: v >= 10)
target("uncontended 64: dlock/floor >= 0.9", paired("dlock", "echo", "uncontended", 64, "ops_per_s"), lambda v: v >= 0.9)
target("uncontended 1: cycle p50 dlock/floor <= 1.1", paired("dlock", "echo", "uncontended", 1, "cycle_p50_us"), lambda v: v <= 1.1)
for c in (16, 64):
    target(f"contended {c}: handoffs/s dlock/redis >= 3", paired("dlock", "redis", "contended", c, "handoffs_per_s"), lambda v: v >= 3)
    target(f"contended {c}: acquire p99 redis/dlock >= 10", paired("redis", "dlock", "contended", c, "acquire_p99_us"), lambda v: v >= 10)
    target(f"contended {c}: dlock fairness min/max >= 0.9", med("dlock", "contended", c, "fairness"), lambda v: v >= 0.9)
if ml:
    mb = med(*ml, "rss_held_kb")
    target("many-locks: dlock RSS (MB) <= 300", None if mb is None else mb / 1024, lambda v: v <= 300)
PY
if ((FAILED)); then
    die "some points failed (see the notes above)"
fi
