#!/usr/bin/env bash
# Installs what building cong needs (cmake and a C compiler for pingora's dependencies) and,
# with --test, the real programs the test suite starts (curl; BIND's named and nsupdate for
# online checks and DNS-01; promtool; Chromium and Node.js for the accessibility checker;
# rsyslogd with the TLS driver as the SOC receiver; pebble and pebble-challtestsrv as the ACME CA;
# testssl for the TLS audit; redis-server shared by the nodes of the cluster tests; nginx and h2load
# for the benchmarks; the OWASP Core Rule Set). Debian/Ubuntu; installs only
# what is missing, so it is quick on a machine that already has everything.
set -euo pipefail

want_bins=(cmake cc)
want_pkgs=(cmake gcc)
if [[ "${1:-}" == "--test" ]]; then
  want_bins+=(curl named nsupdate promtool chromium node npm rsyslogd pebble testssl redis-server nginx h2load)
  want_pkgs+=(curl bind9 bind9-dnsutils prometheus chromium nodejs npm rsyslog pebble testssl.sh redis-server nginx nghttp2-client)
fi

# named and other daemons live in sbin, which is not on every user's PATH.
PATH="$PATH:/usr/sbin:/sbin"
missing=()
for i in "${!want_bins[@]}"; do
  command -v "${want_bins[$i]}" >/dev/null 2>&1 || missing+=("${want_pkgs[$i]}")
done
# The OWASP Core Rule Set as Debian installs it, which the WAF tests load unmodified.
if [[ "${1:-}" == "--test" ]] && [[ ! -d /usr/share/modsecurity-crs/rules ]]; then
  missing+=(modsecurity-crs)
fi
# The gtls network stream driver is a separate package; rsyslogd alone cannot do TLS.
if [[ "${1:-}" == "--test" ]] && ! ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1; then
  missing+=(rsyslog-gnutls)
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ "${1:-}" == "--test" ]] && [[ ! -d tests/a11y/node_modules/axe-core ]]; then
  # axe-core and playwright-core (driving the system Chromium) for the status page check.
  npm ci --prefix tests/a11y --no-audit --no-fund --loglevel=error
fi
