#!/usr/bin/env bash
# Every CPU figure in docs/benchmarks.md and docs/performance.md, from one command:
#
#   benchmarks/run_cpu.sh [OUT]          # default OUT: runs/bench-cpu-YYYYmmdd-HHMMSS
#
# Each measurement is one `alexnet bench ... --json` written to OUT/NAME.json; benchmarks/table.py then prints
# the tables of docs/benchmarks.md from those files (also saved as OUT/tables.md). About 15 minutes on the
# 2-core AVX2 development machine when it is quiet; bf16 dominates (no native bf16 on that CPU). Run it on an
# otherwise idle machine: a second busy process on 2 cores can halve every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
ALEXNET=${ALEXNET:-$BIN/alexnet}          # the command; override to run an uninstalled checkout
OUT=${1:-runs/bench-cpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

bench() {  # bench NAME ARGS...: one measurement, JSON to OUT/NAME.json (renamed into place when complete)
  local name=$1; shift
  echo "== $name: alexnet bench $* --json" >&2
  $ALEXNET bench "$@" --json > "$OUT/$name.json.tmp"
  mv "$OUT/$name.json.tmp" "$OUT/$name.json"
}

# d2l 7.1's net at 224 x 224: ours vs the d2l DataLoader baseline, same process, same batch.
D2L="--device cpu --model d2l --batch-size 32 --steps 5 --warmup 2"
bench d2l-fp32          $D2L --baseline
bench d2l-fp32-cl       $D2L --channels-last
bench d2l-fp32-threads1 $D2L --threads 1
bench d2l-fp32-compile  $D2L --compile
# bf16 without bf16 hardware is ~30x slower per convolution: a smaller batch and fewer steps keep it to minutes.
bench d2l-bf16          --device cpu --model d2l --batch-size 8 --steps 2 --warmup 1 --precision bf16 --baseline
bench d2l-fp32-b8       --device cpu --model d2l --batch-size 8 --steps 2 --warmup 1

# The `small` net at native 28 x 28 (registry defaults: width 32, hidden 256), the quick preset's batch.
SMALL="--device cpu --model small --batch-size 256 --steps 20 --warmup 5"
bench small-fp32         $SMALL --baseline
bench small-fp32-cl      $SMALL --channels-last
bench small-fp32-threads1 $SMALL --threads 1
bench small-fp32-compile $SMALL --compile
bench small-bf16         --device cpu --model small --batch-size 256 --steps 5 --warmup 2 --precision bf16

# Data delivery alone (issue 3): the device-resident loader + on-device augmentation vs d2l's 4-worker DataLoader.
bench loader-224        --loader --device cpu --batch-size 128 --steps 50 --warmup 5

# Time to 0.90 test accuracy with the quick preset (the trainer's wall_s, evaluation included).
bench tta-quick --time-to-accuracy 0.90 --preset quick --device cpu --out "$OUT/tta-quick"

$BIN/python benchmarks/table.py "$OUT" | tee "$OUT/tables.md"
