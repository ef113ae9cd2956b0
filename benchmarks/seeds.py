"""A recipe over several seeds: does it hold, and where does it reach an accuracy? For choosing presets.

    python benchmarks/seeds.py --preset fast --seeds 0,1,2 [--set KEY=VALUE ...] [--name NAME] [--out DIR]
                               [--device cpu] [--json FILE]

Each seed is one `alexnet train` run (a process of its own, so a divergence, which the trainer stops with exit
status 2, ends only that run). The table has, per seed, each epoch's validation and test accuracy and the wall
seconds, and a line that says which seeds diverged. Choose a recipe by validation accuracy (`--set
data.val_size=5000`), never by test: the test column is for the record. `--json FILE` appends one record per
run (name, seed, overrides, exit status, the epochs' metrics) to FILE, so that several recipes can be put side
by side with `--table FILE`.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def run(preset: str, seed: int, overrides: list[str], device: str | None, out: Path) -> dict:
    cmd = [sys.executable, "-m", "alexnet", "train", "--preset", preset, "--seed", str(seed), "--out", str(out),
           "--quiet"]
    for item in overrides:
        cmd += ["--set", item]
    if device:
        cmd += ["--device", device]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    metrics = out / "metrics.jsonl"
    epochs = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    keep = ("epoch", "val_acc", "test_acc", "train_loss", "wall_s")
    return {"seed": seed, "status": proc.returncode, "error": proc.stderr.strip().splitlines()[-1:] if
            proc.returncode else [], "epochs": [{k: e.get(k) for k in keep} for e in epochs]}


def fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def table(records: list[dict]) -> str:
    lines = ["| recipe | seed | epoch: val / test acc | wall s | status |", "| --- | --- | --- | --- | --- |"]
    for r in records:
        cells = ", ".join(f"{e['epoch']}: {fmt(e['val_acc'])} / {fmt(e['test_acc'])}" for e in r["epochs"])
        wall = f"{r['epochs'][-1]['wall_s']:.1f}" if r["epochs"] else "-"
        status = "ok" if r["status"] == 0 else f"exit {r['status']}: {' '.join(r['error'])[:120]}"
        lines.append(f"| {r['name']} | {r['seed']} | {cells} | {wall} | {status} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="fast")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--name", default=None, help="the recipe's name in the table (default: the overrides)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: deleted)")
    p.add_argument("--json", type=Path, default=None, help="append the records to this JSON-lines file")
    p.add_argument("--table", type=Path, default=None, help="only print the table of this JSON-lines file")
    a = p.parse_args()
    if a.table:
        print(table([json.loads(line) for line in a.table.read_text().splitlines() if line.strip()]))
        return 0
    name = a.name or (" ".join(a.set) or a.preset)
    root = a.out or Path(tempfile.mkdtemp(prefix="seeds-"))
    records = []
    try:
        for seed in (int(s) for s in a.seeds.split(",")):
            record = {"name": name, "preset": a.preset, "overrides": a.set,
                      **run(a.preset, seed, a.set, a.device, root / f"seed{seed}")}
            records.append(record)
            if a.json:
                with a.json.open("a") as f:
                    f.write(json.dumps(record) + "\n")
    finally:
        if a.out is None:
            shutil.rmtree(root, ignore_errors=True)
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
