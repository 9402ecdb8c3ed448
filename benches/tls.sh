#!/usr/bin/env bash
# TLS benchmark: cong vs nginx terminating TLS in front of the same origin, on loopback.
#
#   bash benches/tls.sh            # builds cong --release, runs everything, prints a table
#
# Both proxies run one worker pinned to CPU 0 (cong: threads = 1; nginx: worker_processes 1),
# the origin (an nginx answering a 13-byte body) and h2load are pinned to the other CPU(s).
# Same ECDSA P-256 certificate, TLS 1.3 default (X25519, AES-GCM), access logs off.
# Figures:
#   - full handshakes/s: every request on a new TLS connection (HTTP/1.1, Connection: close;
#     h2load reconnects), no session resumption;
#   - keep-alive req/s over HTTP/1.1 and HTTP/2;
#   - CPU per request: user+system time of the proxy's processes during the run / requests;
#   - the same keep-alive run without TLS, to tell the cost of TLS from the rest of the proxy.
# Nothing else CPU-heavy should run at the same time.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v h2load >/dev/null && command -v nginx >/dev/null && command -v openssl >/dev/null \
  || bash deploy/deps.sh --test
cargo build --release --quiet
CONG="$PWD/target/release/cong"

N_NEW=${N_NEW:-3000}     # requests on new connections
N_KA=${N_KA:-60000}      # keep-alive requests
CLIENTS=${CLIENTS:-32}
ncpu=$(nproc)
PROXY_CPU=0
LOAD_CPUS=$([[ $ncpu -gt 1 ]] && echo "1-$((ncpu - 1))" || echo 0)

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not open" >&2; exit 1; }
# utime+stime (clock ticks) of a set of pids.
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' /proc/"$p"/stat))); done; echo $t; }
tck=$(getconf CLK_TCK)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"

ORIGIN=$(free_port); CONG_TLS=$(free_port); CONG_ADMIN=$(free_port); NGX_TLS=$(free_port)
CONG_PLAIN=$(free_port); NGX_PLAIN=$(free_port)

# --- origin (shared by both proxies)
mkdir -p "$work/origin"
cat >"$work/origin/nginx.conf" <<CONF
worker_processes 1;
pid $work/origin/nginx.pid;
error_log $work/origin/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/origin/cb; proxy_temp_path $work/origin/pt;
  fastcgi_temp_path $work/origin/ft; uwsgi_temp_path $work/origin/ut; scgi_temp_path $work/origin/st;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$ORIGIN; location / { return 200 "hello, world\n"; } }
}
CONF
taskset -c "$LOAD_CPUS" nginx -p "$work/origin" -c "$work/origin/nginx.conf" -g 'daemon off;' &
pids+=($!)
wait_port "$ORIGIN"

# --- nginx terminating TLS
mkdir -p "$work/ngx"
cat >"$work/ngx/nginx.conf" <<CONF
worker_processes 1;
pid $work/ngx/nginx.pid;
error_log $work/ngx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $work/ngx/cb; proxy_temp_path $work/ngx/pt;
  fastcgi_temp_path $work/ngx/ft; uwsgi_temp_path $work/ngx/ut; scgi_temp_path $work/ngx/st;
  keepalive_requests 1000000;
  ssl_session_cache off; ssl_session_tickets off;
  upstream origin { server 127.0.0.1:$ORIGIN; keepalive 64; }
  server {
    listen 127.0.0.1:$NGX_TLS ssl http2;
    listen 127.0.0.1:$NGX_PLAIN;
    server_name bench.test;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
}
CONF
taskset -c "$PROXY_CPU" nginx -p "$work/ngx" -c "$work/ngx/nginx.conf" -g 'daemon off;' &
ngx_master=$!
pids+=($ngx_master)
wait_port "$NGX_TLS"
ngx_pids=("$ngx_master" $(pgrep -P "$ngx_master"))

# --- cong terminating TLS
mkdir -p "$work/cong/tenants.d"
cat >"$work/cong/cong.toml" <<CONF
[server]
threads = 1
access_log = false
default_tenant = "bench"
grace_period = "1s"
shutdown_timeout = "1s"
upgrade_sock = "$work/cong/upgrade.sock"
pid_file = "$work/cong/cong.pid"

