"""Ours against the d2l baseline in one process: what `alexnet bench` prints in its throughput mode."""

import dataclasses

import torch

from alexnet.bench.baseline import measure_baseline
from alexnet.bench.throughput import BenchSpec, measure_ours
from alexnet.runtime.device import device_name, pick_device
from alexnet.runtime.settings import num_threads


def run_bench(spec: BenchSpec, *, baseline: bool = False, baseline_dataset=None) -> dict:
    """Everything `alexnet bench` prints: ours, optionally the d2l baseline (same process, same device, same
    batch and timing rules) and their ratio of training images/s."""
    device = pick_device(spec.device)
    with num_threads(spec.threads):  # both sides get the same CPU threads
        ours = measure_ours(spec)
        base = measure_baseline(spec, dataset=baseline_dataset) if baseline else None
    return {"ours": ours, "baseline": base,
            "ratio": None if base is None else ours["train_images_per_sec"] / base["train_images_per_sec"],
            "device": device_name(device), "torch": torch.__version__,
            "config": {**dataclasses.asdict(spec), "threads": torch.get_num_threads()}}


def format_bench(result: dict) -> str:
    c = result["config"]
    lines = [f"{c['model']} @{c['input_size']}, batch {c['batch_size']}, {c['precision']}"
             f"{', channels_last' if c['channels_last'] else ''}{', compiled' if c['compile'] else ''}, "
             f"{'synthetic data' if c['synthetic'] else 'Fashion-MNIST'}; {c['steps']} timed steps after "
             f"{c['warmup']} warm-up; {result['device']}; torch {result['torch']}",
             f"{'':<10}{'train img/s':>12}{'infer img/s':>12}{'step ms':>10}{'GFLOP/s':>10}{'MFU':>8}"
             f"{'peak mem':>11}"]
    for name in ("ours", "baseline"):
        r = result[name]
        if r is None:
            continue
        infer = "-" if r["infer_images_per_sec"] is None else f"{r['infer_images_per_sec']:.1f}"
        lines.append(f"{name:<10}{r['train_images_per_sec']:>12.1f}{infer:>12}{r['step_ms']:>10.1f}"
                     f"{r['achieved_flops'] / 1e9:>10.1f}{r['mfu']:>8.1%}{r['peak_memory_bytes'] / 2**20:>8.0f} MiB")
    o = result["ours"]
    if result["ratio"] is not None:
        lines.append(f"ratio ours / baseline (training images/s): {result['ratio']:.2f}x")
    lines.append(f"FLOPs per training image: {o['flops_per_image']:,} (forward + backward, torch.utils.flop_counter)")
    peaks = {r["peak_precision"]: r for r in (o, result["baseline"]) if r is not None}  # the baseline is fp32
    lines += [f"peak ({name}): {r['peak_flops'] / 1e9:.1f} GFLOP/s, the best median of {name} matmuls, at "
              f"{r['peak_matmul_size']}^3 (float32 matmul precision '{r['float32_matmul_precision']}')"
              for name, r in peaks.items()]
    lines.append(f"peak memory: {o['peak_memory_kind']}")
    return "\n".join(lines)
