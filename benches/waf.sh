#!/usr/bin/env bash
# WAF cost: the same portal request mix through four proxies in front of the same origin, on
# loopback.
#
#   origin:   nginx answering every request (GET or POST) with the same 2 KB page, CPU 0
#   wrk:      1 thread, $CONNECTIONS keep-alive connections, a Lua script cycling through 20
#             requests (below), CPU 0
#   proxies, each alone on CPU 1 while it is measured:
#     modsec     nginx + ModSecurity 3 (libnginx-mod-http-modsecurity, libmodsecurity3) with
#                Debian's CRS (modsecurity-crs), paranoia 1, SecRuleEngine On
#     cong-waf   cong, tenant [waf] mode = "block", paranoia = 1 (same Debian CRS, cong's
#                default [waf] rules)
#     cong       cong, WAF off (the same configuration without [waf])
#     nginx      plain nginx proxy (anchor; the configuration of benches/load.sh)
#
# The mix (one cycle = 20 requests, every request carries browser-like headers and a cookie):
# 9 page GETs with query strings, 4 Vietnamese search GETs (percent-encoded UTF-8), 2
# urlencoded form POSTs, 2 JSON POSTs, 3 attacks (SQL injection in a query string, XSS in a
# form POST, path traversal in a query string). The WAF proxies refuse the 3 attacks with 403
# (15 % of requests), the others forward everything. Values vary as on a portal: the cookie
# (`_ga`, `lang`, `PHPSESSID`) changes every 5 requests (a new visitor), and the article id
# of the news GET changes with every request, so rule engines cannot live off values seen
# before.
#
# Before measuring, each of the 20 requests is sent once through each proxy with curl: a
# benign request must get 200 and the origin's page, an attack 403 from the WAF proxies and 200
# from the others; the script stops otherwise. During the runs, the Lua script counts the
# statuses: any status other than 200 and (for the WAF proxies) 403, or a 403 share other than
# the attacks' share, stops the script.
#
# For each proxy: a warm-up, then $RUNS runs of $DURATION seconds (the order rotates every
# run): requests/s and p99 from wrk, and the proxy's CPU time per request (user + system, all
# threads, nginx master and worker, from /proc/PID/stat) divided by all requests of the mix
# (refused ones included). Medians are printed with the ratios the targets are about.
#
# Usage: benches/waf.sh           (after cargo build --release; run as root)
# Environment: RUNS (5), DURATION (10 s), WARMUP (3 s), CONNECTIONS (50),
#              CONG_BIN (target/release/cong), KEEP=1 keeps the scratch directory,
#              PROXIES (default "modsec cong-waf cong nginx": a subset to measure),
#              PERF_DIR=DIR: after the measured runs, one more run of each proxy of
#              PERF_PROXIES (default cong-waf) under `perf record --call-graph dwarf`
#              (not counted), written to DIR/PROXY.perf.data,
#              IDLE_POLL=1: idle CPUs poll instead of halting for the whole run
#              (/dev/cpu_dma_latency held at 0). On a virtual machine, a send that wakes a
#              peer whose CPU halted costs the sender an inter-processor interrupt; the slower
#              a proxy, the more its peers (wrk, the origin) sleep, so that cost grows with the
#              proxy's own CPU time. Not the default: the targets are read without it.
# Installs nginx, wrk, libnginx-mod-http-modsecurity and modsecurity-crs with apt-get when
# they are missing.

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
trap cleanup EXIT

RUNS="${RUNS:-5}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
CONNECTIONS="${CONNECTIONS:-50}"
PROXIES="${PROXIES:-modsec cong-waf cong nginx}"
HOST=bench.local
TCK="$(getconf CLK_TCK)"
MODSEC_MODULE=/usr/lib/nginx/modules/ngx_http_modsecurity_module.so
NDK_MODULE=/usr/lib/nginx/modules/ndk_http_module.so
CRS_LOAD=/usr/share/modsecurity-crs/owasp-crs.load

need_waf_packages() {
    local missing=()
    [[ -f "$MODSEC_MODULE" ]] || missing+=(libnginx-mod-http-modsecurity)
    [[ -f "$CRS_LOAD" ]] || missing+=(modsecurity-crs)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
            { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } ||
            die "apt-get install ${missing[*]} failed"
    fi
    [[ -f "$MODSEC_MODULE" && -f "$NDK_MODULE" && -f "$CRS_LOAD" ]] || die "ModSecurity module or CRS missing"
    [[ -f /etc/nginx/modsecurity.conf && -f /etc/nginx/unicode.mapping ]] ||
        die "/etc/nginx/modsecurity.conf or unicode.mapping missing"
}

