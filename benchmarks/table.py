"""Print the markdown tables of docs/benchmarks.md from the JSON files `benchmarks/run_cpu.sh` wrote.

    python benchmarks/table.py runs/bench-cpu-YYYYmmdd-HHMMSS
"""

import json
import sys
from pathlib import Path


def row(name: str, r: dict) -> str:
    infer = "-" if r["infer_images_per_sec"] is None else f"{r['infer_images_per_sec']:.1f}"
    return (f"| {name} | {r['train_images_per_sec']:.1f} | {infer} | {r['achieved_flops'] / 1e9:.1f} | "
            f"{r['peak_flops'] / 1e9:.1f} ({r['peak_precision']}, {r['peak_matmul_size']}^3) | {r['mfu']:.1%} | "
            f"{r['peak_memory_bytes'] / 2**20:.0f} |")


def options(c: dict) -> str:
    flags = [c["precision"], f"batch {c['batch_size']}"]
    flags += ["channels_last"] if c["channels_last"] else []
    flags += ["compile"] if c["compile"] else []
    flags += [f"{c['threads']} thread(s)"]
    return f"{c['model']} @{c['input_size']}, " + ", ".join(flags)


def main(out: Path) -> None:
    special = ("tta-quick", "loader-224")  # not throughput runs: printed after the tables
    results = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.stem not in special}
    if not results:
        sys.exit(f"no bench JSON files in {out}")
    first = next(iter(results.values()))
    print(f"device: {first['device']}; torch {first['torch']}; figures from {out}\n")
    print("| run | train img/s | infer img/s | achieved GFLOP/s | peak GFLOP/s | MFU | peak RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, res in results.items():
        print(row(f"{name}: ours, {options(res['config'])}", res["ours"]))
        if res["baseline"] is not None:
            print(row(f"{name}: d2l baseline (fp32, DataLoader)", res["baseline"]))
    print("\n| run | ours / baseline (training images/s) |\n| --- | ---: |")
    for name, res in results.items():
        if res["ratio"] is not None:
            print(f"| {name} | {res['ratio']:.2f}x |")
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


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
