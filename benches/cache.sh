#!/usr/bin/env bash
# Cache hits: cong's page cache versus nginx proxy_cache (cache directory on tmpfs) in front of
# the same origin, for the same 20 KB page, on loopback.
#
#   origin: nginx serving a 20 KB file with Cache-Control: max-age=3600, CPU 0
#   wrk:    1 thread, $CONNECTIONS keep-alive connections, Host: bench.local, CPU 0
#   proxy:  cong ([server] threads = 1, [cache] on for the tenant, memory tier) or nginx
#           (worker_processes 1, proxy_cache with proxy_cache_path on /dev/shm), CPU 1
#
# Before measuring, both proxies must answer HIT for the page with exactly the origin's body;
# the origin's request count is read before and after the runs to show that no measured
# request went through. For each proxy: a warm-up, then $RUNS runs of $DURATION seconds
# (alternating which goes first): requests/s and p99 from wrk, and the proxy's CPU time per
# request (user + system, all threads and worker processes, from /proc/PID/stat).
#
# Usage: benches/cache.sh          (after cargo build --release; run as root)
# Environment: RUNS (3), DURATION (10 s), WARMUP (3 s), CONNECTIONS (50),
#              CONG_BIN (target/release/cong), KEEP=1 keeps the scratch directory.

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
trap 'rc=$?; rm -rf "${CACHE_DIR:-}"; (exit $rc); cleanup' EXIT

RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
CONNECTIONS="${CONNECTIONS:-50}"
HOST=bench.local
TCK="$(getconf CLK_TCK)"
PAGE=/20k

need_tools
make_workdir
[[ -d /dev/shm ]] || die "/dev/shm (tmpfs) not found"
read -r ORIGIN_PORT NGINX_PORT CONG_PORT ADMIN_PORT < <(free_ports 4)

log "origin: nginx on 127.0.0.1:$ORIGIN_PORT (CPU 0), 20 KB page with max-age=3600"
mkdir -p "$WORK/origin/www"
# 15,360 random bytes are exactly 20,480 base64 characters (no truncating pipe: pipefail).
head -c 15360 /dev/urandom | base64 -w 0 >"$WORK/origin/www/20k"
chmod 755 "$WORK/origin/www"
chmod 644 "$WORK/origin/www/20k"
ORIGIN_FILE="$WORK/origin/www/20k"
nginx_conf "$WORK/origin" "    log_format uri '\$request_uri';
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        access_log $WORK/origin/access.log uri;
        location / {
            root $WORK/origin/www;
            add_header Cache-Control \"max-age=3600\";
        }
    }"
start_nginx 0 "$WORK/origin"
ORIGIN_PID="$LAST_PID"
wait_http "http://127.0.0.1:$ORIGIN_PORT$PAGE" 200 "" "$ORIGIN_PID" || die "origin did not start"

CACHE_DIR="$(mktemp -d /dev/shm/cong-bench-cache.XXXXXX)"
chmod 777 "$CACHE_DIR"
log "nginx proxy_cache on 127.0.0.1:$NGINX_PORT (CPU 1), cache directory $CACHE_DIR (tmpfs)"
nginx_conf "$WORK/nginx-proxy" "    proxy_cache_path $CACHE_DIR levels=1:2 keys_zone=pages:10m max_size=256m inactive=1h use_temp_path=off;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        server_name $HOST;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Request-Id \$request_id;
            proxy_cache pages;
            proxy_cache_key \$scheme\$host\$request_uri;
            proxy_cache_lock on;
            proxy_cache_use_stale error timeout http_500 http_502 http_503 http_504 updating;
            add_header X-Cache \$upstream_cache_status;
            add_header X-Request-Id \$request_id;
        }
    }"
start_nginx 1 "$WORK/nginx-proxy"
NGINX_PID="$LAST_PID"

log "cong on 127.0.0.1:$CONG_PORT, admin 127.0.0.1:$ADMIN_PORT (CPU 1), memory tier"
mkdir -p "$WORK/cong"
cat >"$WORK/cong/cong.toml" <<EOF
[server]
threads = 1
access_log = false
grace_period = "1s"
shutdown_timeout = "1s"
pid_file = "$WORK/cong/cong.pid"
upgrade_sock = "$WORK/cong/upgrade.sock"

[[listen]]
address = "127.0.0.1:$CONG_PORT"

[admin]
address = "127.0.0.1:$ADMIN_PORT"

[cache]
memory_size = "256MB"

[[tenant]]
id = "bench"
hosts = ["$HOST"]

[tenant.cache]
enabled = true

[tenant.pools.origin]
backends = ["127.0.0.1:$ORIGIN_PORT"]
EOF
"$CONG_BIN" check -c "$WORK/cong/cong.toml" >&2 || die "cong check failed"
taskset -c 1 "$CONG_BIN" run -c "$WORK/cong/cong.toml" >"$WORK/cong/cong.log" 2>&1 &
CONG_PID=$!
PIDS+=("$CONG_PID")
wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" 200 "" "$CONG_PID" ||
    die "cong not ready: $(tail -20 "$WORK/cong/cong.log")"
wait_http "http://127.0.0.1:$NGINX_PORT$PAGE" 200 "$HOST" "$NGINX_PID" ||
    die "nginx proxy not answering: $(cat "$WORK/nginx-proxy/error.log")"

