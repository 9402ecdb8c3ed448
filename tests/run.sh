#!/usr/bin/env bash
# Runs every check and test of cong: formatting, lints, unit tests and the integration tests
# that start the real binary and real peers on loopback. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/deps.sh --test
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets 2>&1 | tee target/test-output.txt
# One closing line for the whole run.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' target/test-output.txt