[[listen]]
address = "127.0.0.1:$CONG_TLS"
tls = true

[[listen]]
address = "127.0.0.1:$CONG_PLAIN"

[admin]
address = "127.0.0.1:$CONG_ADMIN"

[tls]
cert_dir = "$work/cong/certs"
default_cert = "$work/cert.pem"
default_key = "$work/key.pem"
CONF
cat >"$work/cong/tenants.d/bench.toml" <<CONF
id = "bench"
hosts = ["bench.test"]
tls_cert = "$work/cert.pem"
tls_key = "$work/key.pem"

[pools.origin]
backends = ["127.0.0.1:$ORIGIN"]
CONF
RUST_LOG=warn taskset -c "$PROXY_CPU" "$CONG" run -c "$work/cong/cong.toml" 2>"$work/cong/log" &
cong_pid=$!
pids+=($cong_pid)
wait_port "$CONG_TLS"
for _ in $(seq 200); do curl -s "http://127.0.0.1:$CONG_ADMIN/readyz" | grep -q ready && break; sleep 0.05; done

# h2load has no way to send an SNI other than the URL's host and no resolver override, so it
# connects to 127.0.0.1 without SNI: both proxies answer with the same certificate as their
# default, and cong routes the IP-literal Host to its default tenant.
run_h2load() { # port mode pids... -> prints "req/s cpu_us_per_req requests"
  local port=$1 mode=$2; shift 2
  local scheme=https
  local args=()
  case $mode in
    new) args=(--h1 -n "$N_NEW" -c "$CLIENTS" -H 'Connection: close') ;;
    h1)  args=(--h1 -n "$N_KA" -c "$CLIENTS") ;;
    h2)  args=(-n "$N_KA" -c "$CLIENTS" -m 10) ;;
    plain) args=(--h1 -n "$N_KA" -c "$CLIENTS"); scheme=http ;;
  esac
  local before after out
  before=$(cpu_ticks "$@")
  out=$(taskset -c "$LOAD_CPUS" h2load "${args[@]}" "$scheme://127.0.0.1:$port/" 2>&1)
  after=$(cpu_ticks "$@")
  local rps ok
  rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
  ok=$(awk '/^requests:/ {print $8}' <<<"$out")
  if [[ -z "$rps" || "${ok:-0}" -eq 0 ]]; then echo "h2load failed: $out" >&2; exit 1; fi
  local us=$(( (after - before) * 1000000 / tck / ok ))
  echo "$rps $us $ok"
}

# Warm-up, then the measured runs.
run_h2load "$CONG_TLS" h1 "$cong_pid" >/dev/null
run_h2load "$NGX_TLS" h1 "${ngx_pids[@]}" >/dev/null

printf "%-28s %14s %14s %16s %16s\n" "run" "cong req/s" "nginx req/s" "cong CPU us/req" "nginx CPU us/req"
for mode in new h1 h2 plain; do
  cp=$CONG_TLS np=$NGX_TLS
  [[ $mode == plain ]] && cp=$CONG_PLAIN np=$NGX_PLAIN
  read -r c_rps c_us c_ok < <(run_h2load "$cp" "$mode" "$cong_pid")
  read -r n_rps n_us n_ok < <(run_h2load "$np" "$mode" "${ngx_pids[@]}")
  case $mode in
    new) label="new TLS conn per request" ;;
    h1) label="keep-alive HTTP/1.1" ;;
    h2) label="keep-alive HTTP/2 (m=10)" ;;
    plain) label="no TLS: keep-alive HTTP/1.1" ;;
  esac
  printf "%-28s %14s %14s %16s %16s\n" "$label" "$c_rps" "$n_rps" "$c_us" "$n_us"
done
echo "(requests per run: new=$N_NEW keep-alive=$N_KA, clients=$CLIENTS, proxy on CPU $PROXY_CPU, load on CPU $LOAD_CPUS)"