# Correctness: the second request is a HIT with the origin's exact body, on both proxies.
for p in "cong:$CONG_PORT" "nginx:$NGINX_PORT"; do
    name="${p%%:*}" port="${p##*:}"
    curl -s -o /dev/null -H "Host: $HOST" "http://127.0.0.1:$port$PAGE" || die "$name: curl failed"
    hdr="$(curl -s -D - -o "$WORK/$name.body" -H "Host: $HOST" "http://127.0.0.1:$port$PAGE")" ||
        die "$name: curl failed"
    grep -qi '^x-cache: HIT' <<<"$hdr" || die "$name: second request not a cache hit: $hdr"
    cmp -s "$WORK/$name.body" "$ORIGIN_FILE" ||
        die "$name: body differs from the origin's 20 KB file ($(wc -c <"$WORK/$name.body") bytes)"
    log "$name: HIT, body identical to the origin's ($(wc -c <"$WORK/$name.body") bytes)"
done
ORIGIN_BEFORE="$(grep -c "^$PAGE$" "$WORK/origin/access.log" || true)"

# Runs wrk against port $1 for $2 seconds; prints "requests req_per_s p99_ms".
run_wrk() {
    local port="$1" secs="$2" out
    out="$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${secs}s" --latency -H "Host: $HOST" \
        "http://127.0.0.1:$port$PAGE")" || die "wrk failed"
    if grep -q 'Non-2xx' <<<"$out"; then
        echo "$out" >&2
        die "wrk saw non-2xx responses on port $port"
    fi
    grep -q 'Socket errors' <<<"$out" && echo "warning: $(grep 'Socket errors' <<<"$out")" >&2
    awk '
        / requests in / { req = $1 }
        /^Requests\/sec:/ { rps = $2 }
        $1 == "99%" {
            v = $2
            if (v ~ /us$/) p99 = substr(v, 1, length(v) - 2) / 1000
            else if (v ~ /ms$/) p99 = substr(v, 1, length(v) - 2) + 0
            else if (v ~ /s$/) p99 = substr(v, 1, length(v) - 1) * 1000
        }
        END {
            if (req == "" || rps == "" || p99 == "") exit 1
            printf "%d %.1f %.3f\n", req, rps, p99
        }' <<<"$out" || {
        echo "$out" >&2
        die "cannot parse wrk output"
    }
}

declare -A PID_OF=([cong]="$CONG_PID" [nginx]="$NGINX_PID")
declare -A PORT_OF=([cong]="$CONG_PORT" [nginx]="$NGINX_PORT")
declare -A RESULTS=([cong]="" [nginx]="")

for name in cong nginx; do
    log "warm-up $name ${WARMUP}s"
    run_wrk "${PORT_OF[$name]}" "$WARMUP" >/dev/null
done

printf '%-6s %4s %12s %10s %12s %10s\n' proxy run 'req/s' 'p99_ms' 'cpu_us/req' 'proxy_cpu%'
for ((r = 1; r <= RUNS; r++)); do
    order=(cong nginx)
    ((r % 2 == 0)) && order=(nginx cong)
    for name in "${order[@]}"; do
        pid="${PID_OF[$name]}"
        t0="$(proc_ticks "$pid")"
        w="$(run_wrk "${PORT_OF[$name]}" "$DURATION")"
        read -r req rps p99 <<<"$w"
        t1="$(proc_ticks "$pid")"
        read -r us_req cpu_pct < <(awk -v d=$((t1 - t0)) -v tck="$TCK" -v n="$req" -v s="$DURATION" \
            'BEGIN { us = d * 1e6 / tck; printf "%.2f %.1f\n", us / n, us / (s * 1e4) }')
        printf '%-6s %4d %12.1f %10.3f %12.2f %10.1f\n' "$name" "$r" "$rps" "$p99" "$us_req" "$cpu_pct"
        RESULTS[$name]+="$rps $p99 $us_req $cpu_pct"$'\n'
    done
done

# Median of column $2 of the lines in $1.
median() {
    sed '/^$/d' <<<"$1" | awk -v c="$2" '{ print $c }' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
printf '%-6s %6s %12s %10s %12s %10s\n' proxy '' 'req/s' 'p99_ms' 'cpu_us/req' 'proxy_cpu%'
declare -A MED
for name in cong nginx; do
    for c in 1 2 3 4; do
        MED[$name.$c]="$(median "${RESULTS[$name]}" "$c")"
    done
    printf '%-6s %6s %12.1f %10.3f %12.2f %10.1f\n' "$name" median \
        "${MED[$name.1]}" "${MED[$name.2]}" "${MED[$name.3]}" "${MED[$name.4]}"
done
awk -v cu="${MED[cong.3]}" -v nu="${MED[nginx.3]}" -v cr="${MED[cong.1]}" -v nr="${MED[nginx.1]}" \
    -v cp="${MED[cong.2]}" -v np="${MED[nginx.2]}" 'BEGIN {
        printf "\nratio cong/nginx (medians): cpu_us/req %.2f   req/s %.2f   p99 %.2f\n", cu / nu, cr / nr, cp / np
    }'
ORIGIN_AFTER="$(grep -c "^$PAGE$" "$WORK/origin/access.log" || true)"
echo "origin requests for $PAGE during the measured runs: $((ORIGIN_AFTER - ORIGIN_BEFORE))"
echo "($RUNS runs of ${DURATION}s, $CONNECTIONS connections, $(nproc) CPUs, $(nginx -v 2>&1 | sed 's/.*: //'), $("$CONG_BIN" version))"
