"""What the Triton kernels compile to for an H100/H200 (sm_90), without a GPU: static SASS instructions per thread
and global loads (their widths), for the max-pool (alexnet/kernels/pool.py) of the d2l net's first pool (bf16,
channels-last, 3x3 stride 2, 96 channels) and the ReLU + LRN (alexnet/kernels/relu_lrn.py) of the paper net's first
LRN (bf16, channels-last, 96 channels; the paper's beta = 0.75 and another beta). Integer arguments are marked
divisible by 16 where the real launch's are (Triton specialises them so: the pointers, the element count, C = 96),
which is what lets it vectorise. Each thread computes 8 elements (BLOCK 1024, 4 warps).

    .venv/bin/python benchmarks/kernel_sass.py [--pool FILE] [--lrn FILE]   # FILE: another version to compare

A count, not a timing: the GPU run (benchmarks/run_gpu.sh: bench variant fused_pool, the folder stage's
step_triton_lrn_images_per_sec) measures the time.
"""

import argparse
import collections
import importlib.util
import os
import re
import subprocess
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ROOT = Path(__file__).resolve().parent.parent
D16 = [["tt.divisibility", 16]]
INTS = ("total", "C", "H", "W", "OH", "OW", "HW")
FLOATS = ("alpha", "beta", "k")


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"{path.stem}_under_test", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def compiled(fn, pointers: dict, constants: dict):
    """fn compiled for sm_90 with the given pointer types, int32 sizes and constexprs (those fn takes)."""
    names = fn.arg_names
    signature = {**pointers, **dict.fromkeys(INTS, "i32"), **dict.fromkeys(FLOATS, "fp32"),
                 **{n: "constexpr" for n in constants if n in names}}
    signature = {n: signature[n] for n in names}
    attrs = {(names.index(n),): D16 for n in (*pointers, "total", "C")}
    return triton.compile(ASTSource(fn, signature, {k: v for k, v in constants.items() if k in names}, attrs),
                          target=GPUTarget("cuda", 90, 32))


def counts(kernel) -> tuple[int, collections.Counter]:
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    cubin = Path("/tmp") / f"kernel_sass_{os.getpid()}.cubin"
    cubin.write_bytes(kernel.asm["cubin"])
    text = subprocess.run([nvdisasm, "-c", str(cubin)], capture_output=True, text=True, check=True).stdout
    cubin.unlink()
    lines = [line for line in text.splitlines() if re.search(r"/\*[0-9a-f]{4}\*/", line)]
    return len(lines), collections.Counter(m.group(0) for line in lines if (m := re.search(r"LDG\S*", line)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", type=Path, default=ROOT / "alexnet" / "kernels" / "pool.py")
    p.add_argument("--lrn", type=Path, default=ROOT / "alexnet" / "kernels" / "relu_lrn.py")
    args = p.parse_args()
    module = load(args.pool)
    print(f"triton {triton.__version__}, sm_90; instructions per thread (BLOCK 1024, 4 warps: 8 elements each)")
    print("max-pool 3x3 stride 2 + ReLU:")
    for int64 in (False, True):
        constants = {"K": 3, "S": 2, "RELU": True, "CODE": True, "CHANNELS_LAST": True, "INT64": int64,
                     "BLOCK": module.BLOCK}
        if int64 and "INT64" not in module._forward.arg_names:
            break  # an older version: one index width only
        forward = compiled(module._forward, {"x": "*bf16", "out": "*bf16", "code": "*i8"}, constants)
        backward = compiled(module._backward, {"grad_out": "*bf16", "code": "*i8", "grad_in": "*bf16"}, constants)
        for name, kernel in (("forward", forward), ("backward", backward)):
            n, loads = counts(kernel)
            width = "int64" if int64 else "int32" if "INT64" in module._forward.arg_names else "as written"
            print(f"{name:8s} indices {width:10s} {n:5d} instructions, loads {dict(loads)}")
    module = load(args.lrn)
    print("ReLU + LRN, n = 5:")
    for beta in (0.75, 0.6):
        constants = {"BEFORE": 2, "AFTER": 2, "THREE_QUARTERS": beta == 0.75, "RELU": True, "CHANNELS_LAST": True,
                     "INT64": False, "BLOCK": module.BLOCK}
        forward = compiled(module._forward, {"x": "*bf16", "out": "*bf16"}, constants)
        backward = compiled(module._backward, {"x": "*bf16", "g": "*bf16", "grad_x": "*bf16"},
                            {**constants, "POSITIVE_K": True})  # the paper's k = 2
        for name, kernel in (("forward", forward), ("backward", backward)):
            n, loads = counts(kernel)
            print(f"{name:8s} beta {beta:<5} {n:5d} instructions, loads {dict(loads)}")


if __name__ == "__main__":
    main()
