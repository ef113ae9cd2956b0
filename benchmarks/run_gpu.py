"""Every GPU claim, proven by one command: `benchmarks/run_gpu.sh [--out DIR] [--data-dir D] [--smoke]`.

Stages, each a fresh `alexnet` (or pytest) process whose result lands in DIR/<stage>.json; a stage that fails or
would overrun the time budget holds {"error": ...} and the next one runs. At the end DIR/summary.json (the keys
below) and DIR/tables.md.

    tests        pytest -m gpu: training steps in fp32 / bf16 / fp16 against the CPU, bit-exact resume on CUDA,
                 evaluation, loader order, GPU JPEG decode, torchrun + NCCL
    d2l_book     alexnet train --preset d2l (the book: test acc 0.883 after 10 epochs, 4,186 img/s on a V100)
    d2l_fast     alexnet train --preset d2l-fast (goal: >= 0.945 in <= 20 epochs)
    bench        alexnet bench --baseline (adaptive defaults), and with --compile (goals: MFU >= 50 %, >= 15x)
    time_to_090  alexnet bench --time-to-accuracy 0.90 --preset fast (goal: <= 10 s)
    folder       the paper net on a generated ImageNet-style folder of JPEGs (>= 20,000 files, ~500x375,
                 >= 100 classes), prepared with `alexnet prepare`: end-to-end, decode-only and step-only img/s
                 (goal: >= 20,000 img/s end to end)
    max_batch    alexnet bench --max-batch for d2l, paper and torchvision at 224

`--smoke` runs every stage at toy size on the CPU (numbers meaningless, keys real); the default test suite runs
it, so the script cannot rot. Run it from the source tree with the machine's own python3 (PYTHONPATH=.).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 540  # ~9 minutes: a lent GPU machine runs one command for at most 10
STAGES = ("tests", "d2l_book", "d2l_fast", "bench", "time_to_090", "folder", "max_batch")


class Runner:
    def __init__(self, out: Path, data_dir: str | None, smoke: bool, budget: float):
        self.out, self.data_dir, self.smoke = out, data_dir, smoke
        self.deadline = time.monotonic() + budget
        self.device = "cpu" if smoke else "cuda"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def alexnet(self, *args: str, timeout: float | None = None) -> str:
        """`python -m alexnet ARGS` in a fresh process; its stdout (JSON where asked); an error names the stderr."""
        return run([sys.executable, "-m", "alexnet", *map(str, args)], timeout or self.left())

    def data(self) -> list[str]:
        return ["--data-dir", self.data_dir] if self.data_dir else []

    def train(self, name: str, preset: str, *overrides: str) -> dict:
        """A preset into DIR/runs/<name>; the metrics of its last epoch and the images/s of its epochs."""
        folder = self.out / "runs" / name
        self.alexnet("train", "--preset", preset, "--out", folder, "--quiet", "--device", self.device, *self.data(),
                     *overrides)
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        rates = [r["images_per_sec"] for r in records]
        return {"test_acc": records[-1]["test_acc"], "epochs": len(records), "wall_s": records[-1]["wall_s"],
                "images_per_sec": sum(rates) / len(rates), "run": str(folder)}


def run(cmd: list[str], timeout: float) -> str:
    if timeout <= 5:
        raise TimeoutError("no time left in the budget")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"{' '.join(cmd[2:5])} exited {proc.returncode}: {tail[-400:]}")
    return proc.stdout


# --- the stages -------------------------------------------------------------------------------------------------

def stage_tests(r: Runner) -> dict:
    report = r.out / "tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", f"--junitxml={report}",
           str(ROOT / "tests")]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=r.left(), env=env)
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    failures = [case.get("name") for case in suite.iter("testcase")
                if case.find("failure") is not None or case.find("error") is not None]
    return {"passed": total - failed - skipped, "failed": failed, "skipped": skipped, "failures": failures}


def stage_d2l_book(r: Runner) -> dict:
    toy = ["--epochs", "1", "--set", "data.train_subset=64", "--set", "data.test_subset=64",
           "--set", "data.input_size=80", "--batch-size", "32"] if r.smoke else []
    result = r.train("d2l_book", "d2l", *toy)
    return {**result, "book": {"test_acc": 0.883, "images_per_sec": 4186, "device": "V100", "epochs": 10}}


def stage_d2l_fast(r: Runner) -> dict:
    toy = ["--epochs", "1", "--set", "data.train_subset=64", "--set", "data.test_subset=64",
           "--set", "data.input_size=80", "--batch-size", "32"] if r.smoke else []
    result = r.train("d2l_fast", "d2l-fast", *toy)
    return {**result, "goal": {"test_acc": 0.945, "epochs": 20}}


def bench_args(r: Runner) -> list[str]:
    if r.smoke:
        return ["--model", "d2l", "--input-size", "80", "--batch-size", "8", "--steps", "1", "--warmup", "1",
                "--synthetic", "--device", "cpu"]
    return ["--model", "d2l", "--batch-size", "256", "--steps", "30", "--warmup", "5", "--device", "cuda",
            *r.data()]


def stage_bench(r: Runner) -> dict:
    plain = json.loads(r.alexnet("bench", *bench_args(r), "--baseline", "--json"))
    compiled: dict = {"error": "not run in a smoke run (torch.compile takes ~40 s on a CPU)"}
    if not r.smoke:
        try:
            compiled = json.loads(r.alexnet("bench", *bench_args(r), "--compile", "--json",
                                            timeout=min(r.left(), 240)))
        except Exception as e:  # compile can be slow or fail; the plain figures stand on their own
            compiled = {"error": one_line(e)}
    ours, base = plain["ours"], plain["baseline"]
    return {"images_per_sec": ours["train_images_per_sec"], "mfu": ours.get("mfu"),
            "baseline_images_per_sec": base["train_images_per_sec"], "ratio": plain["ratio"],
            "compiled_images_per_sec": compiled.get("ours", {}).get("train_images_per_sec"),
            "compiled_mfu": compiled.get("ours", {}).get("mfu"), "precision": ours.get("peak_precision"),
            "goals": {"mfu": 0.5, "ratio": 15}, "raw": plain, "raw_compiled": compiled}


def stage_time_to_090(r: Runner) -> dict:
    target = "0.30" if r.smoke else "0.90"
    toy = ["--set", "data.train_subset=512", "--set", "data.test_subset=256", "--set", "train.epochs=1"] \
        if r.smoke else []
    result = json.loads(r.alexnet("bench", "--time-to-accuracy", target, "--preset", "fast", "--device", r.device,
                                  "--out", r.out / "runs" / "time_to_090", *r.data(), *toy, "--json"))
    return {"wall_s": result["wall_s"], "preset": result["preset"], "reached": result["reached"],
            "epoch": result["epoch"], "target": float(target), "goal_s": 10, "raw": result}


def stage_folder(r: Runner) -> dict:
    n, classes, size = (48, 4, (100, 75)) if r.smoke else (20_480, 128, (500, 375))
    source, prepared = r.out / "folder" / "source", r.out / "folder" / "prepared"
    if not (source / "train").is_dir():
        make_jpeg_folder(source, n, classes, size)
    r.alexnet("prepare", source, prepared, "--no-progress", *(["--size", "80"] if r.smoke else []))
    batch = 16 if r.smoke else 256
    decode = json.loads(run([sys.executable, "-c", DECODE_SNIPPET, str(prepared), r.device, str(batch),
                             "2" if r.smoke else "40"], r.left()))
    step_args = ["--model", "paper", "--synthetic", "--device", r.device, "--json",
                 *(["--input-size", "67", "--batch-size", "4", "--steps", "1", "--warmup", "1"] if r.smoke
                   else ["--batch-size", "256", "--steps", "20", "--warmup", "5"])]
    step = json.loads(r.alexnet("bench", *step_args))
    toy = ["--set", "data.image_size=80", "--set", "data.input_size=67",
           "--set", "data.train_augment=[{op: random_crop, size: 67}, {op: hflip}]",
           "--set", "data.eval_augment=[{op: center_crop, size: 67}]", "--batch-size", "8"] if r.smoke else []
    folder = r.out / "runs" / "folder"
    r.alexnet("train", "--preset", "paper", "--out", folder, "--quiet", "--device", r.device, "--data-dir", prepared,
              "--epochs", "1", "--set", "data.val_size=0", "--set", "train.estimate_steps=0", *toy)
    record = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    return {"images_per_sec": record["images_per_sec"], "decode_images_per_sec": decode["images_per_sec"],
            "step_images_per_sec": step["ours"]["train_images_per_sec"], "files": n, "classes": classes,
            "source_size": list(size), "goal_images_per_sec": 20_000}


DECODE_SNIPPET = """
import json, sys
from alexnet.bench.decode import decode_throughput
path, device, batch, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print(json.dumps(decode_throughput(path, device, batch_size=batch, steps=steps, warmup=1)))
"""


# complexity first (seconds, no training), then the paper's headline claim; the full budgets of relu-vs-tanh and
# ablations train on CIFAR-10, which they look for where `alexnet` does ($ALEXNET_DATA, the cache), not in the
# Fashion-MNIST --data-dir.
STUDIES = ("complexity", "relu-vs-tanh", "lenet", "ablations", "simplify", "batch-size")
CIFAR_STUDIES = ("relu-vs-tanh", "ablations")


def stage_studies(r: Runner) -> dict:
    """Every study of `alexnet experiment` at its `full` budget on CUDA (a smoke run: `tiny` on the CPU), each in
    DIR/studies/<study> with a fair share of the time left (what a study leaves, the next ones get). A study cut
    off by its share keeps its finished epochs: running the stage again with the same --out resumes it."""
    out: dict = {}
    budget = "tiny" if r.smoke else "full"
    for i, study in enumerate(STUDIES):
        folder = r.out / "studies" / study
        data = r.data() if r.smoke or study not in CIFAR_STUDIES else []
        try:
            r.alexnet("experiment", study, "--out", folder, "--budget", budget, "--device", r.device, *data,
                      timeout=r.left() / (len(STUDIES) - i))
            out[study] = study_figures(json.loads((folder / "results.json").read_text()))
        except Exception as e:  # a timeout, no CIFAR-10, a failed arm: recorded, and the next study runs
            out[study] = {"error": one_line(e), "out": str(folder)}
    return out


def study_figures(results: dict) -> dict:
    """The key figures of one study's results.json (the whole file stays in its folder)."""
    s = results["summary"]
    key = {"budget": results["budget"], "wall_s": results["wall_s"], "claim": results["claim"],
           "verdict": results.get("verdict"), "machine": results["machine"]}
    if results["study"] == "relu-vs-tanh":
        fastest = {act: s["arms"][arm] for act, arm in s["fastest_arm"].items()}
        return {**key, "target": s["target_train_error"], "window_steps": s["window_steps"],
                "steps_to_target": {act: a["steps_to_target"] for act, a in fastest.items()},
                "lr": {act: a["lr"] for act, a in fastest.items()},
                "ratio_tanh_over_relu": s["steps_ratio_tanh_over_relu"],
                "ratio_lower_bound": s["steps_ratio_lower_bound"]}
    if results["study"] == "complexity":
        models = {m["model"]: {"params": m["total_params"], "mflops": round(m["total_flops"] / 1e6, 1),
                               "fc_params_share": round(m["blocks"]["fc"]["params"] / m["total_params"], 3)}
                  for m in s["models"]}
        return {**key, "models": models}
    picks = {"ablations": ("arm", ("test_error", "gap")), "lenet": ("arm", ("test_acc", "gap")),
             "simplify": ("arm", ("test_acc", "images_per_sec")),
             "batch-size": ("batch_size", ("test_acc", "images_per_sec", "peak_memory_mib"))}
    name, fields = picks[results["study"]]
    return {**key, "rows": {str(row[name]): {f: row[f] for f in (*fields, "error")} for row in s["rows"]}}


