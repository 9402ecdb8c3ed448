#!/usr/bin/env bash
# Two builds of cong compared on the WAF mix, alternating, for changes smaller than the
# spread between two runs of waf.sh (the machine's speed drifts over minutes; alternating
# short runs of A and B puts both through the same drift).
#
# Runs benches/waf.sh once, briefly, for its configurations (KEEP=1), then $ROUNDS times:
# for A, then B, the origin nginx on CPU 0, the build on CPU 1 with the configuration of
# $PROXY (cong-waf: the WAF in block mode at paranoia 1; cong: without the WAF), a 3 s warm-up
# of wrk with the mix on CPU 0, then $REPS runs of $SECS s; prints user, system and total CPU
# µs per request of each run (/proc/PID/stat), then the median total of A and of B.
#
# Usage: benches/waf-ab.sh BIN_A BIN_B      (run as root)
# Environment: PROXY (cong-waf), ROUNDS (2), REPS (3), SECS (8).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
A="${1:?usage: waf-ab.sh BIN_A BIN_B}"
B="${2:?usage: waf-ab.sh BIN_A BIN_B}"
PROXY="${PROXY:-cong-waf}"
ROUNDS="${ROUNDS:-2}"
REPS="${REPS:-3}"
SECS="${SECS:-8}"
[[ -x "$A" && -x "$B" ]] || { echo "FAIL: $A or $B is not executable" >&2; exit 1; }
out="$(PROXIES="cong-waf cong" RUNS=1 DURATION=1 WARMUP=1 KEEP=1 CONG_BIN="$A" \
    bash "$ROOT/benches/waf.sh" 2>&1)" || { echo "$out"; exit 1; }
D="$(sed -n 's/^(scratch directory kept: \(.*\))$/\1/p' <<<"$out")"
[[ -d "$D" ]] || { echo "$out"; echo "FAIL: no scratch directory" >&2; exit 1; }
cfg="$D/$PROXY/cong.toml"
[[ -f "$cfg" ]] || { echo "FAIL: no configuration for $PROXY" >&2; exit 1; }
port="$(grep -A1 '^\[\[listen\]\]' "$cfg" | sed -n 's/.*:\([0-9]*\)"$/\1/p')"
admin="$(grep -A1 '^\[admin\]' "$cfg" | sed -n 's/.*:\([0-9]*\)"$/\1/p')"
TCK="$(getconf CLK_TCK)"
P=""
stop() {
    [[ -n "$P" ]] && { kill "$P" 2>/dev/null; wait "$P" 2>/dev/null || true; }
    P=""
    [[ -f "$D/origin/nginx.pid" ]] && kill "$(cat "$D/origin/nginx.pid")" 2>/dev/null || true
}
trap stop EXIT
declare -A TOTALS
measure() {
    local name="$1" bin="$2" u0 s0 u1 s1 n r
    taskset -c 0 nginx -c "$D/origin/nginx.conf" -p "$D/origin" >/dev/null 2>&1
    taskset -c 1 "$bin" run -c "$cfg" >"$D/ab-$name.log" 2>&1 &
    P=$!
    for _ in $(seq 1 300); do
        curl -s -o /dev/null "http://127.0.0.1:$admin/readyz" && break
        sleep 0.1
    done
    taskset -c 0 wrk -t1 -c50 -d3s -s "$D/mix.lua" "http://127.0.0.1:$port/" >/dev/null
    for ((r = 0; r < REPS; r++)); do
        read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$P/stat")
        n="$(taskset -c 0 wrk -t1 -c50 -d"${SECS}s" -s "$D/mix.lua" "http://127.0.0.1:$port/" |
            sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')"
        read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$P/stat")
        line="$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v t="$TCK" -v n="$n" 'BEGIN {
            printf "%.1f %.1f %.1f", u * 1e6 / t / n, s * 1e6 / t / n, (u + s) * 1e6 / t / n }')"
        read -r us sy to <<<"$line"
        printf '%s %s user %5s sys %5s total %5s µs/request (%d requests)\n' "$name" "$PROXY" "$us" "$sy" "$to" "$n"
        TOTALS[$name]+="$to"$'\n'
    done
    stop
}
for ((i = 0; i < ROUNDS; i++)); do
    measure A "$A"
    measure B "$B"
done
for name in A B; do
    sed '/^$/d' <<<"${TOTALS[$name]}" | sort -g |
        awk -v n="$name" '{ v[NR] = $1 } END {
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%s median total %.1f µs/request over %d runs\n", n, m, NR }'
done
rm -rf "$D"
