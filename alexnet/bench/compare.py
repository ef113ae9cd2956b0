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
    c, o, base = result["config"], result["ours"], result["baseline"]
    lines = [f"{c['model']} @{c['input_size']}, batch {c['batch_size']}, {o['precision']}"
             f"{', channels_last' if o['channels_last'] else ''}{', compiled' if c['compile'] else ''}, "
             f"{'synthetic data' if c['synthetic'] else 'Fashion-MNIST'}; {c['steps']} timed steps after "
             f"{c['warmup']} warm-up; {result['device']}; torch {result['torch']}",
             f"{'':<10}{'train img/s':>12}{'infer img/s':>12}{'step ms':>10}{'GFLOP/s':>10}{'MFU':>8}"
             f"{'peak mem':>11}"]
    for name, r in (("ours", o), ("baseline", base)):
        if r is None:
            continue
        infer = "-" if r["infer_images_per_sec"] is None else f"{r['infer_images_per_sec']:.1f}"
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        lines.append(f"{name:<10}{r['train_images_per_sec']:>12.1f}{infer:>12}{r['step_ms']:>10.1f}"
                     f"{r['achieved_flops'] / 1e9:>10.1f}{mfu:>8}{r['peak_memory_bytes'] / 2**20:>8.0f} MiB")
    if result["ratio"] is not None:
        lines.append(f"ratio ours / baseline (training images/s): {result['ratio']:.2f}x")
    lines.append(f"ours: {o['precision']} ({o['precision_reason']})")
    lines.append(f"FLOPs per training image: {o['flops_per_image']:,} (forward + backward, torch.utils.flop_counter)")
    sides = [(name, r) for name, r in (("ours", o), ("baseline", base)) if r is not None]
    lines += peak_lines(sides)
    lines.append(f"peak memory: {o['peak_memory_kind']}")
    return "\n".join(lines)


def peak_lines(sides: list[tuple[str, dict]]) -> list[str]:
    """Each peak once (ours and the baseline may share one), where it came from, then every MFU left out and
    why, the emulation verdict, and on CUDA the datasheet's MFU."""
    lines, seen = [], set()
    for _, r in sides:
        if r["peak_precision"] in seen:
            continue
        seen.add(r["peak_precision"])
        where = "from the cache" if r["peak_source"] == "cache" else "measured now, cached"
        load = "" if r["peak_loadavg"] is None else f" at load average {r['peak_loadavg'][0]}"
        fmp = (f" (float32 matmul precision '{r['float32_matmul_precision']}')"
               if r["peak_precision"] in ("fp32", "tf32") else "")
        lines += [f"peak ({r['peak_precision']}): {r['peak_flops'] / 1e9:.1f} GFLOP/s at {r['peak_matmul_size']}^3, "
                  f"{where} ({r['peak_cache_file']}, measured {r['peak_measured_at']}{load}; --remeasure-peak "
                  "measures it again)",
                  f"  how: {r['peak_method']}{fmp}"]
    for name, r in sides:
        if r["emulated"]:
            lines.append(f"{name}: {r['precision']} is EMULATED on this CPU: its "
                         f"matmuls measured {r['slowdown_vs_fp32']:.1f}x slower than fp32 "
                         f"({r['peak_flops'] / 1e9:.1f} vs {r['fp32_peak_flops'] / 1e9:.1f} GFLOP/s); "
                         "--precision fp32 is the fast one here")
        elif r["slowdown_vs_fp32"] is not None:
            lines.append(f"{name}: {r['precision']} matmuls measured {1 / r['slowdown_vs_fp32']:.2f}x the fp32 rate "
                         f"on this CPU ({r['peak_flops'] / 1e9:.1f} vs {r['fp32_peak_flops'] / 1e9:.1f} GFLOP/s)")
        if r["mfu"] is None:
            lines.append(f"{name}: no MFU: {r['mfu_reason']}")
        sheet = r["datasheet"]
        if sheet is not None:
            mfu = f"MFU {sheet['mfu']:.1%}" if sheet["mfu"] is not None else f"no MFU: {sheet['mfu_reason']}"
            figure = "" if sheet["peak_flops"] is None else f" {sheet['peak_flops'] / 1e12:.1f} TFLOP/s,"
            lines.append(f"{name}: datasheet peak ({sheet['gpu'] or 'unknown GPU'}, dense {r['peak_precision']}):"
                         f"{figure} {mfu}" + (f" ({sheet['source']})" if sheet["source"] else ""))
    return lines
