"""Stage `ddp` of benchmarks/run_gpu.py (on request, like `studies`: `run_gpu.sh --stages ddp`): the d2l net's
training throughput on every visible GPU, under torchrun with NCCL.

With N = torch.cuda.device_count() GPUs, one `torchrun --standalone --nproc-per-node k -m alexnet train --preset
d2l` (Fashion-MNIST at 224, as the d2l_book stage) per k in 1, 2, 4, ... (the powers of two <= N) and N itself.
Weak scaling: every rank takes 256 images per step (global batch 256 k), so each GPU's work per step stays the
same and what k adds is the gradient all-reduce (fp32, DDP's buckets, overlapped with the backward). Under torchrun
every k, 1 included, trains through DDP and without the CUDA graph (DDP's all-reduce is not captured), so the
k = 1 rate is the torchrun figure, below `bench`'s.

A k's rate is its steady state from metrics.jsonl: the images of the epochs after the first (cuDNN's autotuning,
NCCL's set-up) over their training-loop seconds (evaluation and checkpoints are outside them). Recorded per k:
aggregate img/s, img/s per GPU and the scaling efficiency rate_k / (k x rate_1). With one GPU only k = 1 runs,
and the result and tables.md say that no scaling was measured. Each run's folder (DIR/runs/ddp-k<k>) keeps its
metrics, config and ranks.json; its weights are deleted.

--smoke: gloo on the CPU, k = 1 and 2 processes at toy size (8 images per process and step, 80 px, fp32, one
thread each): the path and the records, not the numbers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BATCH_PER_GPU = 256     # the bench stage's batch
SMOKE_BATCH = 8
MAX_STEADY_EPOCHS = 8   # k steady epochs, at least 2: 2 x 234 timed steps at k = 1, 8 x 29 at k = 8
TOY = ["--set", "data.train_subset=32", "--set", "data.test_subset=16", "--set", "data.input_size=80",
       "--set", "train.precision=fp32", "--set", "train.threads=1"]


def gpu_counts(visible: int) -> list[int]:
    """1, 2, 4, ... up to the highest power of two <= visible, then visible itself if it is not one of them."""
    counts, k = [], 1
    while k <= visible:
        counts.append(k)
        k *= 2
    return counts + ([visible] if visible > 0 and visible not in counts else [])


def plan(smoke: bool, visible: int) -> dict:
    """What the stage runs: the process counts, backend, per-rank batch, and a note where it measures less."""
    if smoke:
        return {"counts": [1, 2], "backend": "gloo", "device": "cpu", "batch_per_gpu": SMOKE_BATCH,
                "note": "smoke run: gloo on the CPU, 1 and 2 processes (numbers meaningless)"}
    if visible == 0:
        raise RuntimeError("the ddp stage needs a CUDA device (none is visible); --smoke runs it with gloo on the "
                           "CPU")
    note = None if visible > 1 else ("only one GPU was visible: k = 1 measured (torchrun, NCCL, one rank); "
                                     "no scaling measured")
    return {"counts": gpu_counts(visible), "backend": "nccl", "device": "cuda", "batch_per_gpu": BATCH_PER_GPU,
            "note": note}


def stage_ddp(r) -> dict:
    """`r`: run_gpu's Runner (out, smoke, data(), left())."""
    import torch

    visible = torch.cuda.device_count()
    p = plan(r.smoke, visible)
    runs = []
    for i, k in enumerate(p["counts"]):
        try:  # each k gets a fair share of the time left, as the studies do
            runs.append(run_k(r, k, p, timeout=r.left() / (len(p["counts"]) - i)))
        except Exception as e:  # recorded (the stage then fails), and the next k runs
            runs.append({"k": k, "error": " ".join(str(e).split())[:600] or type(e).__name__})
    return {"visible_gpus": visible, **p, "scaling": f"weak: {p['batch_per_gpu']} images per rank and step",
            "runs": with_efficiency(runs)}


