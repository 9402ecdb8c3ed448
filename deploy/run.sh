#!/usr/bin/env bash
# Builds and runs cong. With no arguments it uses the configuration compiled into the binary:
# HTTP on port 8080 (IPv4 and IPv6), admin on 127.0.0.1:9900, two demo sites.
# Try: curl -H 'Host: demo.localhost' http://127.0.0.1:8080/
# Extra arguments go to `cong run`, e.g. `bash deploy/run.sh -c config/cong.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/deps.sh
exec cargo run --release --locked -- run "$@"
