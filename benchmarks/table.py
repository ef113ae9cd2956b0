"""Print the markdown tables of docs/benchmarks.md from the JSON files `benchmarks/run_cpu.sh` wrote.

    python benchmarks/table.py runs/bench-cpu-YYYYmmdd-HHMMSS

Reads older result folders too (before issue #16 a result had no peak source and always an MFU).
"""

import json
import sys
from pathlib import Path

SPECIAL = ("tta-quick", "loader-224", "peaks")  # not throughput runs: printed after the tables, or not at all


def mfu(r: dict) -> str:
    """The MFU, or '-' and why where there is none (above the peak, or an emulated precision). Results from before
    issue #16 may hold an MFU above 100 %: it is left out here too."""
    if r.get("mfu") is None or r["mfu"] > 1:
        return "- (emulated)" if r.get("emulated") else "- (above the peak)"
    return f"{r['mfu']:.1%}"


def peak(r: dict) -> str:
    source = r.get("peak_source", "measured now")
    return f"{r['peak_flops'] / 1e9:.1f} ({r['peak_precision']}, {r['peak_matmul_size']}^3, {source})"


def datasheet(r: dict) -> str:
    sheet = r.get("datasheet")
    if not sheet or sheet["peak_flops"] is None:
        return "-"
    figure = "above the datasheet" if sheet["mfu"] is None else f"{sheet['mfu']:.1%}"
    return f"{figure} of {sheet['peak_flops'] / 1e12:.0f} TFLOP/s ({sheet['gpu']})"


def row(name: str, r: dict, with_datasheet: bool) -> str:
    infer = "-" if r["infer_images_per_sec"] is None else f"{r['infer_images_per_sec']:.1f}"
    cells = [name, r.get("precision", r["peak_precision"]), f"{r['train_images_per_sec']:.1f}", infer,
             f"{r['achieved_flops'] / 1e9:.1f}", peak(r), mfu(r)]
    cells += [datasheet(r)] if with_datasheet else []
    return "| " + " | ".join(cells + [f"{r['peak_memory_bytes'] / 2**20:.0f}"]) + " |"


def options(c: dict, ours: dict) -> str:
    flags = [c["precision"] if c["precision"] != "auto" else f"auto -> {ours.get('precision', '?')}",
             f"batch {c['batch_size']}"]
    flags += ["channels_last"] if ours.get("channels_last", c["channels_last"] is True) else []
    flags += ["compile"] if c["compile"] else []
    flags += [f"{c['threads']} thread(s)"]
    return f"{c['model']} @{c['input_size']}, " + ", ".join(flags)


def notes(results: dict) -> list[str]:
    """Every MFU left out and why, and every emulated precision with its measured slowdown."""
    lines = []
    for name, res in results.items():
        for side in ("ours", "baseline"):
            r = res[side]
            if r is None:
                continue
            if r.get("emulated"):
                lines.append(f"* {name}, {side}: {r['precision']} is emulated on this CPU, its matmuls "
                             f"{r['slowdown_vs_fp32']:.1f}x slower than fp32")
            elif r.get("mfu") is None:
                lines.append(f"* {name}, {side}: no MFU: {r['mfu_reason']}")
    return lines


def main(out: Path) -> None:
    results = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.stem not in SPECIAL}
    if not results:
        sys.exit(f"no bench JSON files in {out}")
    first = next(iter(results.values()))
    cuda = any((res["ours"].get("datasheet") or {}).get("peak_flops") for res in results.values())
    print(f"device: {first['device']}; torch {first['torch']}; figures from {out}\n")
    head = ["run", "precision", "train img/s", "infer img/s", "achieved GFLOP/s", "peak GFLOP/s (source)", "MFU"]
    head += ["MFU vs datasheet"] if cuda else []
    print("| " + " | ".join(head + ["peak RSS MiB"]) + " |")
    print("| --- | --- |" + " ---: |" * (len(head) - 1))
    for name, res in results.items():
        print(row(f"{name}: ours, {options(res['config'], res['ours'])}", res["ours"], cuda))
        if res["baseline"] is not None:
            print(row(f"{name}: d2l baseline (fp32, DataLoader)", res["baseline"], cuda))
    if notes(results):
        print("\n" + "\n".join(notes(results)))
    print("\n| run | ours / baseline (training images/s) |\n| --- | ---: |")
    for name, res in results.items():
        if res["ratio"] is not None:
            print(f"| {name} | {res['ratio']:.2f}x |")
    extras(out)


def extras(out: Path) -> None:
    loader = out / "loader-224.json"
    if loader.exists():
        r = json.loads(loader.read_text())
        print(f"\ndata delivery (batch {r['batch_size']}, 28 -> {r['input_size']} px): ours "
              f"{r['ours']['images_per_sec']:.0f} images/s (DeviceLoader + on-device crop, flip, resize) vs d2l "
              f"{r['baseline']['images_per_sec']:.0f} images/s ({r['baseline']['workers']}-worker DataLoader, "
              f"Resize + ToTensor): {r['ratio']:.1f}x")
    tta = out / "tta-quick.json"
    if tta.exists():
        t = json.loads(tta.read_text())
        when = (f"reached at epoch {t['epoch']}, {t['wall_s']:.1f} s (test acc {t['test_acc']:.4f})"
                if t["reached"] else f"not reached; best {t['best_acc']:.4f}")
        print(f"\ntime to {t['target']:.2f} test accuracy, preset {t['preset']}: {when}; "
              f"{t['epochs_run']} epochs in {t['total_wall_s']:.1f} s")
    peaks = out / "peaks.json"
    if peaks.exists():
        print("\npeaks (the cache the MFUs divided by):")
        for key, p in json.loads(peaks.read_text())["peaks"].items():
            print(f"* {key}: {p['peak_flops'] / 1e9:.1f} GFLOP/s at {p['matmul_size']}^3, measured "
                  f"{p['measured_at']} (load average {p.get('loadavg')})")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