def stage_max_batch(r: Runner) -> dict:
    out: dict = {}
    for model in ("d2l",) if r.smoke else ("d2l", "paper", "torchvision"):  # on a CPU each only says: no CUDA
        try:
            result = json.loads(r.alexnet("bench", "--max-batch", "--model", model, "--input-size", "224",
                                          "--device", r.device, "--json", timeout=min(r.left(), 150)))
            out[model] = result["max_batch"]
        except Exception as e:
            out[model] = {"error": one_line(e)}
    return out


# --- the folder of JPEGs ----------------------------------------------------------------------------------------

def make_jpeg_folder(root: Path, n: int, classes: int, size: tuple[int, int]) -> None:
    """n JPEGs (quality 90) of about `size`, in `classes` class folders under train/ (and a tenth under val/):
    smooth colour fields with a class-dependent pattern and noise, so they compress like photos, not like
    constant images."""
    jobs = [(root, i, classes, size) for i in range(n)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write_jpeg, jobs, chunksize=64))


def _write_jpeg(job) -> None:
    import numpy as np
    from PIL import Image

    root, i, classes, (w, h) = job
    rng = np.random.default_rng(i)
    label = i % classes
    split = "val" if i % 10 == 9 else "train"
    w, h = int(w * rng.uniform(0.8, 1.2)), int(h * rng.uniform(0.8, 1.2))
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / (10 + label) + c) * np.cos(y / (7 + c + label % 5)) for c in range(3)], -1)
    image = ((base * 0.5 + 0.5) * 200 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
    path = root / split / f"class{label:03d}" / f"{i:06d}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=90)


# --- the summary ------------------------------------------------------------------------------------------------

def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:600] or type(error).__name__


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (no CUDA device)"


