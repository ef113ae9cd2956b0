#!/usr/bin/env bash
# Every GPU claim of the docs, proven by one command (benchmarks/run_gpu.py says what each stage measures):
#
#   benchmarks/run_gpu.sh [--out DIR] [--data-dir D] [--smoke] [--stages a,b] [--budget S] [--run NAME] [--archive F]
#
# On a lent GPU machine (no network, the image's own torch): run it from the source tree, no install, with
# Fashion-MNIST carried as Debian's package file:
#   apt-get download dataset-fashion-mnist && mv dataset-fashion-mnist_*.deb .debs/     # here, once
#   benchmarks/run_gpu.sh --data-dir .debs/dataset-fashion-mnist_*.deb                   # there
#   benchmarks/run_gpu.sh --stages ddp --data-dir .debs/dataset-fashion-mnist_*.deb      # scaling: torchrun + NCCL
#                                                                     on 1, 2, 4, ... and all visible GPUs
# --smoke runs every stage at toy size on the CPU in about a minute (the default test suite does).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
# nvImageCodec (the hardware JPEG engines of an H100 / H200), where its wheels were carried in .whl/ (no network
# there): `pip download --no-deps nvidia-nvimgcodec-cu13 nvidia-nvjpeg` here, for Python 3.12, manylinux x86_64.
if [[ " $* " != *" --smoke "* ]] && ls .whl/nvidia_nvimgcodec_cu13-*.whl >/dev/null 2>&1 && "$PYTHON" -m pip install -q --no-deps --no-index \
     --target /tmp/nvimgcodec .whl/nvidia_nvjpeg-*.whl .whl/nvidia_nvimgcodec_cu13-*.whl; then
  export PYTHONPATH="/tmp/nvimgcodec${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" benchmarks/run_gpu.py "$@"
