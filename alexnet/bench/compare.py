"""Ours against the d2l baseline in one process: what `alexnet bench` prints in its throughput mode."""

import dataclasses

import torch

from alexnet.bench.baseline import measure_baseline
from alexnet.bench.throughput import CUDA_PEAK, BenchSpec, measure_ours, options_label
from alexnet.runtime.device import device_name, pick_device
from alexnet.runtime.precision import describe
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


FEW_STEPS = 20      # fewer timed steps than this: the figures are called rough
WIDE_SPREAD = 0.25  # timed steps ranging wider than this fraction of their median: called out


def format_bench(result: dict) -> str:
    """The table of `alexnet bench`, what its columns divide by, notes on how far to trust it, then the peaks."""
    c, o, base = result["config"], result["ours"], result["baseline"]
    sides = [(name, r) for name, r in (("ours", o), ("baseline", base)) if r is not None]
    options = options_label(c.get("model_options", {}))
    compiled = ", compiled" if c["compile"] else ""
    lines = [f"{c['model']}{options} @{c['input_size']}, batch {c['batch_size']}{compiled}, "
             f"{'synthetic data' if c['synthetic'] else 'Fashion-MNIST'}; {c['steps']} timed steps after "
             f"{c['warmup']} warm-up; {result['device']}; torch {result['torch']}",
             *_table(sides, base), *_legend(sides, base), *_notes(sides, c["steps"]),
             f"ours: {describe(o['precision'], o['channels_last'], o['precision_reason'])}",
             *([f"ours: fast paths: {'; '.join(o['fast_paths'].values())}"] if "fast_paths" in o else []),
             f"FLOPs per training image: {o['flops_per_image']:,} (forward + backward, torch.utils.flop_counter)"]
    return "\n".join(lines + peak_lines(sides))


def _table(sides: list[tuple[str, dict]], base: dict | None) -> list[str]:
    """One row per side: its precision, speed, speed-up, steps' spread, MFU and the peak it divides by, memory."""
    memory = sides[0][1]["peak_memory_per_phase"]
    head = ["", "precision", "train img/s", *(["speed-up"] if base else []), "step ms", "(min-max)", "infer img/s",
            "achieved", "MFU", "of peak", *([_memory_label(sides[0][1])] if memory else [])]
    rows = [head]
    for name, r in sides:
        s = r["step_ms_stats"]
        rows.append([name, r["precision"], f"{r['train_images_per_sec']:.1f}",
                     *([f"{r['train_images_per_sec'] / base['train_images_per_sec']:.2f}x"] if base else []),
                     f"{r['step_ms'] if s is None else s['median']:.1f}",
                     "" if s is None or s["steps"] < 2 else f"({s['min']:.1f}-{s['max']:.1f})",
                     "-" if r["infer_images_per_sec"] is None else f"{r['infer_images_per_sec']:.1f}",
                     _rate(r["achieved_flops"]), "-" if r["mfu"] is None else f"{r['mfu']:.1%}",
                     f"{r['peak_precision']} {_rate(r['peak_flops'])}",
                     *([f"{r['peak_memory_bytes'] / 2**20:.0f} MiB"] if memory else [])])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    left = [name in ("", "precision", "(min-max)", "of peak") for name in head]  # the rest are figures
    return ["  ".join(cell.ljust(w) if is_left else cell.rjust(w) for cell, w, is_left in
                      zip(row, widths, left, strict=True)).rstrip() for row in rows]


def _legend(sides: list[tuple[str, dict]], base: dict | None) -> list[str]:
    """What each column is, and what each row's MFU divides by."""
    o = sides[0][1]
    lines = [("speed-up: training images/s / the baseline's. " if base else "")
             + "step ms: the median timed step (fastest-slowest); img/s and achieved FLOP/s: over all of them",
             "MFU: achieved FLOP/s / the measured matmul peak of the arithmetic the row runs in: "
             + ", ".join(f"{name} {r['peak_precision']} ({_rate(r['peak_flops'])})" for name, r in sides)]
    if len({(r["peak_precision"], r["peak_flops"]) for _, r in sides}) > 1:
        lines.append("  the rows divide by different peaks: compare them by img/s, not by MFU")
    if o["peak_memory_per_phase"]:
        lines.append(f"{_memory_label(o)}: {o['peak_memory_kind']}")
    else:
        lines.append(f"memory: not shown: this machine gives only {o['peak_memory_kind']}, the same for every row")
    return lines


def _notes(sides: list[tuple[str, dict]], steps: int) -> list[str]:
    """How far to trust the figures: too few timed steps, or steps that varied widely."""
    lines = []
    if steps < FEW_STEPS:
        lines.append(f"NOTE: only {steps} timed step{'s' if steps != 1 else ''} ({FEW_STEPS} or more for a steady "
                     "figure): treat these figures as rough; raise --steps")
    for name, r in sides:
        s = r["step_ms_stats"]
        if s is not None and s["steps"] > 1 and (s["max"] - s["min"]) > WIDE_SPREAD * s["median"]:
            lines.append(f"NOTE: {name}: the steps ranged {s['min']:.1f}-{s['max']:.1f} ms, "
                         f"{(s['max'] - s['min']) / s['median']:.0%} of their {s['median']:.1f} ms median (other "
                         "work on the machine, clock changes or a stalling input pipeline); rerun or raise --steps")
    return lines


def _memory_label(r: dict) -> str:
    return "peak mem" if r["peak_memory_kind"] == CUDA_PEAK else "peak RSS"


def _rate(flops: float) -> str:
    """FLOP/s in the unit that keeps the figure short."""
    if flops >= 1e12:
        return f"{flops / 1e12:.2f} TFLOP/s"
    return f"{flops / 1e9:.1f} GFLOP/s" if flops >= 1e9 else f"{flops / 1e6:.1f} MFLOP/s"


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
        lines += [f"peak ({r['peak_precision']}): {_rate(r['peak_flops'])} at {r['peak_matmul_size']}^3, "
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