def tables(summary: dict) -> str:
    s = summary["stages"]
    lines = [f"# GPU results: {summary['device']}, torch {summary['torch']}"
             f"{' (SMOKE RUN: numbers meaningless)' if summary['smoke'] else ''}", "",
             f"`benchmarks/run_gpu.sh --out {summary['out']}` on {summary['date']}; {summary['wall_s']:.0f} s in all.",
             "", "| stage | result | goal |", "| --- | --- | --- |"]
    for name, stage in s.items():
        if "error" in stage:
            lines.append(f"| {name} | error: {stage['error'][:200]} | |")
            continue
        lines.append(f"| {name} | {_cells(name, stage)} |")
    return "\n".join(lines) + "\n"


def _cells(name: str, r: dict) -> str:
    if name == "tests":
        return f"{r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped | all pass"
    if name == "d2l_book":
        return (f"test acc {r['test_acc']:.4f} in {r['epochs']} epochs, {r['wall_s']:.0f} s, "
                f"{r['images_per_sec']:.0f} img/s | the book: 0.883, 4,186 img/s (V100)")
    if name == "d2l_fast":
        return f"test acc {r['test_acc']:.4f} in {r['epochs']} epochs, {r['wall_s']:.0f} s | >= 0.945 in <= 20"
    if name == "bench":
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        return (f"{r['images_per_sec']:.0f} img/s ({r['precision']}), MFU {mfu}, baseline "
                f"{r['baseline_images_per_sec']:.0f} img/s, ratio {r['ratio']:.1f}x; compiled "
                f"{r['compiled_images_per_sec'] or '-'} img/s | MFU >= 50 %, >= 15x")
    if name == "time_to_090":
        reached = f"{r['wall_s']:.1f} s (epoch {r['epoch']})" if r["reached"] else "not reached"
        return f"{reached}, preset {r['preset']} | <= 10 s"
    if name == "folder":
        return (f"{r['images_per_sec']:.0f} img/s end to end; decode {r['decode_images_per_sec']:.0f}, step "
                f"{r['step_images_per_sec']:.0f} img/s | >= 20,000 img/s")
    return ", ".join(f"{k} {v}" for k, v in r.items()) + " | largest batch at 224"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/run_gpu.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/gpu-<date>-<device>)")
    p.add_argument("--data-dir", help="where Fashion-MNIST is (a folder, or Debian's dataset-fashion-mnist .deb)")
    p.add_argument("--smoke", action="store_true", help="every stage at toy size on the CPU")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all stages (default 540)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of the stages")
    args = p.parse_args(argv)
    import torch

    name = device_name().replace(" ", "-").replace("/", "-")
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu-{time.strftime('%Y-%m-%d')}-{name}"
    out.mkdir(parents=True, exist_ok=True)
    data_dir = unpack_deb(args.data_dir, out) if args.data_dir else None
    runner, started = Runner(out, data_dir, args.smoke, args.budget), time.monotonic()
    summary: dict = {"device": device_name(), "torch": str(torch.__version__), "smoke": args.smoke, "stages": {},
                     "stage_seconds": {}}
    for stage in args.stages.split(","):
        t0 = time.monotonic()
        try:
            result = globals()[f"stage_{stage}"](runner)
        except Exception as e:  # recorded, and the next stage runs
            result = {"error": one_line(e)}
        seconds = summary["stage_seconds"][stage] = round(time.monotonic() - t0, 1)
        (out / f"{stage}.json").write_text(json.dumps(result, indent=1) + "\n")
        summary["stages"][stage] = result
        print(f"[{stage}] {result.get('error') or 'done'} ({seconds} s)", file=sys.stderr, flush=True)
    summary.update(out=str(out), date=time.strftime("%Y-%m-%d %H:%M"), wall_s=round(time.monotonic() - started, 1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "tables.md").write_text(tables(summary))
    print(out / "summary.json")
    return 0


def unpack_deb(data_dir: str, out: Path) -> str:
    """A Debian package file (the GPU machines have no network: `apt-get download dataset-fashion-mnist` here,
    carried there) is unpacked; its IDX files live under usr/share/datasets/fashion-mnist."""
    if not data_dir.endswith(".deb"):
        return data_dir
    target = Path(tempfile.mkdtemp(prefix="fmnist-", dir=out))
    subprocess.run(["dpkg-deb", "-x", data_dir, str(target)], check=True)
    return str(target / "usr" / "share" / "datasets" / "fashion-mnist")


if __name__ == "__main__":
    raise SystemExit(main())
