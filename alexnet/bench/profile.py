"""`alexnet bench --profile`: where a training step's time goes (issue #21), as a table per layer and per step.

Per layer: the net is cut into units at each convolution, pooling, flatten and linear layer (a convolution with the
activation and LRN after it is one unit, so an in-place ReLU never writes into a timed input). Each unit is timed
on its own, on the input the whole net gives it, in the trainer's precision, memory format and execution forms
(conv1 folded, a max-pool before its ReLU, where the trainer does so): forward, then backward (the gradients of its
parameters and, but for the first unit, of its input, as in training). FLOPs are counted for each by torch's flop
counter, so the achieved rate is theirs. On CUDA, torch.profiler records the kernels of each: the share of the
unit's GPU time in kernels whose names say tensor core (xmma, hmma, gmma, wgmma, tensorop, or CUTLASS but not its
SIMT kernels: a heuristic on names).

Per step: the trainer's own `train_step` over a few steps (after warm-up) under torch.profiler: the GPU's busy
time per step (sum of the kernels' times), the host's time per step, the host time spent waiting for the device
(synchronising CUDA calls) and so the host's own work; and the kernels that took the most GPU time. A step whose
host work exceeds its GPU time is bound by Python and kernel launches. On a CPU the per-step figure is the wall
time and the per-layer table is the same, timed with the host clock, without kernels.
"""

import re
import statistics
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from alexnet.bench.throughput import BenchSpec, build_trainer, forever, options_label, write_synthetic_fashion_mnist
from alexnet.bench.timing import time_steps
from alexnet.kernels.forward import Step, plan, pool_follows_relu, run
from alexnet.runtime.device import device_name, pick_device, sync
from alexnet.runtime.settings import torch_settings

CUT = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)
# cuDNN's IEEE-fp32 kernels carry "xmma" in their names too ("..._f32f32_f32f32_..."): not tensor cores. cuBLAS
# names its Hopper GEMMs "nvjet_[smNN_]<types>_...", types such as hsh, hss, bsb, tst (half, bf16, tf32 inputs): warp-
# group MMA kernels. The H200 profile of 2026-12-04 counted the d2l net's Linear layers at 0 % tensor cores while they
# ran at 87 TFLOP/s, most likely for want of this name (it kept no kernel names of those layers). An all-single
# "sss" could be IEEE fp32 and is not counted.
TENSOR_CORE = re.compile(r"(?!.*f32f32_f32f32)"
                         r"(?:xmma|hmma|gmma|tensorop|cutlass(?!.*simt)|s(?:80|90)_.*(?:bf16|f16|tf32)"
                         r"|nvjet_(?:sm\d+_)?(?!sss_)[a-z]{3}_)", re.I)
SYNCING = re.compile(r"Synchronize|cudaMemcpy(?!Async)", re.I)  # host calls that block until the device is done
REPEATS = 10  # timed forward and backward passes per unit


def units(model: nn.Module, pool_first: bool = False) -> list[tuple[str, list[nn.Module]]]:
    """The net's layers in order (iterating the model, as the book's shape loop), grouped into timed units;
    `pool_first`: a max-pool after a ReLU stays in the ReLU's unit, where the trainer runs it before the ReLU (with
    pool_first or bias_after_pool)."""
    names = {id(m): n for n, m in model.named_modules()}
    groups: list[tuple[str, list[nn.Module]]] = []
    for layer in model:  # type: ignore[attr-defined]
        joins = pool_first and groups and pool_follows_relu([groups[-1][1][-1], layer], 0)
        if (isinstance(layer, CUT) and not joins) or not groups:
            groups.append((names.get(id(layer), type(layer).__name__), [layer]))
        else:
            groups[-1][1].append(layer)
    return groups