need_tools
need_waf_packages
make_workdir
if [[ "${IDLE_POLL:-0}" == 1 ]]; then
    # Released when the script exits (the file is closed).
    exec {IDLE_FD}>/dev/cpu_dma_latency || die "cannot open /dev/cpu_dma_latency"
    printf '\0\0\0\0' >&"$IDLE_FD"
    log "idle CPUs poll for this run (cpu_dma_latency 0)"
fi
read -r ORIGIN_PORT MODSEC_PORT NGINX_PORT CONGW_PORT CONGW_ADMIN CONG_PORT CONG_ADMIN < <(free_ports 7)

# --- origin --------------------------------------------------------------------------------
log "origin: nginx on 127.0.0.1:$ORIGIN_PORT (CPU 0), a 2 KB page for every request"
PAGE="$(head -c 1536 /dev/urandom | base64 -w 0 | tr '+/' 'xy')"
printf '%s' "$PAGE" >"$WORK/page"
nginx_conf "$WORK/origin" "    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        client_body_buffer_size 64k;
        location / {
            default_type text/html;
            return 200 \"$PAGE\";
        }
    }"
start_nginx 0 "$WORK/origin"
ORIGIN_PID="$LAST_PID"
wait_http "http://127.0.0.1:$ORIGIN_PORT/" 200 "" "$ORIGIN_PID" || die "origin did not start"

# --- nginx proxies ---------------------------------------------------------------------------
# $1: extra directives in the location (empty for the plain proxy).
proxy_block() {
    local port="$1" extra="$2"
    cat <<EOF
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        server_name $HOST;
        client_body_buffer_size 64k;
        location / {
$extra
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;
        }
    }
EOF
}

declare -A PID_OF PORT_OF RESULTS WAF_OF

if [[ " $PROXIES " == *" nginx "* ]]; then
    log "plain nginx proxy on 127.0.0.1:$NGINX_PORT (CPU 1)"
    nginx_conf "$WORK/nginx" "$(proxy_block "$NGINX_PORT" "")"
    start_nginx 1 "$WORK/nginx"
    PID_OF[nginx]="$LAST_PID" PORT_OF[nginx]="$NGINX_PORT" WAF_OF[nginx]=0
fi

if [[ " $PROXIES " == *" modsec "* ]]; then
    # ModSecurity: Debian's modsecurity.conf (request body access, JSON/XML body processors,
    # its limits), then SecRuleEngine On, no response body inspection and no audit log (cong
    # inspects requests only and has no audit log; matches still go to nginx's error log, as
    # cong's go to its event log), then the CRS files owasp-crs.load names (libmodsecurity3
    # has no IncludeOptional). crs-setup.conf leaves the paranoia level at its default, 1.
    log "nginx + ModSecurity + CRS on 127.0.0.1:$MODSEC_PORT (CPU 1)"
    mkdir -p "$WORK/modsec"
    cp /etc/nginx/unicode.mapping "$WORK/modsec/unicode.mapping"
    cat >"$WORK/modsec/main.conf" <<EOF
