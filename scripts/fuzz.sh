#!/usr/bin/env bash
# Fuzz every target (or those named) for SECONDS each (default 600), on nightly with
# cargo-fuzz, seeding empty corpora from tests/fixtures, then minimise each corpus in place.
# Not part of .ci/run (time). Crashes land in fuzz/artifacts/<target>/; add each as a
# regression test. Prints executions and crashes per target at the end.
#   scripts/fuzz.sh                 # all four targets, 10 minutes each
#   SECONDS_EACH=60 scripts/fuzz.sh adapter
set -euo pipefail
cd "$(dirname "$0")/.."
each=${SECONDS_EACH:-600}
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(safetensors index adapter cache_entry)
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
summary=()
for t in "${targets[@]}"; do
   [ -n "$(ls -A "fuzz/corpus/$t" 2>/dev/null)" ] || python3 scripts/fuzz_seeds.py "$t"
  log="fuzz/artifacts/$t.log"
  mkdir -p "fuzz/artifacts/$t"
  # -rss_limit_mb: a header that asks for more is a defect (the 150 MB header case).
  set +e
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$each" \
    -rss_limit_mb=2048 -max_len=262144 -timeout=10 2>&1 | tee "$log" | grep -E "^#[0-9]+.*(pulse|DONE)|ERROR|panicked" || true
  set -e
  execs=$(grep -oE "^#[0-9]+" "$log" | tail -1 | tr -d '#')
  crashes=$(find "fuzz/artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
  cargo +nightly fuzz cmin "$t" "fuzz/corpus/$t" >/dev/null 2>&1 || true
  summary+=("$t: ${execs:-0} executions, $crashes crashes, $(ls "fuzz/corpus/$t" | wc -l) corpus files")
done
printf '%s\n' "${summary[@]}"
