#!/usr/bin/env bash
# Installs what building cong needs (cmake and a C compiler for pingora's dependencies) and,
# with --test, the real programs the test suite starts (curl; pebble and pebble-challtestsrv as
# the ACME CA; BIND's named and nsupdate for DNS-01; testssl for the TLS audit; nginx and h2load
# for the TLS benchmark). Debian/Ubuntu; installs only
# what is missing, so it is quick on a machine that already has everything.
set -euo pipefail

want_bins=(cmake cc)
want_pkgs=(cmake gcc)
if [[ "${1:-}" == "--test" ]]; then
  want_bins+=(curl pebble named nsupdate testssl nginx h2load)
  want_pkgs+=(curl pebble bind9 bind9-dnsutils testssl.sh nginx nghttp2-client)
fi

# named and other daemons live in sbin, which is not on every user's PATH.
PATH="$PATH:/usr/sbin:/sbin"
missing=()
for i in "${!want_bins[@]}"; do
  command -v "${want_bins[$i]}" >/dev/null 2>&1 || missing+=("${want_pkgs[$i]}")
done
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
