#!/usr/bin/env bash
# User-space instructions per request of the running gateway on the WAF mix, with and without
# the WAF: a count that the machine's noise does not move, next to waf.sh's CPU times.
#
# Runs benches/waf.sh once, briefly, for its configurations (KEEP=1), then for cong-waf and cong
# in turn: the origin nginx, cong under `valgrind --tool=callgrind --instr-atstart=no`, a 5 s
# warm-up of wrk with the mix, instrumentation on (`callgrind_control -i on`), $SECONDS_RUN s
# of `wrk -t1 -c4` with the mix, instrumentation off. Prints instructions per request of each
# and their ratio. CACHE_SIM=1 adds valgrind's cache simulation and prints first-level data
# and instruction misses and last-level misses per request (slower); CACHE_LL=SIZE,ASSOC,LINE
# sets the simulated last level (valgrind's --LL; e.g. 2097152,16,64 for a 2 MiB second-level
# cache instead of the host's last level). The callgrind files stay
# in the printed directory for callgrind_annotate.
#
# Usage: benches/waf-instructions.sh   (after cargo build --release; needs valgrind)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONG_BIN="${CONG_BIN:-$ROOT/target/release/cong}"
SECONDS_RUN="${SECONDS_RUN:-20}"
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
out="$(PROXIES="cong-waf cong" RUNS=1 DURATION=1 WARMUP=1 KEEP=1 CONG_BIN="$CONG_BIN" \
    bash "$ROOT/benches/waf.sh" 2>&1)" || { echo "$out"; exit 1; }
D="$(sed -n 's/^(scratch directory kept: \(.*\))$/\1/p' <<<"$out")"
[[ -d "$D" ]] || { echo "$out"; echo "FAIL: no scratch directory" >&2; exit 1; }
nginx -c "$D/origin/nginx.conf" -p "$D/origin" >/dev/null 2>&1
trap 'kill "$(cat "$D/origin/nginx.pid")" 2>/dev/null || true; [[ -n "${VP:-}" ]] && kill "$VP" 2>/dev/null || true' EXIT
extra=()
[[ "${CACHE_SIM:-0}" == 1 ]] && extra=(--cache-sim=yes ${CACHE_LL:+--LL=$CACHE_LL})
declare -A per
for n in cong-waf cong; do
    port="$(grep -A1 '^\[\[listen\]\]' "$D/$n/cong.toml" | sed -n 's/.*:\([0-9]*\)"$/\1/p')"
    valgrind --tool=callgrind --instr-atstart=no "${extra[@]}" \
        --callgrind-out-file="$D/$n.callgrind" \
        "$CONG_BIN" run --config "$D/$n/cong.toml" >"$D/$n.valgrind.log" 2>&1 &
    VP=$!
    for _ in $(seq 1 600); do
        curl -s -o /dev/null -H 'Host: bench.local' "http://127.0.0.1:$port/" && break
        sleep 0.5
    done
    wrk -t1 -c4 -d5s -s "$D/mix.lua" "http://127.0.0.1:$port/" >/dev/null
    callgrind_control -i on "$VP" >/dev/null 2>&1
    wrk -t1 -c4 -d"${SECONDS_RUN}s" -s "$D/mix.lua" "http://127.0.0.1:$port/" >"$D/$n.wrk"
    callgrind_control -i off "$VP" >/dev/null 2>&1
    callgrind_control -d "$VP" >/dev/null 2>&1
    kill "$VP"; wait "$VP" 2>/dev/null || true
    VP=""
    reqs="$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$D/$n.wrk")"
    instr="$(callgrind_annotate "$D/$n.callgrind.1" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)"
    per[$n]=$((instr / reqs))
    printf '%-9s %8d requests %14d instructions %9d per request\n' "$n" "$reqs" "$instr" "${per[$n]}"
    if [[ "${CACHE_SIM:-0}" == 1 ]]; then
        # Events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw, per request.
        callgrind_annotate "$D/$n.callgrind.1" 2>/dev/null | sed -n 's/^\(.*\) *PROGRAM TOTALS.*/\1/p' |
            sed 's/([^)]*)//g; s/,//g' | awk -v r="$reqs" -v n="$n" '{
                printf "%-9s per request: L1 data read misses %d, write misses %d, L1 instruction misses %d, last-level misses %d\n",
                    n, $5 / r, $6 / r, $4 / r, ($7 + $8 + $9) / r }'
    fi
done
awk -v a="${per[cong-waf]}" -v b="${per[cong]}" 'BEGIN { printf "instructions per request cong-waf / cong: %.2f\n", a / b }'
echo "(callgrind files in $D)"
