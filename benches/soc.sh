#!/usr/bin/env bash
# Cost of SOC log shipping: cong's CPU per proxied request with access events shipped over
# TCP to rsyslog, against the same traffic with logging off.
#
#   origin:  nginx serving a 1024-byte static file, CPU 0
#   rsyslog: imtcp on loopback writing every message to a file, CPU 0
#   wrk:     1 thread, $CONNECTIONS keep-alive connections, CPU 0
#   cong:    [server] threads = 1, access_log = false, CPU 1 (its SOC threads too)
#
# Modes, taking turns run by run:
#   off  no [soc] table: no access event is built at all
#   tcp  [soc] with one TCP sink, RFC 5424, every event class, to rsyslog
# Each run reports requests/s from wrk and cong's CPU time (user + system, all threads, from
# /proc/PID/stat) divided by the requests served; for `tcp` also how many messages rsyslog
# wrote and cong's drop counter (from its log).
#
# Usage: benches/soc.sh            (after cargo build --release)
# Environment: RUNS (3), DURATION (10 s), WARMUP (3 s), CONNECTIONS (50),
#              CONG_BIN (target/release/cong), KEEP=1 keeps the scratch directory.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONG_BIN="${CONG_BIN:-$ROOT/target/release/cong}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
CONNECTIONS="${CONNECTIONS:-50}"
HOST=bench.local
TCK="$(getconf CLK_TCK)"
PIDS=()

die() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [[ -n "${WORK:-}" && -z "${KEEP:-}" ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v rsyslogd >/dev/null 2>&1 || missing+=(rsyslog)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install failed"
fi
for t in nginx wrk rsyslogd taskset python3; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found"
done
[[ -x "$CONG_BIN" ]] || die "$CONG_BIN not found: run 'cargo build --release' first"
(($(nproc) >= 2)) || die "need at least 2 CPUs"

WORK="$(mktemp -d /tmp/cong-soc-bench.XXXXXX)"
chmod 755 "$WORK"
read -r ORIGIN_PORT SYSLOG_PORT CONG_PORT ADMIN_PORT < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)

wait_port() {
    local port="$1" i
    for i in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    die "nothing listens on port $port"
}

# Origin: nginx, one worker, a 1 KiB file.
mkdir -p "$WORK/origin/tmp" "$WORK/origin/www"
chmod -R 755 "$WORK/origin"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/origin/www/index.html"
cat >"$WORK/origin/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/origin/nginx.pid;
error_log $WORK/origin/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/origin/tmp/cb;
    proxy_temp_path $WORK/origin/tmp/p;
    fastcgi_temp_path $WORK/origin/tmp/f;
    uwsgi_temp_path $WORK/origin/tmp/u;
    scgi_temp_path $WORK/origin/tmp/s;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $WORK/origin/www;
    }
}
EOF
taskset -c 0 nginx -p "$WORK/origin" -c "$WORK/origin/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
wait_port "$ORIGIN_PORT"

# Collector: rsyslog imtcp → file.
mkdir -p "$WORK/rsyslog"
cat >"$WORK/rsyslog/rsyslog.conf" <<EOF
global(workDirectory="$WORK/rsyslog" maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="$SYSLOG_PORT" ruleset="r")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="r") { action(type="omfile" file="$WORK/rsyslog/out.log" template="raw") }
EOF
taskset -c 0 rsyslogd -n -f "$WORK/rsyslog/rsyslog.conf" -i "$WORK/rsyslog/rsyslog.pid" 2>"$WORK/rsyslog/err.log" &
PIDS+=($!)
wait_port "$SYSLOG_PORT"

# cong configurations for both modes.
write_cong() {
    local mode="$1" dir="$WORK/cong-$1"
    mkdir -p "$dir/tenants.d" "$dir/state"
    cat >"$dir/cong.toml" <<EOF
[server]
threads = 1
access_log = false
upgrade_sock = "$dir/upgrade.sock"
pid_file = "$dir/cong.pid"

[[listen]]
address = "127.0.0.1:$CONG_PORT"

[admin]
address = "127.0.0.1:$ADMIN_PORT"
EOF
    if [[ "$mode" == tcp ]]; then
        cat >>"$dir/cong.toml" <<EOF

[soc]
state_dir = "$dir/state"
name = "bench"

[[soc.sink]]
name = "soc"
type = "tcp"
address = "127.0.0.1:$SYSLOG_PORT"
format = "rfc5424"
EOF
    fi
    cat >"$dir/tenants.d/bench.toml" <<EOF
id = "bench"
hosts = ["$HOST"]

[pools.main]
backends = ["127.0.0.1:$ORIGIN_PORT"]
EOF
}
write_cong off
write_cong tcp

cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# One run: start cong in MODE, warm up, measure. Prints "rps cpu_us_per_req received dropped".
run_one() {
    local mode="$1" dir="$WORK/cong-$1" pid before after t0 t1 out reqs rps lines0 lines1
    taskset -c 1 "$CONG_BIN" run -c "$dir/cong.toml" 2>"$dir/cong.log" &
    pid=$!
    PIDS+=("$pid")
    wait_port "$CONG_PORT"
    taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -H "Host: $HOST" "http://127.0.0.1:$CONG_PORT/" >/dev/null
    lines0=$( { wc -l <"$WORK/rsyslog/out.log"; } 2>/dev/null || echo 0)
    before=$(cpu_ticks "$pid")
    out=$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -H "Host: $HOST" "http://127.0.0.1:$CONG_PORT/")
    after=$(cpu_ticks "$pid")
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
    # Let the sink catch up before counting what the collector got.
    sleep 2
    lines1=$( { wc -l <"$WORK/rsyslog/out.log"; } 2>/dev/null || echo 0)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    local dropped
    dropped=$(grep -c 'event=log_events_dropped' "$dir/cong.log" || true)
    python3 -c "import sys; t=$after-$before; print(f'{float(\"$rps\"):.0f} {t*1e6/$TCK/$reqs:.1f} $((lines1 - lines0)) $reqs $dropped')"
}

log "origin 127.0.0.1:$ORIGIN_PORT, rsyslog 127.0.0.1:$SYSLOG_PORT, cong 127.0.0.1:$CONG_PORT; $RUNS runs of ${DURATION}s, $CONNECTIONS connections"
printf '%-5s %-4s %10s %14s %12s %10s %10s\n' mode run "req/s" "cpu µs/req" "received" "requests" "drop-evts"
declare -A SUM
for run in $(seq 1 "$RUNS"); do
    if ((run % 2)); then order="off tcp"; else order="tcp off"; fi
    for mode in $order; do
        read -r rps cpu recv reqs drops < <(run_one "$mode")
        [[ "$mode" == off ]] && recv="-" && drops="-"
        printf '%-5s %-4s %10s %14s %12s %10s %10s\n' "$mode" "$run" "$rps" "$cpu" "$recv" "$reqs" "$drops"
        SUM[$mode]=$(python3 -c "print(${SUM[$mode]:-0} + $cpu)")
    done
done
off=$(python3 -c "print(${SUM[off]} / $RUNS)")
tcp=$(python3 -c "print(${SUM[tcp]} / $RUNS)")
python3 -c "print(f'mean cpu µs/req: off {$off:.1f}, tcp {$tcp:.1f}, overhead {($tcp/$off-1)*100:+.1f} %')"
