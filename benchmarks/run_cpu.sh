#!/usr/bin/env bash
# Every CPU figure in docs/benchmarks.md and docs/performance.md, from one command:
#
#   benchmarks/run_cpu.sh [OUT]          # default OUT: runs/bench-cpu-YYYYmmdd-HHMMSS
#
# Each measurement is one `alexnet bench ... --json` written to OUT/NAME.json; benchmarks/table.py then prints
# the tables of docs/benchmarks.md from those files (also saved as OUT/tables.md), and the peaks every MFU was
# divided by are copied to OUT/peaks.json. About 20 minutes on a quiet 2-core CPU (the default row alone, batch
# 128, takes 3-4). Run it on an otherwise idle machine: a second busy process on 2 cores can halve every figure.
#
# Precision: `alexnet bench` defaults to `--precision auto` (bf16 + channels_last on a CPU with AVX512-BF16 or
# AMX, fp32 otherwise). The `default` row keeps that default, as a user gets it; the fp32 rows ask for fp32 so that
# they mean the same on every CPU; the bf16 rows ask for bf16, with a small batch where bf16 is emulated.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
ALEXNET=${ALEXNET:-$BIN/alexnet}          # the command; override to run an uninstalled checkout
OUT=${1:-runs/bench-cpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

bench() {  # bench NAME ARGS...: one measurement, JSON to OUT/NAME.json (renamed into place when complete)
  local name=$1; shift
  echo "== $name: alexnet bench $* --json (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  $ALEXNET bench "$@" --json > "$OUT/$name.json.tmp"
  mv "$OUT/$name.json.tmp" "$OUT/$name.json"
}

# bf16 without bf16 units is ~20-100x slower than fp32: probe the CPU, as `--precision auto` does.
NATIVE_BF16=$($BIN/python -c "from alexnet.runtime.device import cpu_features; print(int(cpu_features().native_bf16))")

# Issue #11's goal: the command with no options but the device, against the d2l baseline in the same process
# (>= 1.6x on a CPU with AVX512-BF16 / AMX, >= 1.0x elsewhere). --remeasure-peak: this run's peaks are measured
# now (fp32, and bf16 where auto picks it); the later rows read them from the cache.
bench default           --device cpu --baseline --remeasure-peak

# d2l 7.1's net at 224 x 224: ours vs the d2l DataLoader baseline, same process, same batch.
D2L="--device cpu --model d2l --batch-size 32 --steps 5 --warmup 2"
bench d2l-auto          $D2L --baseline
bench d2l-fp32          $D2L --precision fp32 --baseline
bench d2l-fp32-cl       $D2L --precision fp32 --channels-last
bench d2l-fp32-threads1 $D2L --precision fp32 --threads 1 --remeasure-peak   # a 1-thread peak is another peak
bench d2l-fp32-compile  $D2L --precision fp32 --compile
if [ "$NATIVE_BF16" = 1 ]; then
  bench d2l-bf16        $D2L --precision bf16 --remeasure-peak
else  # emulated: a smaller batch and fewer steps keep it to minutes
  bench d2l-bf16        --device cpu --model d2l --batch-size 8 --steps 2 --warmup 1 --precision bf16 --baseline \
                        --remeasure-peak
  bench d2l-fp32-b8     --device cpu --model d2l --batch-size 8 --steps 2 --warmup 1 --precision fp32
fi

# The `small` net at native 28 x 28 (registry defaults: width 32, hidden 256), the quick preset's batch.
SMALL="--device cpu --model small --batch-size 256 --steps 20 --warmup 5"
bench small-auto          $SMALL --baseline
bench small-fp32          $SMALL --precision fp32 --baseline
bench small-fp32-cl       $SMALL --precision fp32 --channels-last
bench small-fp32-threads1 $SMALL --precision fp32 --threads 1
bench small-fp32-compile  $SMALL --precision fp32 --compile
bench small-bf16          --device cpu --model small --batch-size 256 --steps 5 --warmup 2 --precision bf16

# Data delivery alone (issue 3): the device-resident loader + on-device augmentation vs d2l's 4-worker DataLoader.
bench loader-224        --loader --device cpu --batch-size 128 --steps 50 --warmup 5

# Time to 0.90 test accuracy with the quick preset (the trainer's wall_s, evaluation included).
bench tta-quick --time-to-accuracy 0.90 --preset quick --device cpu --out "$OUT/tta-quick"

cp "${ALEXNET_CACHE:-$HOME/.cache/alexnet}/peaks.json" "$OUT/peaks.json" 2>/dev/null || true
$BIN/python benchmarks/table.py "$OUT" | tee "$OUT/tables.md"
