#!/usr/bin/env bash
# Cluster-wide rate-limit decisions against a redis-server on 127.0.0.1, next to local ones:
# starts redis-server on a free port (no persistence, its own scratch directory) pinned to CPU 0,
# runs `cargo bench --bench cluster_limits` against it pinned to CPU 1 (as a gateway and its
# Redis would not share a core), stops it. Environment: RATE (10000 decisions/s), SECONDS (10),
# WORKERS (1 tokio worker thread), RUNS (3). Figures are kept in benches/CLUSTER.md.
set -euo pipefail
source "$(dirname "$0")/common.sh"
trap cleanup EXIT

command -v redis-server >/dev/null 2>&1 ||
    { apt-get install -y redis-server >/dev/null || die "apt-get install redis-server failed"; }
RUNS="${RUNS:-3}"
make_workdir
read -r port < <(free_ports 1)
taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK" --save "" --appendonly no \
    >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.05
done
redis-cli -p "$port" ping | grep -q PONG || die "redis-server did not start: $(cat "$WORK/redis.log")"
log "redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$port"

cd "$ROOT"
cargo bench --locked --bench cluster_limits --no-run >/dev/null 2>&1 || die "bench build failed"
(($(nproc) >= 2)) || die "need at least 2 CPUs (Redis on CPU 0, the decisions on CPU 1)"
for run in $(seq 1 "$RUNS"); do
    log "run $run of $RUNS"
    CONG_BENCH_REDIS="127.0.0.1:$port" taskset -c 1 cargo bench --locked --bench cluster_limits 2>/dev/null |
        grep -E 'decisions/s|µs|through Redis'
done