def profile_step(spec: BenchSpec) -> dict:
    """The per-layer table and the per-step figures of `spec`'s training step (see the module docstring)."""
    device = pick_device(spec.device)
    with tempfile.TemporaryDirectory(prefix="alexnet-profile-") as scratch, \
            torch_settings(device, threads=spec.threads, precision=spec.precision):
        data_dir = spec.data_dir
        if spec.synthetic or data_dir is None:
            data_dir = str(write_synthetic_fashion_mnist(Path(scratch) / "data", max(spec.batch_size * 4, 1000)))
        trainer = build_trainer(spec, data_dir, Path(scratch) / "run")
        batches = forever(trainer.data.train.batches)
        step = _step_figures(trainer, batches, spec, device)
        layers = _layer_rows(trainer, next(batches).images, device)
    return {"model": spec.model, "model_options": spec.model_options, "input_size": spec.input_size,
            "batch_size": spec.batch_size,
            "precision": trainer.precision.name, "channels_last": trainer.precision.channels_last,
            "fast_paths": trainer.run_info["fast_paths"], "device": device_name(device), "torch": torch.__version__,
            "step": step, "layers": layers}


def _step_figures(trainer, batches, spec: BenchSpec, device: torch.device) -> dict:
    trainer.net.train()
    for _ in range(max(spec.warmup, 1)):  # the first steps autotune, capture the graph, compile
        trainer.train_step(next(batches))
    sync(device)
    steps = max(spec.steps, 3)
    wall = time_steps(lambda: trainer.train_step(next(batches)), steps=steps, warmup=0, device=device)
    out: dict = {"steps": steps, "wall_ms": 1000 * float(wall) / steps}
    if device.type != "cuda":
        return out
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            trainer.train_step(next(batches))
        sync(device)
    kernels: dict[str, float] = {}
    waiting = 0.0
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name] = kernels.get(event.name, 0.0) + event.device_time_total
        elif SYNCING.search(event.name):
            waiting += event.cpu_time_total
    gpu_ms = sum(kernels.values()) / 1000 / steps
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:12]
    return {**out, "gpu_ms": gpu_ms, "host_wait_ms": waiting / 1000 / steps,
            "host_work_ms": out["wall_ms"] - waiting / 1000 / steps,
            "tensor_core_share": _share(kernels),
            "top_kernels": [{"name": name[:120], "ms_per_step": t / 1000 / steps} for name, t in top]}


def _share(kernels: dict[str, float]) -> float | None:
    total = sum(kernels.values())
    return None if not total else sum(t for n, t in kernels.items() if TENSOR_CORE.search(n)) / total


def _layer_rows(trainer, images: torch.Tensor, device: torch.device) -> list[dict]:
    """One row per unit: forward and backward ms, FLOPs, achieved TFLOP/s, tensor-core share (CUDA)."""
    model, precision = trainer.model, trainer.precision
    fold_conv1, pool_first = trainer.fast["space_to_depth"].on, trainer.fast["pool_first"].on
    fused_lrn, fused_pool = trainer.fast["fused_lrn"].on, trainer.fast["fused_pool"].on
    bias_after_pool, triton_lrn = trainer.fast["bias_after_pool"].on, trainer.fast["triton_lrn"].on
    with torch.no_grad():
        x = trainer.data.train_pipeline(images, trainer.aug_generator)
        x = x.contiguous(memory_format=precision.memory_format)
    rows = []
    for index, (name, layers) in enumerate(units(model, pool_first or bias_after_pool)):
        steps = plan(layers, fold_first=fold_conv1 and index == 0, pool_first=pool_first, fused_lrn=fused_lrn,
                     fused_pool=fused_pool, bias_after_pool=bias_after_pool, triton_lrn=triton_lrn)
        with precision.autocast(device):
            rows.append(_time_unit(name, layers, steps, x, device, input_grad=index > 0))
            with torch.no_grad():
                x = run(layers, steps, x)
        x = x.detach()
    return rows


