#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (fuzz/README.md): each for FUZZ_TIME seconds, one
# after the other, with the committed seeds (fuzz/corpus/TARGET, read only) and a corpus of
# its own (fuzz/corpus-run/TARGET, git-ignored) that keeps what the runs found between runs.
# Each target first runs every committed seed once: a seed that fails stops the script (a
# regression). Then it fuzzes for FUZZ_TIME; a crash found then stops the script too, unless
# FUZZ_NEW_FINDINGS=warn (what CI sets: a new finding is printed and kept in
# fuzz/artifacts/TARGET/, to become a regression test, but does not fail an unrelated change).
#
#   bash bench/fuzz.sh                      # every target, 600 s each
#   FUZZ_TIME=3600 bash bench/fuzz.sh config router_find
#   FUZZ_TIME=25 FUZZ_JOBS=1 bash bench/fuzz.sh   # what CI does (.ci/run "fuzz smoke")
#
# Knobs: FUZZ_TIME (seconds per target, default 600), FUZZ_JOBS (parallel fuzzing processes
# per target, default 1), FUZZ_SANITIZER (`none`, the default, or `address`), FUZZ_RSS_MB
# (libFuzzer's memory limit, default 2048), FUZZ_NEW_FINDINGS (`fail`, the default, or `warn`).
# Needs cargo-fuzz (installed if missing); the toolchain is stable, so RUSTC_BOOTSTRAP=1 lets
# it take the nightly-only flags libFuzzer's instrumentation needs.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

FUZZ_TIME=${FUZZ_TIME:-600}
FUZZ_JOBS=${FUZZ_JOBS:-1}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-none}
FUZZ_RSS_MB=${FUZZ_RSS_MB:-2048}
FUZZ_NEW_FINDINGS=${FUZZ_NEW_FINDINGS:-fail}
findings=()
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

build_start=$(date +%s)
cargo fuzz build --sanitizer "$FUZZ_SANITIZER"
echo "fuzz build: $(( $(date +%s) - build_start )) s (sanitizer: $FUZZ_SANITIZER)"

for target in "${targets[@]}"; do
  mkdir -p "corpus-run/$target" "corpus/$target"
  seeds=("corpus/$target")
  # The example configs are seeds of the config target too.
  if [ "$target" = config ]; then seeds+=(../examples/configs); fi
  start=$(date +%s)
  echo "== fuzz $target: the committed seeds =="
  if ! cargo fuzz run --sanitizer "$FUZZ_SANITIZER" "$target" "${seeds[@]}" -- \
      -runs=0 -rss_limit_mb="$FUZZ_RSS_MB" -timeout=10 2>&1 | tail -n 30; then
    echo "fuzz $target: a committed seed FAILED (input in fuzz/artifacts/$target/)"
    exit 1
  fi
  echo "== fuzz $target for ${FUZZ_TIME}s =="
  jobs=()
  if [ "$FUZZ_JOBS" -gt 1 ]; then jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS"); fi
  if ! cargo fuzz run --sanitizer "$FUZZ_SANITIZER" "$target" "corpus-run/$target" "${seeds[@]}" -- \
      -max_total_time="$FUZZ_TIME" -rss_limit_mb="$FUZZ_RSS_MB" -timeout=10 \
      -print_final_stats=1 "${jobs[@]}" 2>&1 | tail -n 30; then
    echo "fuzz $target: NEW FINDING (input in fuzz/artifacts/$target/)"
    if [ "$FUZZ_NEW_FINDINGS" != warn ]; then exit 1; fi
    findings+=("$target")
    continue
  fi
  echo "fuzz $target: ok in $(( $(date +%s) - start )) s"
done
if [ "${#findings[@]}" -gt 0 ]; then
  echo "fuzz: new findings in ${findings[*]}: turn each into a regression test (fuzz/artifacts/)"
fi
