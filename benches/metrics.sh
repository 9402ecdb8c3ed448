#!/usr/bin/env bash
# Time of a /metrics scrape with N tenants that all had traffic (default 1,000), and the
# gateway's idle CPU with the availability prober probing all of them.
# Usage: benches/metrics.sh   (TENANTS, SCRAPES, IDLE; needs a release build)
set -euo pipefail
source "$(dirname "$0")/common.sh"
TENANTS="${TENANTS:-1000}"
SCRAPES="${SCRAPES:-20}"
IDLE="${IDLE:-60}"
trap cleanup EXIT
need_tools
make_workdir
read -r ORIGIN LISTEN ADMIN <<<"$(free_ports 3)"
start_origin "$ORIGIN" 0
mkdir -p "$WORK/m/tenants.d"
cat >"$WORK/m/cong.toml" <<EOT
[server]
threads = 1
access_log = false
pid_file = "$WORK/m/cong.pid"
upgrade_sock = "$WORK/m/up.sock"

[[listen]]
address = "127.0.0.1:$LISTEN"

[admin]
address = "127.0.0.1:$ADMIN"

[availability]
interval = "30s"
EOT
for i in $(seq 1 "$TENANTS"); do
  printf 'id = "t%d"\nhosts = ["t%d.tinh.gov.vn"]\n\n[pools.main]\nbackends = ["127.0.0.1:%d"]\n' "$i" "$i" "$ORIGIN" >"$WORK/m/tenants.d/t$i.toml"
done
"$CONG_BIN" run -c "$WORK/m/cong.toml" 2>"$WORK/m/cong.log" &
PIDS+=($!)
CONG_PID=$!
for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null && break; sleep 0.1; done
for i in $(seq 1 "$TENANTS"); do curl -s -o /dev/null -H "Host: t$i.tinh.gov.vn" "http://127.0.0.1:$LISTEN/1k"; done
times=()
for _ in $(seq 1 "$SCRAPES"); do
  times+=("$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$ADMIN/metrics")")
done
bytes=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | wc -c)
series=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | grep -vc '^#')
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
t0=$(awk '{print $14+$15}' "/proc/$CONG_PID/stat")
sleep "$IDLE"
t1=$(awk '{print $14+$15}' "/proc/$CONG_PID/stat")
hz=$(getconf CLK_TCK)
cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$IDLE" 'BEGIN {printf "%.2f", 100*(b-a)/hz/s}')
echo "tenants=$TENANTS scrape_median_ms=$(awk -v t="$median" 'BEGIN {printf "%.1f", t*1000}') scrape_bytes=$bytes series=$series idle_cpu_percent_over_${IDLE}s=$cpu"