def _time_unit(name: str, layers: list[nn.Module], steps: list[Step], x: torch.Tensor, device: torch.device, *,
               input_grad: bool) -> dict:
    """`input_grad`: whether training computes the gradient of this unit's input (not for the first unit: the
    images need none, and the strided conv1's input gradient alone is slower than the rest of its backward)."""
    x = x.detach().requires_grad_(input_grad and x.is_floating_point())
    params = [p for layer in layers for p in layer.parameters()]
    inputs = [x, *params] if x.requires_grad else params
    forward = lambda: run(layers, steps, x)
    y = forward()
    upstream = torch.randn_like(y)
    backward = lambda: torch.autograd.grad(y, inputs, upstream, retain_graph=True) if inputs else None
    with FlopCounterMode(display=False) as fwd_count:
        forward()
    with FlopCounterMode(display=False) as bwd_count:
        backward()
    fwd_s = time_steps(forward, steps=REPEATS, warmup=2, device=device)
    bwd_s = time_steps(backward, steps=REPEATS, warmup=2, device=device)
    row = {"layer": name, "types": "+".join(type(m).__name__ for m in layers),
           "output": list(y.shape[1:]), "forward_ms": 1000 * statistics.median(fwd_s.each),
           "backward_ms": 1000 * statistics.median(bwd_s.each),
           "forward_flops": fwd_count.get_total_flops(), "backward_flops": bwd_count.get_total_flops()}
    seconds = (row["forward_ms"] + row["backward_ms"]) / 1000
    row["tflops"] = (row["forward_flops"] + row["backward_flops"]) / seconds / 1e12 if seconds > 0 else None
    row["tensor_core_share"] = _kernel_share(forward, backward) if device.type == "cuda" else None
    return row


def _kernel_share(forward, backward) -> float | None:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        forward()
        backward()
        torch.cuda.synchronize()
    kernels: dict[str, float] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name] = kernels.get(event.name, 0.0) + event.device_time_total
    return _share(kernels)


def format_profile(result: dict) -> str:
    s = result["step"]
    options = options_label(result.get("model_options", {}))
    lines = [f"profile: {result['model']}{options} @{result['input_size']}, batch {result['batch_size']}, "
             f"{result['precision']}{', channels_last' if result['channels_last'] else ''}; {result['device']}; "
             f"torch {result['torch']}", f"fast paths: {'; '.join(result['fast_paths'].values())}"]
    lines += _layer_table(result["layers"])
    step = f"step ({s['steps']} profiled): wall {s['wall_ms']:.3f} ms"
    if "gpu_ms" in s:
        share = "-" if s["tensor_core_share"] is None else f"{s['tensor_core_share']:.0%}"
        bound = "the host (Python, launches)" if s["host_work_ms"] > s["gpu_ms"] else "the GPU"
        step += (f", GPU busy {s['gpu_ms']:.3f} ms ({share} in tensor-core kernels), host work "
                 f"{s['host_work_ms']:.3f} ms + waiting {s['host_wait_ms']:.3f} ms: bound by {bound}")
        lines += [step, "top kernels (ms per step):"]
        lines += [f"  {k['ms_per_step']:8.3f}  {k['name']}" for k in s["top_kernels"]]
    else:
        lines.append(step)
    return "\n".join(lines)


def _layer_table(rows: list[dict]) -> list[str]:
    """The per-unit table, its header first and its sums last. The unit and layer columns are as wide as their
    longest entry (at least the usual 14 and 28), so no name is ever cut and every figure stays in its column."""
    unit_w = max([14, *(len(r["layer"]) + 2 for r in rows)])
    types_w = max([28, *(len(r["types"]) + 2 for r in rows)])
    lines = [f"{'unit':<{unit_w}}{'layers':<{types_w}}{'output':>16}{'fwd ms':>9}{'bwd ms':>9}{'GFLOP':>9}"
             f"{'GFLOP/s':>9}{'TC':>6}"]
    for r in rows:
        gflop = (r["forward_flops"] + r["backward_flops"]) / 1e9
        rate = "-" if not r["tflops"] else f"{1000 * r['tflops']:.0f}"
        tc = "-" if r["tensor_core_share"] is None else f"{r['tensor_core_share']:.0%}"
        lines.append(f"{r['layer']:<{unit_w}}{r['types']:<{types_w}}{'x'.join(map(str, r['output'])):>16}"
                     f"{r['forward_ms']:>9.3f}{r['backward_ms']:>9.3f}{gflop:>9.2f}{rate:>9}{tc:>6}")
    total_f, total_b = sum(r["forward_ms"] for r in rows), sum(r["backward_ms"] for r in rows)
    lines.append(f"{'sum of units':<{unit_w + types_w + 16}}{total_f:>9.3f}{total_b:>9.3f}")
    return lines