def run_k(r, k: int, p: dict, timeout: float) -> dict:
    folder = r.out / "runs" / f"ddp-k{k}"
    if folder.exists():  # this stage's own folder from an earlier run into the same --out: `train` would refuse it
        shutil.rmtree(folder)
    batch = p["batch_per_gpu"] * k
    epochs = 2 if r.smoke else 1 + max(2, min(k, MAX_STEADY_EPOCHS))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(k),
           "-m", "alexnet", "train", "--preset", "d2l", "--out", str(folder), "--quiet", "--device", p["device"],
           *r.data(), "--epochs", str(epochs), "--batch-size", str(batch), "--set", "train.drop_last=true",
           "--set", "train.estimate_steps=0", *(TOY if r.smoke else [])]
    t0 = time.monotonic()
    launch(cmd, timeout, k)
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    runtime = yaml.safe_load((folder / "config.yaml").read_text())["runtime"]
    if runtime["world_size"] != k:
        raise RuntimeError(f"k = {k}: the run had {runtime['world_size']} ranks")
    rate, steady = steady_rate(records, batch)
    for weights in ("checkpoint.pt", "best.pt"):  # ~190 MB each, of a throughput run: not kept in the results
        (folder / weights).unlink(missing_ok=True)
    return {"k": k, "images_per_sec": rate, "steady_epochs": steady, "global_batch": batch,
            "epoch_images_per_sec": [rec["images_per_sec"] for rec in records], "world_size": runtime["world_size"],
            "precision": runtime["precision"], "cuda_graphs": runtime["fast_paths"]["cuda_graphs"],
            "device": runtime["device"], "seconds": round(time.monotonic() - t0, 1), "run": str(folder),
            "command": " ".join(["torchrun", *cmd[3:]])}


def steady_rate(records: list[dict], batch: int) -> tuple[float, int]:
    """(images / seconds over the epochs after the first, how many); each epoch's images from its optimizer steps
    (full batches: drop_last), its seconds from those images and its images_per_sec."""
    if len(records) < 2:
        raise RuntimeError(f"{len(records)} epoch(s) in metrics.jsonl: no steady state after the first")
    steps = [rec["step"] for rec in records]
    images = [(now - before) * batch for before, now in zip(steps, steps[1:], strict=False)]
    seconds = [n / rec["images_per_sec"] for n, rec in zip(images, records[1:], strict=True)]
    return sum(images) / sum(seconds), len(images)


def with_efficiency(runs: list[dict]) -> list[dict]:
    """Each run with img/s per GPU and the efficiency rate_k / (k x rate_1) (None without a k = 1 rate)."""
    one = next((run["images_per_sec"] for run in runs if run["k"] == 1 and "error" not in run), None)
    return [run if "error" in run else
            {**run, "images_per_sec_per_gpu": run["images_per_sec"] / run["k"],
             "efficiency": None if one is None else run["images_per_sec"] / (run["k"] * one)} for run in runs]


def launch(cmd: list[str], timeout: float, k: int) -> None:
    """torchrun and its workers in a session of their own: past `timeout` the whole group is killed, no worker is
    left holding a GPU."""
    if timeout <= 5:
        raise TimeoutError("no time left in the budget")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimeoutError(f"k = {k}: torchrun ran past its {timeout:.0f} s share of the budget") from None
    if proc.returncode != 0:
        lines = stderr.strip().splitlines()
        said = [line for line in lines if line.startswith("alexnet train: error")] or lines[-3:]
        raise RuntimeError(f"k = {k}: torchrun exited {proc.returncode}: {' | '.join(said)[-400:]}")


def ddp_cells(r: dict) -> str:
    """The stage's row of tables.md: result | goal."""
    runs = []
    for run in r["runs"]:
        if "error" in run:
            runs.append(f"k = {run['k']}: error")
        elif run["k"] == 1:
            runs.append(f"k = 1: {run['images_per_sec']:,.0f} img/s")
        else:
            efficiency = "-" if run["efficiency"] is None else f"{run['efficiency']:.0%}"
            runs.append(f"k = {run['k']}: {run['images_per_sec']:,.0f} img/s ({run['images_per_sec_per_gpu']:,.0f}"
                        f" per GPU, efficiency {efficiency})")
    setup = f"{r['backend']}, {r['batch_per_gpu']} images per rank and step, steady-state epochs"
    head = f"**{r['note']}**; " if r.get("note") else ""
    return f"{head}{'; '.join(runs)} ({setup}) | efficiency = rate_k / (k x rate_1) on every visible GPU"