Include /etc/nginx/modsecurity.conf
SecRuleEngine On
SecResponseBodyAccess Off
SecAuditEngine Off
SecUnicodeMapFile $WORK/modsec/unicode.mapping 20127
Include /etc/modsecurity/crs/crs-setup.conf
Include /etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf
Include /usr/share/modsecurity-crs/rules/*.conf
Include /etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf
EOF
    chmod -R a+rX "$WORK/modsec"
    # nginx_conf checks the file before the module is loaded: a comment marks where the
    # ModSecurity directives go, and load_module (main context) goes above what it writes.
    nginx_conf "$WORK/modsec" "$(proxy_block "$MODSEC_PORT" "            # MODSECURITY")"
    sed -i -e "s|# MODSECURITY|modsecurity on; modsecurity_rules_file $WORK/modsec/main.conf;|" \
        -e "1i load_module $NDK_MODULE;\nload_module $MODSEC_MODULE;" "$WORK/modsec/nginx.conf"
    nginx -t -q -p "$WORK/modsec" -c "$WORK/modsec/nginx.conf" -g 'daemon off;' 2>"$WORK/modsec/check.log" ||
        die "nginx + ModSecurity config invalid: $(cat "$WORK/modsec/check.log")"
    start_nginx 1 "$WORK/modsec"
    PID_OF[modsec]="$LAST_PID" PORT_OF[modsec]="$MODSEC_PORT" WAF_OF[modsec]=1
fi

# --- cong ------------------------------------------------------------------------------------
# $1 name, $2 port, $3 admin port, $4 tenant [waf] table (empty: WAF off).
start_cong() {
    local name="$1" port="$2" admin="$3" waf="$4" dir="$WORK/$1"
    mkdir -p "$dir"
    # Bans off: every WAF refusal is a ban strike, and the attacks of the mix all come from
    # 127.0.0.1, which would be banned after 50 of them.
    cat >"$dir/cong.toml" <<EOF
[server]
threads = 1
access_log = false
grace_period = "1s"
shutdown_timeout = "1s"
pid_file = "$dir/cong.pid"
upgrade_sock = "$dir/upgrade.sock"

[[listen]]
address = "127.0.0.1:$port"

[admin]
address = "127.0.0.1:$admin"

[bans]
enabled = false

[[tenant]]
id = "bench"
hosts = ["$HOST"]
$waf
[tenant.pools.origin]
backends = ["127.0.0.1:$ORIGIN_PORT"]
EOF
    "$CONG_BIN" check -c "$dir/cong.toml" >&2 || die "cong check failed ($name)"
    log "$name on 127.0.0.1:$port, admin 127.0.0.1:$admin (CPU 1)"
    taskset -c 1 "$CONG_BIN" run -c "$dir/cong.toml" >"$dir/cong.log" 2>&1 &
    PID_OF[$name]=$!
    PIDS+=("$!")
    PORT_OF[$name]="$port"
    wait_http "http://127.0.0.1:$admin/readyz" 200 "" "${PID_OF[$name]}" ||
        die "$name not ready: $(tail -20 "$dir/cong.log")"
}
if [[ " $PROXIES " == *" cong-waf "* ]]; then
    start_cong cong-waf "$CONGW_PORT" "$CONGW_ADMIN" '
[tenant.waf]
mode = "block"
paranoia = 1
'
    WAF_OF[cong-waf]=1
fi
if [[ " $PROXIES " == *" cong "* ]]; then
    start_cong cong "$CONG_PORT" "$CONG_ADMIN" ""
    WAF_OF[cong]=0
fi

read -r -a NAMES <<<"$PROXIES"
for name in "${NAMES[@]}"; do
    [[ -n "${PID_OF[$name]:-}" ]] || die "unknown proxy '$name' in PROXIES"
    wait_http "http://127.0.0.1:${PORT_OF[$name]}/" 200 "$HOST" "${PID_OF[$name]}" ||
        die "$name not answering"
done

# --- the request mix -------------------------------------------------------------------------
# One line per request: kind|method|path|content type|body. The Lua script and the curl
# checks both read this file.
cat >"$WORK/mix.txt" <<'EOF'
ok|GET|/||
ok|GET|/tin-tuc/chi-tiet?id=48213&chuyen_muc=thoi-su||
ok|GET|/van-ban/quy-pham-phap-luat?so_hieu=15%2F2024%2FND-CP&nam=2024&trang=2||
ok|GET|/lich-cong-tac?tuan=47&nam=2026&don_vi=ubnd-tinh||
ok|GET|/thu-tuc-hanh-chinh?linh_vuc=dat-dai&cap=huyen&page=3||
ok|GET|/gioi-thieu/co-cau-to-chuc||
ok|GET|/static/css/main.css?v=20261120||
ok|GET|/tin-tuc?chuyen_muc=kinh-te&trang=5&sap_xep=moi-nhat||
ok|GET|/dich-vu-cong/tra-cuu-ho-so?ma_ho_so=000.00.31.H56-261120-0042||
ok|GET|/tim-kiem?q=th%E1%BB%A7+t%E1%BB%A5c+c%E1%BA%A5p+gi%E1%BA%A5y+ph%C3%A9p+x%C3%A2y+d%E1%BB%B1ng||
ok|GET|/tim-kiem?q=%C4%91%C4%83ng+k%C3%BD+khai+sinh&loai=thu-tuc||
ok|GET|/tim-kiem?q=l%E1%BB%8Bch+ti%E1%BA%BFp+c%C3%B4ng+d%C3%A2n+th%C3%A1ng+11||
ok|GET|/tim-kiem?q=ngh%E1%BB%8B+quy%E1%BA%BFt+h%E1%BB%99i+%C4%91%E1%BB%93ng+nh%C3%A2n+d%C3%A2n&tu_ngay=01%2F01%2F2026||
ok|POST|/gop-y|application/x-www-form-urlencoded|ho_ten=Nguy%E1%BB%85n+V%C4%83n+A&email=nguyenvana%40example.vn&dien_thoai=0912345678&tieu_de=C%E1%BA%A5p+l%E1%BA%A1i+gi%E1%BA%A5y+ph%C3%A9p&noi_dung=Xin+c%E1%BA%A5p+l%E1%BA%A1i+gi%E1%BA%A5y+ph%C3%A9p+x%C3%A2y+d%E1%BB%B1ng+do+b%E1%BB%8B+m%E1%BA%A5t.
ok|POST|/dang-ky-lich-hen|application/x-www-form-urlencoded|ho_ten=Tr%E1%BA%A7n+Th%E1%BB%8B+B%C3%ACnh&ngay=2026-11-25&gio=09%3A30&bo_phan=mot-cua&ghi_chu=N%E1%BB%99p+h%E1%BB%93+s%C6%A1+%C4%91%E1%BA%A5t+%C4%91ai
ok|POST|/api/ho-so|application/json|{"ma_ho_so":"H56.22-261120-0042","ho_ten":"Trần Thị Bình","so_cccd":"056190001234","dia_chi":"Số 12 đường Lê Lợi, phường 1","thu_tuc":"cap-giay-phep-xay-dung","ghi_chu":"Nộp bổ sung bản vẽ"}
ok|POST|/api/danh-gia|application/json|{"diem":5,"y_kien":"Cán bộ hướng dẫn nhiệt tình, thủ tục nhanh","ma_can_bo":1024,"an_danh":false}
attack|GET|/tin-tuc/chi-tiet?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--||
attack|POST|/gop-y|application/x-www-form-urlencoded|ho_ten=A&noi_dung=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E
attack|GET|/tai-lieu/tai-ve?file=..%2F..%2F..%2F..%2Fetc%2Fpasswd||
EOF
MIX_TOTAL="$(wc -l <"$WORK/mix.txt")"
MIX_ATTACKS="$(grep -c '^attack|' "$WORK/mix.txt")"

UA='Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36'
ACCEPT='text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'
ALANG='vi-VN,vi;q=0.9,en-US;q=0.6,en;q=0.5'
COOKIE='_ga=GA1.2.1234567890.1700000000; lang=vi'

cat >"$WORK/mix.lua" <<EOF
-- Cycles through the requests of mix.txt (one wrk thread, so the mix is exact) and counts
-- the response statuses. Values vary as they do on a portal: a new visitor (new cookie
-- values) every 5 requests, and the article id changes with every request.
local reqs = {}
local n, sent = 0, 0
init = function(args)
    for line in io.lines("$WORK/mix.txt") do
        local kind, method, path, ctype, body = line:match("^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$")
        if body == "" then body = nil end
        reqs[#reqs + 1] = { method = method, path = path, ctype = ctype, body = body }
    end
end
s200, s403, sother = 0, 0, 0
request = function()
    n = n % #reqs + 1
    sent = sent + 1
    local r = reqs[n]
    local visitor = math.floor(sent / 5)
    local h = {
        ["Host"] = "$HOST",
        ["User-Agent"] = "$UA",
        ["Accept"] = "$ACCEPT",
        ["Accept-Language"] = "$ALANG",
        ["Accept-Encoding"] = "gzip, deflate, br",
        ["Referer"] = "http://$HOST/",
        ["Cookie"] = string.format("_ga=GA1.2.%d.1700000000; lang=vi; PHPSESSID=%026x",
            1000000000 + visitor, visitor * 2654435761),
    }
    if r.ctype ~= "" then h["Content-Type"] = r.ctype end
    local path = r.path:gsub("id=48213", "id=" .. tostring(48213 + sent))
    return wrk.format(r.method, path, h, r.body)
end
response = function(status, headers, body)
    if status == 200 then s200 = s200 + 1
    elseif status == 403 then s403 = s403 + 1
    else sother = sother + 1 end
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
    local a, b, c = 0, 0, 0
    for _, t in ipairs(threads) do
        a = a + t:get("s200"); b = b + t:get("s403"); c = c + t:get("sother")
    end
    io.write(string.format("STATUS %d %d %d\n", a, b, c))
end
EOF

# --- correctness, once per proxy and request ---------------------------------------------------
for name in "${NAMES[@]}"; do
    port="${PORT_OF[$name]}"
    while IFS='|' read -r kind method path ctype body; do
        args=(-s -o "$WORK/check.body" -w '%{http_code}' -X "$method" -H "Host: $HOST" -H "User-Agent: $UA"
            -H "Accept: $ACCEPT" -H "Accept-Language: $ALANG" -H "Accept-Encoding: gzip, deflate, br"
            -H "Referer: http://$HOST/" -H "Cookie: $COOKIE")
        [[ -n "$ctype" ]] && args+=(-H "Content-Type: $ctype" --data-binary "$body")
        code="$(curl "${args[@]}" "http://127.0.0.1:$port$path")" || die "$name: curl $path failed"
        want=200
        [[ "$kind" == attack && "${WAF_OF[$name]}" == 1 ]] && want=403
        [[ "$code" == "$want" ]] || die "$name: $method $path got $code, expected $want"
        if [[ "$want" == 200 ]]; then
            cmp -s "$WORK/check.body" "$WORK/page" || die "$name: $method $path: body is not the origin's page"
        fi
    done <"$WORK/mix.txt"
    log "$name: all $MIX_TOTAL requests of the mix answered as expected"
done

# Runs wrk with the mix against proxy $1 for $2 seconds; prints "requests req_per_s p99_ms".
run_wrk() {
    local name="$1" secs="$2" out
    out="$(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${secs}s" --latency -s "$WORK/mix.lua" \
        "http://127.0.0.1:${PORT_OF[$name]}/")" || die "wrk failed"
    grep -q 'Socket errors' <<<"$out" && echo "warning: $name: $(grep 'Socket errors' <<<"$out")" >&2
    awk -v waf="${WAF_OF[$name]}" -v total="$MIX_TOTAL" -v attacks="$MIX_ATTACKS" '
        / requests in / { req = $1 }
        /^Requests\/sec:/ { rps = $2 }
        $1 == "99%" {
            v = $2
            if (v ~ /us$/) p99 = substr(v, 1, length(v) - 2) / 1000
            else if (v ~ /ms$/) p99 = substr(v, 1, length(v) - 2) + 0
            else if (v ~ /s$/) p99 = substr(v, 1, length(v) - 1) * 1000
        }
        $1 == "STATUS" { ok = $2; denied = $3; other = $4 }
        END {
            if (req == "" || rps == "" || p99 == "" || ok == "") { print "unparsable"; exit 1 }
            if (other > 0) { printf "%d responses neither 200 nor 403\n", other; exit 1 }
            share = denied / (ok + denied)
            want = waf ? attacks / total : 0
            if (share < want - 0.01 || share > want + 0.01) {
                printf "403 share %.4f, expected %.4f\n", share, want; exit 1
            }
            printf "%d %.1f %.3f\n", req, rps, p99
        }' <<<"$out" >"$WORK/wrk.parsed" || {
        echo "$out" >&2
        die "$name: $(cat "$WORK/wrk.parsed")"
    }
    cat "$WORK/wrk.parsed"
}

for name in "${NAMES[@]}"; do
    log "warm-up $name ${WARMUP}s"
    run_wrk "$name" "$WARMUP" >/dev/null
    RESULTS[$name]=""
done

printf '%-9s %4s %12s %10s %12s %10s\n' proxy run 'req/s' 'p99_ms' 'cpu_us/req' 'proxy_cpu%'
for ((r = 1; r <= RUNS; r++)); do
    # Rotate the order so that no proxy always runs first or last.
    order=("${NAMES[@]:$(((r - 1) % ${#NAMES[@]}))}" "${NAMES[@]:0:$(((r - 1) % ${#NAMES[@]}))}")
    for name in "${order[@]}"; do
        pid="${PID_OF[$name]}"
        t0="$(proc_ticks "$pid")"
        w="$(run_wrk "$name" "$DURATION")"
        read -r req rps p99 <<<"$w"
        t1="$(proc_ticks "$pid")"
        read -r us_req cpu_pct < <(awk -v d=$((t1 - t0)) -v tck="$TCK" -v n="$req" -v s="$DURATION" \
            'BEGIN { us = d * 1e6 / tck; printf "%.2f %.1f\n", us / n, us / (s * 1e4) }')
        printf '%-9s %4d %12.1f %10.3f %12.2f %10.1f\n' "$name" "$r" "$rps" "$p99" "$us_req" "$cpu_pct"
        RESULTS[$name]+="$rps $p99 $us_req $cpu_pct"$'\n'
    done
done

# Median of column $2 of the lines in $1.
median() {
    sed '/^$/d' <<<"$1" | awk -v c="$2" '{ print $c }' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo
printf '%-9s %4s %12s %10s %12s %10s\n' proxy '' 'req/s' 'p99_ms' 'cpu_us/req' 'proxy_cpu%'
declare -A MED
for name in "${NAMES[@]}"; do
    for c in 1 2 3 4; do
        MED[$name.$c]="$(median "${RESULTS[$name]}" "$c")"
    done
    printf '%-9s %4s %12.1f %10.3f %12.2f %10.1f\n' "$name" med \
        "${MED[$name.1]}" "${MED[$name.2]}" "${MED[$name.3]}" "${MED[$name.4]}"
done
echo
# The targets are read on the default measurement; with IDLE_POLL=1 the ratios are only shown.
verdict() { if [[ "${IDLE_POLL:-0}" == 1 ]]; then echo "not the targets' measurement"; else echo "$1"; fi; }
if [[ -n "${MED[cong-waf.3]:-}" && -n "${MED[modsec.3]:-}" ]]; then
    awk -v a="${MED[cong-waf.3]}" -v b="${MED[modsec.3]}" -v v="$(verdict '%s')" 'BEGIN {
        r = a / b; printf "cpu_us/req cong-waf / modsec: %.3f  (target <= 0.100: " v ")\n", r, r <= 0.1 ? "met" : "MISSED" }'
fi
if [[ -n "${MED[cong-waf.3]:-}" && -n "${MED[cong.3]:-}" ]]; then
    awk -v a="${MED[cong-waf.3]}" -v b="${MED[cong.3]}" -v v="$(verdict '%s')" 'BEGIN {
        r = a / b; printf "cpu_us/req cong-waf / cong:   %.2f   (target <= 2.00: " v ")\n", r, r <= 2 ? "met" : "MISSED" }'
fi
if [[ -n "${MED[cong.3]:-}" && -n "${MED[nginx.3]:-}" ]]; then
    awk -v a="${MED[cong.3]}" -v b="${MED[nginx.3]}" 'BEGIN { printf "cpu_us/req cong / nginx:       %.2f\n", a / b }'
fi

if [[ -n "${PERF_DIR:-}" ]]; then
    command -v perf >/dev/null 2>&1 || die "PERF_DIR set but perf not found"
    mkdir -p "$PERF_DIR"
    for p in ${PERF_PROXIES:-cong-waf}; do
        [[ -n "${PID_OF[$p]:-}" ]] || continue
        log "perf record on $p (pid ${PID_OF[$p]}) for ${DURATION}s"
        perf record -q -F 499 --call-graph dwarf,16384 -o "$PERF_DIR/$p.perf.data" -p "${PID_OF[$p]}" -- sleep "$((DURATION + 1))" 2>/dev/null &
        perf_pid=$!
        PIDS+=("$perf_pid")
        sleep 0.5
        run_wrk "$p" "$DURATION" >/dev/null
        wait "$perf_pid" || true
        log "profile in $PERF_DIR (perf report -i $PERF_DIR/$p.perf.data --no-children)"
    done
fi

echo "($RUNS runs of ${DURATION}s, $CONNECTIONS connections, mix of $MIX_TOTAL requests with $MIX_ATTACKS attacks," \
    "$(nproc) CPUs, $(nginx -v 2>&1 | sed 's/.*: //'), libmodsecurity3 $(dpkg-query -W -f '${Version}' libmodsecurity3 2>/dev/null || echo '?')," \
    "modsecurity-crs $(dpkg-query -W -f '${Version}' modsecurity-crs 2>/dev/null || echo '?'), $("$CONG_BIN" version)$([[ "${IDLE_POLL:-0}" == 1 ]] && echo ', idle CPUs polling'))"
