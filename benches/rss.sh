#!/usr/bin/env bash
# Memory of an idle cong with many tenants: a tenants.d directory of $TENANTS files (default
# 10,000), each tenant with its own host name `xa{i}.tinh{j}.gov.vn` and one pool with one
# backend (an nginx origin on 127.0.0.1), no health checks; every other setting at its default.
# Reports: time to ready, VmRSS 2 s after /readyz answers 200 and again after $IDLE more
# seconds with no traffic, VmHWM (peak), thread count and the CPU used over those $IDLE seconds.
# Rows: a single tenant (baseline); $TENANTS tenants with defaults; and, when the configuration
# has an `[availability]` table, $TENANTS tenants with `[availability] enabled = false` (the
# availability prober sends one request per tenant through the gateway every interval, so with
# it on the process is not idle).
#
# Usage: benches/rss.sh            (after cargo build --release; run as root)
# Environment: TENANTS (10000), IDLE (35 s: spans one 30 s availability round), CONG_BIN, KEEP=1.

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
trap cleanup EXIT

TENANTS="${TENANTS:-10000}"
IDLE="${IDLE:-35}"
TCK="$(getconf CLK_TCK)"
export TIMEOUT=300

need_tools
make_workdir
read -r ORIGIN_PORT < <(free_ports 1)
log "origin: nginx on 127.0.0.1:$ORIGIN_PORT"
start_origin "$ORIGIN_PORT" 0

# Writes a configuration with $2 tenants under directory $1; $3: extra text for the main file.
write_config() {
    local dir="$1" n="$2" extra="${3:-}" ports
    ports="$(free_ports 2)"
    mkdir -p "$dir/tenants.d"
    cat >"$dir/cong.toml" <<EOF
[server]
pid_file = "$dir/cong.pid"
upgrade_sock = "$dir/upgrade.sock"
grace_period = "1s"
shutdown_timeout = "1s"

[[listen]]
address = "127.0.0.1:${ports% *}"

[admin]
address = "127.0.0.1:${ports#* }"
$extra
EOF
    python3 - "$dir/tenants.d" "$n" "$ORIGIN_PORT" <<'EOF'
import sys
d, n, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(n):
    with open(f"{d}/t{i:05d}.toml", "w") as f:
        f.write(
            f'id = "t{i}"\n'
            f'hosts = ["xa{i}.tinh{i % 63}.gov.vn"]\n'
            f"\n[pools.web]\n"
            f'backends = ["127.0.0.1:{port}"]\n'
        )
EOF
    echo "${ports% *} ${ports#* }"
}

# Starts cong on the configuration in $1 ($2 tenants, $3 extra main-file text, $4 label),
# waits for readiness, prints one line.
measure() {
    local dir="$1" n="$2" extra="${3:-}" label="${4:-defaults}" port admin pid t0 ms c0 c1 rss0 rss hwm threads host code
    read -r port admin < <(write_config "$dir" "$n" "$extra")
    "$CONG_BIN" check -c "$dir/cong.toml" >&2 || die "cong check failed for $n tenants"
    t0="$(date +%s%N)"
    "$CONG_BIN" run -c "$dir/cong.toml" >"$dir/cong.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$admin/readyz" 200 "" "$pid" ||
        die "cong with $n tenants not ready: $(tail -20 "$dir/cong.log")"
    ms=$((($(date +%s%N) - t0) / 1000000))

    # Correctness: the last tenant's name reaches the origin, an unknown name does not.
    host="xa$((n - 1)).tinh$(((n - 1) % 63)).gov.vn"
    code="$(curl -s -o "$dir/body" -w '%{http_code}' -H "Host: $host" "http://127.0.0.1:$port/1k")"
    [[ "$code" == 200 ]] && cmp -s "$dir/body" "$ORIGIN_FILE" ||
        die "request for $host through cong: status $code or body differs"
    code="$(curl -s -o /dev/null -w '%{http_code}' -H "Host: unknown.gov.vn" "http://127.0.0.1:$port/1k")"
    [[ "$code" == 404 ]] || die "unknown host through cong: status $code, expected 404"

    sleep 2
    rss0="$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")"
    c0="$(proc_ticks "$pid")"
    sleep "$IDLE"
    c1="$(proc_ticks "$pid")"
    rss="$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")"
    hwm="$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")"
    threads="$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")"
    awk -v n="$n" -v ms="$ms" -v rss0="$rss0" -v rss="$rss" -v hwm="$hwm" -v th="$threads" \
        -v d=$((c1 - c0)) -v tck="$TCK" -v idle="$IDLE" -v label="$label" 'BEGIN {
            printf "%8d %-16s %9d %10.1f %10.1f %10.1f %8d %10.2f\n", n, label, ms, rss0 / 1024, rss / 1024, hwm / 1024, th, d / tck / idle * 100
        }'
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

log "$(nproc) CPUs, $("$CONG_BIN" version)"
printf '%8s %-16s %9s %10s %10s %10s %8s %10s\n' tenants config ready_ms 'RSS+2s_MiB' \
    "RSS+$((IDLE + 2))s" 'VmHWM_MiB' threads 'idle_cpu%'
measure "$WORK/one" 1
measure "$WORK/many" "$TENANTS"
# The availability prober is switched off only where the configuration knows it.
NOPROBE=$'[availability]\nenabled = false'
mkdir -p "$WORK/probe-check"
write_config "$WORK/probe-check" 1 "$NOPROBE" >/dev/null
if "$CONG_BIN" check -c "$WORK/probe-check/cong.toml" >/dev/null 2>&1; then
    measure "$WORK/many-noprobe" "$TENANTS" "$NOPROBE" availability=off
else
    log "no [availability] table in this version: row skipped"
fi
