# Helpers shared by benches/load.sh and benches/rss.sh (sourced, not run).
# Everything listens on 127.0.0.1 only; every process started is recorded in PIDS and
# stopped by cleanup (installed as the EXIT trap by the caller).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONG_BIN="${CONG_BIN:-$ROOT/target/release/cong}"
PIDS=()
WORK=""

die() {
    echo "FAIL: $*" >&2
    exit 1
}

log() {
    echo "== $*" >&2
}

# Installs nginx / wrk from the Debian archive only when they are missing.
need_tools() {
    local missing=()
    command -v nginx >/dev/null 2>&1 || missing+=(nginx)
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get install -y "${missing[@]}" >/dev/null ||
            { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; } ||
            die "apt-get install ${missing[*]} failed"
    fi
    local t
    for t in nginx wrk curl taskset python3 getconf; do
        command -v "$t" >/dev/null 2>&1 || die "$t not found"
    done
    [[ -x "$CONG_BIN" ]] || die "$CONG_BIN not found: run 'cargo build --release' first"
    (($(nproc) >= 2)) || die "need at least 2 CPUs (proxy on CPU 1, origin and wrk on CPU 0)"
}

# Scratch directory readable by the nginx worker user (mktemp makes it 0700).
make_workdir() {
    WORK="$(mktemp -d /tmp/cong-bench.XXXXXX)"
    chmod 755 "$WORK"
}

# N distinct free TCP ports on 127.0.0.1 (bound together, so they are all different).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Writes an nginx configuration whose state (pid, temp paths, logs) all lives under $1.
# $2: text of the http{} block after the common part.
nginx_conf() {
    local dir="$1" body="$2"
    mkdir -p "$dir/tmp"
    chmod 755 "$dir" "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    default_type application/octet-stream;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
$body
}
EOF
    nginx -t -q -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/check.log" ||
        die "nginx config $dir/nginx.conf invalid: $(cat "$dir/check.log")"
}

# Starts nginx from the directory $2 (made by nginx_conf) pinned to CPU $1; its PID (the
# master's) is left in LAST_PID.
start_nginx() {
    local cpu="$1" dir="$2"
    taskset -c "$cpu" nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' \
        >"$dir/stdout.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# The origin: nginx serving a 1024-byte static file at /1k, pinned to CPU $2, on port $1.
start_origin() {
    local port="$1" cpu="$2" dir="$WORK/origin"
    mkdir -p "$dir/www"
    head -c 1024 /dev/urandom | base64 -w 0 | head -c 1024 >"$dir/www/1k"
    chmod 755 "$dir/www"
    chmod 644 "$dir/www/1k"
    nginx_conf "$dir" "    server {
        listen 127.0.0.1:$port;
        location / {
            root $dir/www;
        }
    }"
    start_nginx "$cpu" "$dir"
    ORIGIN_PID="$LAST_PID"
    ORIGIN_FILE="$dir/www/1k"
    wait_http "http://127.0.0.1:$port/1k" 200 "" "$ORIGIN_PID" || die "origin did not start: $(cat "$dir/error.log")"
}

# Waits up to $TIMEOUT (default 60) seconds for URL $1 to answer status $2 (optional Host $3)
# while process $4 is alive.
wait_http() {
    local url="$1" want="$2" host="${3:-}" pid="$4" deadline=$((SECONDS + ${TIMEOUT:-60})) code
    local args=(-s -o /dev/null -w '%{http_code}' --max-time 2)
    [[ -n "$host" ]] && args+=(-H "Host: $host")
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        code="$(curl "${args[@]}" "$url" 2>/dev/null || true)"
        [[ "$code" == "$want" ]] && return 0
        sleep 0.1
    done
    return 1
}

# CPU time (utime + stime + cutime + cstime, clock ticks) of process $1 and its direct
# children (nginx workers), all threads included.
proc_ticks() {
    local pid="$1" total=0 p
    for p in "$pid" $(ps -o pid= --ppid "$pid"); do
        [[ -r "/proc/$p/stat" ]] || continue
        # Fields after the ")" that closes the command name: utime is the 12th, then stime,
        # cutime, cstime.
        total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13 + $14 + $15}')))
    done
    echo "$total"
}

cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ -n "${KEEP:-}" || $rc -ne 0 ]]; then
            echo "(scratch directory kept: $WORK)" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
