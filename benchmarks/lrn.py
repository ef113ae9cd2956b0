"""The paper's LRN, plain module against its fused Function (alexnet.kernels.lrn), forward + backward, in one process:

    python benchmarks/lrn.py [--device cpu|cuda] [--shapes 64x96x55x55,64x256x27x27] [--dtypes fp32,bf16]
                             [--layouts nchw,nhwc] [--reps 3] [--compiled] [--json]

The two shapes are the paper net's LRN inputs at batch 64 (after conv1 and conv2). Each call is
`torch.autograd.grad(lrn(x), x, g)`: forward and backward, no gradient accumulation. The forms alternate call by
call (after one untimed warm-up call each), so that a neighbour's load hits both alike; the figure is each form's
best time (perf_counter on a CPU; after a synchronisation on CUDA), in ms per call. bf16 is the tensor in bf16,
which is what the module sees under bf16 autocast; nhwc is channels_last, which the trainer uses with bf16.
`--compiled` adds torch.compile of the plain module (what a compiled step runs; compiling takes seconds per
shape, not timed).
The default run takes ~30 s on a 2-core CPU.
"""

import argparse
import json
import time
from collections.abc import Callable

import torch

from alexnet.kernels import lrn as fused_lrn
from alexnet.kernels import relu_lrn
from alexnet.models import LocalResponseNorm
from alexnet.runtime.device import device_name

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--shapes", default="64x96x55x55,64x256x27x27", help="B x C x H x W, comma-separated")
    p.add_argument("--dtypes", default="fp32,bf16", help=f"of {', '.join(DTYPES)}")
    p.add_argument("--layouts", default="nchw,nhwc")
    p.add_argument("--reps", type=int, default=3, help="timed calls per form (after one warm-up call)")
    p.add_argument("--compiled", action="store_true", help="also time torch.compile of the plain module")
    p.add_argument("--json", action="store_true", help="one JSON object per row instead of the table")
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(form: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, g: torch.Tensor) -> None:
    (grad,) = torch.autograd.grad(form(x), x, g)
    del grad


def measure(forms: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, g: torch.Tensor,
            reps: int) -> dict[str, float]:
    """Best ms per forward + backward call of each form, the forms interleaved call by call."""
    best = dict.fromkeys(forms, float("inf"))
    for form in forms.values():  # warm-up: oneDNN's kernel set-up, torch.compile's compilation
        step(form, x, g)
    for _ in range(reps):
        for name, form in forms.items():
            sync(x.device)
            start = time.perf_counter()
            step(form, x, g)
            sync(x.device)
            best[name] = min(best[name], (time.perf_counter() - start) * 1e3)
    return best


def rows(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    module = LocalResponseNorm()  # the paper's n = 5, alpha = 1e-4, beta = 0.75, k = 2
    forms: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "plain": module, "fused": lambda x: fused_lrn.fused(module, x)}
    if device.type == "cuda" and relu_lrn.available():  # the Triton kernels (train.triton_lrn), LRN alone
        forms["triton"] = lambda x: relu_lrn.relu_lrn(module, x, relu=False)
    if args.compiled:
        forms["compiled"] = torch.compile(module, dynamic=False)
    out = []
    for shape_text in args.shapes.split(","):
        shape = tuple(int(s) for s in shape_text.split("x"))
        for dtype_name in args.dtypes.split(","):
            for layout in args.layouts.split(","):
                fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
                # ReLU outputs: non-negative, a scale that puts alpha * S near k as in the trained net
                x = (torch.randn(shape, device=device).relu() * 30).to(DTYPES[dtype_name], memory_format=fmt)
                x.requires_grad_(True)
                g = torch.randn_like(x)
                ms = measure(forms, x, g, args.reps)
                out.append({"shape": shape_text, "dtype": dtype_name, "layout": layout,
                            **{f"{name}_ms": round(v, 2) for name, v in ms.items()},
                            **{f"{name}_speedup": round(ms["plain"] / v, 2) for name, v in ms.items()
                               if name != "plain"}})
                del x, g
    return out


def table(results: list[dict], device: torch.device) -> str:
    names = [k[:-3] for k in results[0] if k.endswith("_ms")]
    head = ["shape", "dtype", "layout"] + [f"{n} ms" for n in names] + [f"{n} x" for n in names if n != "plain"]
    lines = [f"LRN forward + backward, {device_name(device)}, torch {torch.__version__}",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in results:
        cells = [r["shape"], r["dtype"], r["layout"]] + [f"{r[f'{n}_ms']:.1f}" for n in names]
        cells += [f"{r[f'{n}_speedup']:.2f}" for n in names if n != "plain"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = rows(args)
    if args.json:
        for r in results:
            print(json.dumps(r))
    else:
        print(table(results, torch.device(args.device)))


if __name__ == "__main__":
    main()
