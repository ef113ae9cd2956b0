"""Every GPU claim, proven by one command: `benchmarks/run_gpu.sh [--out DIR] [--data-dir D] [--smoke]
[--stages a,b] [--budget SECONDS] [--run NAME] [--archive FILE.tgz]`.

Stages, each a fresh `alexnet` (or pytest) process whose result lands in DIR/<stage>.json; a stage that fails or
would overrun the time budget holds {"error": ...} and the next one runs. At the end DIR/summary.json (the keys
below) and DIR/tables.md.

    tests        pytest -m gpu: training steps in fp32 / tf32 / bf16 / fp16 against the CPU, the CUDA graph step
                 against the eager one, bit-exact resume on CUDA, evaluation, loader order, GPU JPEG decode (nvJPEG
                 must decode), torchrun + NCCL; every GPU test must run and pass
    profile      alexnet bench --profile of the d2l net at batch 256, plain (no CUDA graph, no folded conv1: the
                 first GPU run's step), with the fast paths, and with the candidates fused_pool and bias_after_pool
                 (goal: host time per step well below GPU time)
    bench        alexnet bench --baseline (defaults: bf16, CUDA graph, folded conv1), then the fast paths one at a
                 time off, the candidates fused_pool, bias_after_pool and both on, --compile (inductor under the
                 captured step), batch 1024, fp32 (IEEE) and tf32 (goals: MFU >= 50 %)
    d2l_book     alexnet train --preset d2l (the book: test acc 0.883 after 10 epochs; goal: >= 0.88 in <= 15 s)
    time_to_090  alexnet bench --time-to-accuracy 0.90 --preset fast (goal: <= 3 s)
    d2l_fast     alexnet train --preset d2l-fast (goal: >= 0.945 in <= 20 epochs)
    folder       the paper net on a generated ImageNet-style folder of JPEGs (>= 20,000 files, ~500x375,
                 >= 100 classes), prepared with `alexnet prepare`: end-to-end, decode-only and step-only img/s,
                 the step also with the plain LRN module, the candidates triton_lrn, fused_pool and both, and two
                 columns (goal: >= 20,000 img/s end to end)
    max_batch    alexnet bench --max-batch for d2l, paper and torchvision at 224 (goal: <= 30 s each)
    book_code    benchmarks/d2l_book.py --device cuda: the book's own `train_ch6` beside our baseline and ours
                 (where the `d2l` package is importable; else skipped, and said)
    studies      every `alexnet experiment` at its full budget (not in the default list: minutes)
    d2l_book_candidates
                 the d2l preset with each of D2L_BOOK_CANDIDATES' execution forms (the Triton pools, the biases
                 after the pools) while the budget lasts, the fastest that keeps test acc >= 0.88 (not in the
                 default list: ~30 s per candidate)
    d2l_fast_candidates
                 the d2l-fast preset with each of D2L_FAST_CANDIDATES' overrides while the budget lasts, the best
                 by validation accuracy (not in the default list: ~75 s per candidate on an H200)
    paper_profile
                 alexnet bench --profile of the paper net at batch 256 with its defaults and with the Triton ReLU +
                 LRN (train.triton_lrn): where its step goes, per layer (not in the default list: ~1 minute)
    ddp          the d2l net's training under torchrun with NCCL on 1, 2, 4, ... and all N visible GPUs: img/s,
                 img/s per GPU and scaling efficiency per k (benchmarks/run_gpu_ddp.py; not in the default list:
                 a torchrun start per k; with one GPU, k = 1 only, and it says so)

The script exits 1 when a stage errors or, on a GPU, when a GPU test fails or is skipped; tables.md marks each
goal met or missed (a missed goal is a finding, not a failure of the script).

`--smoke` runs every stage at toy size on the CPU (numbers meaningless, keys real); the default test suite runs
it, so the script cannot rot. Run it from the source tree with the machine's own python3 (PYTHONPATH=.).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import run_gpu_ddp

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 540  # ~9 minutes: a lent GPU machine runs one command for at most 10
STAGES = ("tests", "profile", "bench", "d2l_book", "time_to_090", "d2l_fast", "folder", "max_batch", "book_code")
# run only when --stages names them
ON_REQUEST = ("studies", "ddp", "d2l_fast_candidates", "d2l_book_candidates", "paper_profile")


class Runner:
    def __init__(self, out: Path, data_dir: str | None, smoke: bool, budget: float):
        self.out, self.data_dir, self.smoke = out, data_dir, smoke
        self.deadline = time.monotonic() + budget
        self.device = "cpu" if smoke else "cuda"
        self.results: dict = {}  # the stages this run has finished, by name (a later stage may read one)

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
        return {"test_acc": records[-1]["test_acc"], "val_acc": records[-1].get("val_acc"), "epochs": len(records),
                "wall_s": records[-1]["wall_s"], "images_per_sec": sum(rates) / len(rates), "run": str(folder)}


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
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=r.left(), env=env)
    if not report.exists():
        raise RuntimeError(f"pytest exited {proc.returncode} without a report: {proc.stdout[-400:]}")
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    failures = [case.get("name") for case in suite.iter("testcase")
                if case.find("failure") is not None or case.find("error") is not None]
    result = {"passed": total - failed - skipped, "failed": failed, "skipped": skipped, "failures": failures,
              "exit_status": proc.returncode}
    # On a GPU every GPU test must run: a skip there (no CUDA seen, a missing package) hides a failure.
    if failed or proc.returncode not in (0, 5) or (not r.smoke and (skipped or total == 0)):
        result["error"] = (f"GPU tests: {result['passed']} passed, {failed} failed, {skipped} skipped "
                           f"(pytest exit {proc.returncode}): {', '.join(failures)[:300]}")
    return result


def stage_profile(r: Runner) -> dict:
    args = (["--model", "d2l", "--input-size", "80", "--batch-size", "4", "--steps", "3", "--warmup", "1",
             "--synthetic", "--device", "cpu"] if r.smoke else
            ["--model", "d2l", "--batch-size", "256", "--steps", "10", "--warmup", "5", "--synthetic",
             "--device", "cuda"])
    # fused_pool, bias_after_pool: the defaults plus a candidate (off by default until these have measured them);
    # on a CPU no GPU fast path applies: the profiles would be one
    out = profiles(r, args, {"plain": ["--no-cuda-graphs", "--no-space-to-depth"], "fast": []},
                   {"fused_pool": ["--fused-pool"], "bias_after_pool": ["--bias-after-pool"]}, "profile-",
                   smoke_only="fast")
    if r.smoke:
        out["plain"] = out["fast"]
    step = out["fast"]["step"]
    out["goals"] = [goal("host work per step < GPU busy time", step.get("host_work_ms"),
                         step.get("gpu_ms"), "<")] if not r.smoke else []
    return out


def stage_paper_profile(r: Runner) -> dict:
    """The paper net's step per layer (issue #22, item 4: its step ran at 58 TFLOP/s against the d2l net's 158):
    the defaults, and the Triton ReLU + LRN (off by default until measured), each in profile-paper-NAME.txt."""
    args = (["--model", "paper", "--input-size", "67", "--batch-size", "2", "--steps", "2", "--warmup", "1",
             "--synthetic", "--device", "cpu"] if r.smoke else
            ["--model", "paper", "--batch-size", "256", "--steps", "10", "--warmup", "5", "--synthetic",
             "--device", "cuda"])
    return profiles(r, args, {"default": []}, {"triton_lrn": ["--triton-lrn"]}, "profile-paper-",
                    smoke_only="default")  # the Triton kernels need CUDA


def profiles(r: Runner, args: list[str], main: dict[str, list[str]], candidates: dict[str, list[str]], prefix: str,
             *, smoke_only: str) -> dict:
    """`alexnet bench --profile ARGS EXTRA` for each named EXTRA, each table in PREFIX<name>.txt, the results by
    name. A candidate's failure is recorded and the stage's main figures stand; a main one's ends the stage. A
    smoke run profiles `smoke_only` alone."""
    out: dict = {}
    for name, extra in {**main, **candidates}.items():
        if r.smoke and name != smoke_only:
            continue
        try:
            result = json.loads(r.alexnet("bench", "--profile", *args, *extra, "--json"))
        except Exception as e:
            if name in main:
                raise
            out[name] = {"error": one_line(e)}
            continue
        (r.out / f"{prefix}{name}.txt").write_text(format_profile_json(result))
        out[name] = result
    return out


def format_profile_json(result: dict) -> str:
    from alexnet.bench.profile import format_profile

    return format_profile(result) + "\n"


def goal(name: str, value, target, relation: str = ">=") -> dict:
    """A goal of the issues, met or missed (None: not measured)."""
    met = None if value is None or target is None else (value >= target if relation == ">=" else
                                                          value <= target if relation == "<=" else value < target)
    return {"goal": name, "value": value, "target": target, "met": met}


def stage_d2l_book(r: Runner) -> dict:
    toy = ["--epochs", "1", "--set", "data.train_subset=64", "--set", "data.test_subset=64",
           "--set", "data.input_size=80", "--batch-size", "32"] if r.smoke else []
    result = r.train("d2l_book", "d2l", *toy)
    return {**result, "book": {"test_acc": 0.883, "images_per_sec": 4186, "device": "V100", "epochs": 10},
            "goals": [goal("test acc after the book's 10 epochs", result["test_acc"], 0.88),
                      goal("wall seconds (training + evaluation)", result["wall_s"], 15, "<=")]}


D2L_FAST_TOY = ["--epochs", "1", "--set", "data.train_subset=64", "--set", "data.test_subset=64",
                "--set", "data.input_size=80", "--batch-size", "32"]
# Recipes tried beside the d2l-fast preset (stage d2l_fast_candidates, on request) while the budget lasts; the
# preset reached 0.9297 on an H200, the goal is 0.945: random erasing (Zhong et al. 2017 report it on
# Fashion-MNIST), then also a higher peak rate. Compared by validation accuracy (the preset holds out 5,000 training
# images); the preset changes only after a candidate wins there.
ERASING = "[{op: random_crop, padding: 2}, {op: hflip}, {op: random_erasing}]"
D2L_FAST_CANDIDATES = {"erasing": ["--set", f"data.train_augment={ERASING}"],
                       "erasing_lr_0.04": ["--set", f"data.train_augment={ERASING}", "--set", "optim.lr=0.04"]}


def stage_d2l_fast(r: Runner) -> dict:
    result = r.train("d2l_fast", "d2l-fast", *(D2L_FAST_TOY if r.smoke else []))
    return {**result, "goals": [goal("test acc within 20 epochs", result["test_acc"], 0.945)]}


def stage_d2l_fast_candidates(r: Runner) -> dict:
    """Each of D2L_FAST_CANDIDATES trained as the d2l-fast preset with its overrides, while the budget lasts (a run
    that would not fit is said, not started); the best by validation accuracy, the preset's own run (stage
    d2l_fast, when it ran earlier in this same run) included and kept on a tie."""
    rows = train_candidates(r, "d2l_fast", "d2l-fast", D2L_FAST_CANDIDATES, D2L_FAST_TOY if r.smoke else [])
    ran = {k: v for k, v in rows.items() if v.get("val_acc") is not None}  # the preset first: max keeps it on a tie
    return {"candidates": rows, "best_by_val": max(ran, key=lambda k: ran[k]["val_acc"]) if ran else None,
            "goals": []}


# Execution forms tried on the d2l preset (stage d2l_book_candidates, on request): the book's hyper-parameters
# unchanged, so what is compared is the wall time (goal <= 15 s; 32.1 s on the H200 with the defaults). Not
# torch.compile: its compilation alone would take longer than the goal.
D2L_BOOK_CANDIDATES = {"fused_pool": ["--set", "train.fused_pool=true"],
                       "bias_after_pool": ["--set", "train.bias_after_pool=true"]}


def stage_d2l_book_candidates(r: Runner) -> dict:
    """Each of D2L_BOOK_CANDIDATES as the d2l preset with its overrides, while the budget lasts; the fastest by
    wall seconds among the runs that keep the book's accuracy (the preset's own run, stage d2l_book, when it ran
    earlier in this run, included and kept on a tie)."""
    candidates = {k: v for k, v in D2L_BOOK_CANDIDATES.items() if not r.smoke or k != "fused_pool"}  # CUDA only
    rows = train_candidates(r, "d2l_book", "d2l", candidates, D2L_FAST_TOY if r.smoke else [])
    ran = {k: v for k, v in rows.items() if v.get("test_acc") is not None and (r.smoke or v["test_acc"] >= 0.88)}
    return {"candidates": rows, "fastest": min(ran, key=lambda k: ran[k]["wall_s"]) if ran else None, "goals": []}


def train_candidates(r: Runner, stage: str, preset: str, candidates: dict, toy: list[str]) -> dict:
    """The preset's own run (stage `stage`, when it ran earlier in this run) and each candidate's, trained into
    runs/<stage>_<name> while the budget lasts: a run that would not fit (1.2 x the longest so far, + 30 s) is
    said, not started."""
    own = r.results.get(stage, {})
    rows: dict = {"preset": {k: v for k, v in own.items() if k != "goals"}} if "wall_s" in own else {}
    estimate = own.get("wall_s")
    for name, overrides in candidates.items():
        if estimate is not None and r.left() < 1.2 * estimate + 30:
            rows[name] = {"skipped": f"{r.left():.0f} s left of the budget, a run takes ~{estimate:.0f} s"}
            continue
        try:
            rows[name] = r.train(f"{stage}_{name}", preset, *toy, *overrides)
            estimate = max(estimate or 0.0, rows[name]["wall_s"])
        except Exception as e:
            rows[name] = {"error": one_line(e)}
    return rows


def bench_args(r: Runner) -> list[str]:
    if r.smoke:
        return ["--model", "d2l", "--input-size", "80", "--batch-size", "8", "--steps", "1", "--warmup", "1",
                "--synthetic", "--device", "cpu"]
    return ["--model", "d2l", "--batch-size", "256", "--steps", "30", "--warmup", "5", "--device", "cuda",
            *r.data()]


BENCH_VARIANTS = {"no_cuda_graphs": ["--no-cuda-graphs"], "no_space_to_depth": ["--no-space-to-depth"],
                  "no_pool_first": ["--no-pool-first"],
                  # max-pool + ReLU as Triton kernels with int8 codes (alexnet.kernels.pool): off by default until
                  # this variant has measured it against the eager kernels
                  "fused_pool": ["--fused-pool"],
                  # conv -> pool -> + bias -> ReLU (the bias add and its gradient's sum on the pooled tensor: those
                  # two kernels took 0.77 ms of the 5.98 ms step, docs/performance.md section 8), alone and with the
                  # Triton pools
                  "bias_after_pool": ["--bias-after-pool"],
                  "fused_pool_bias_after_pool": ["--fused-pool", "--bias-after-pool"],
                  # torch.compile under the captured step (inductor's max-pool keeps int8 offsets, and fuses the
                  # element-wise work), and a larger batch: the two next candidates of docs/performance.md section 7
                  "compile": ["--compile"], "batch_1024": ["--batch-size", "1024"],
                  "fp32": ["--precision", "fp32"], "tf32": ["--precision", "tf32"]}


def stage_bench(r: Runner) -> dict:
    plain = json.loads(r.alexnet("bench", *bench_args(r), "--baseline", "--json"))
    ours, base = plain["ours"], plain["baseline"]
    variants: dict = {}
    for name, extra in BENCH_VARIANTS.items():  # each fast path off in turn, and the fp32 names
        if r.smoke and name != "fp32":
            continue  # on a CPU the fast paths do not apply and tf32 is a one-line error: fp32's name is checked
        try:
            raw = json.loads(r.alexnet("bench", *bench_args(r), *extra, "--json", timeout=min(r.left(), 120)))
            o = raw["ours"]
            variants[name] = {"images_per_sec": o["train_images_per_sec"], "mfu": o.get("mfu"),
                              "precision": o["precision"], "peak_precision": o["peak_precision"],
                              "peak_flops": o["peak_flops"], "float32_matmul_precision": o["float32_matmul_precision"]}
        except Exception as e:  # recorded with the rest; the stage's main figures stand
            variants[name] = {"error": one_line(e)}
    return {"images_per_sec": ours["train_images_per_sec"], "mfu": ours.get("mfu"),
            "baseline_images_per_sec": base["train_images_per_sec"], "ratio": plain["ratio"],
            "precision": ours.get("peak_precision"), "variants": variants,
            "goals": [goal("MFU of the d2l net, bf16, batch 256", ours.get("mfu"), 0.5)] if not r.smoke else [],
            "raw": plain}


def stage_time_to_090(r: Runner) -> dict:
    target = "0.30" if r.smoke else "0.90"
    toy = ["--set", "data.train_subset=512", "--set", "data.test_subset=256", "--set", "train.epochs=1"] \
        if r.smoke else []
    result = json.loads(r.alexnet("bench", "--time-to-accuracy", target, "--preset", "fast", "--device", r.device,
                                  "--out", r.out / "runs" / "time_to_090", *r.data(), *toy, "--json"))
    return {"wall_s": result["wall_s"], "preset": result["preset"], "reached": result["reached"],
            "epoch": result["epoch"], "target": float(target), "raw": result,
            "goals": [goal(f"seconds to {target} test acc", result["wall_s"] if result["reached"] else None, 3,
                           "<=")]}


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
    # the same step with the plain LRN module (what the fused Function gains), with the Triton ReLU + LRN and the
    # Triton pools (off by default until measured here), and with the paper's two columns (grouped conv2/4/5: 4.14
    # training GFLOP per image against 6.60) against the dense net
    candidates = {}
    for name, flags in (("plain_lrn", ["--no-fused-lrn"]), ("triton_lrn", ["--triton-lrn"]),
                        ("fused_pool", ["--fused-pool"]), ("triton_lrn_fused_pool", ["--triton-lrn", "--fused-pool"]),
                        ("two_column", ["--set", "model.two_column=true"])):
        try:
            candidates[name] = None if r.smoke else \
                json.loads(r.alexnet("bench", *step_args, *flags))["ours"]["train_images_per_sec"]
        except Exception as e:
            candidates[name] = one_line(e)
    toy = ["--set", "data.image_size=80", "--set", "data.input_size=67",
           "--set", "data.train_augment=[{op: random_crop, size: 67}, {op: hflip}]",
           "--set", "data.eval_augment=[{op: center_crop, size: 67}]", "--batch-size", "8"] if r.smoke else []
    folder = r.out / "runs" / "folder"
    os.environ["ALEXNET_DECODER"] = decode["decoder"]["backend"]  # train with the faster decoder measured above
    r.alexnet("train", "--preset", "paper", "--out", folder, "--quiet", "--device", r.device, "--data-dir", prepared,
              "--epochs", "2", "--set", "data.val_size=0", "--set", "train.estimate_steps=0", *toy)
    first, steady = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()][-2:]
    step_rate = step["ours"]["train_images_per_sec"]
    return {"images_per_sec": steady["images_per_sec"], "first_epoch_images_per_sec": first["images_per_sec"],
            "input_wait_s": steady.get("input_wait_s"), "step_s": steady.get("step_s"),
            "decoded_on": steady.get("decoded_on"), "decoder": decode["decoder"],
            "backends": decode["backends"].get("rows"), "decode_images_per_sec": decode["images_per_sec"],
            "step_images_per_sec": step_rate, "step_plain_lrn_images_per_sec": candidates["plain_lrn"],
            "step_triton_lrn_images_per_sec": candidates["triton_lrn"],
            "step_fused_pool_images_per_sec": candidates["fused_pool"],
            "step_triton_lrn_fused_pool_images_per_sec": candidates["triton_lrn_fused_pool"],
            "step_two_column_images_per_sec": candidates["two_column"],
            "files": n, "classes": classes, "source_size": list(size),
            "goals": [goal("steady-state end to end, img/s (the second epoch)", steady["images_per_sec"], 20_000),
                      goal("the paper net's step alone, img/s", step_rate, 30_000)] if not r.smoke else []}


DECODE_SNIPPET = """
import json, sys
from alexnet.bench.decode import decode_backends, decode_throughput
path, device, batch, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
smoke = steps <= 2
loader = {c: decode_throughput(path, device, batch_size=batch, steps=steps, warmup=2, decoder=c)
          for c in ("nvjpeg", "nvimgcodec")}
best = max(loader.values(), key=lambda r: r["images_per_sec"])
backends = decode_backends(path, device, batch_sizes=(batch,) if smoke else (64, 128, 256, 512),
                           images=4 * batch if smoke else 4096)
print(json.dumps({**best, "loader": loader, "backends": backends}))
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
    out: dict = {"goals": []}
    for model in ("d2l",) if r.smoke else ("d2l", "paper", "torchvision"):  # on a CPU each only says: no CUDA
        t0 = time.monotonic()
        try:
            result = json.loads(r.alexnet("bench", "--max-batch", "--model", model, "--input-size", "224",
                                          "--device", r.device, "--json", timeout=min(r.left(), 150)))
            # the command's seconds, and where they went: start-up (imports, CUDA), the trainer's build, each try
            # stopped_early: "budget" (bracket max_batch..smallest_not_fitting left wide) or "limit", else None
            out[model] = {"max_batch": result["max_batch"], "smallest_not_fitting": result["smallest_not_fitting"],
                          "stopped_early": result.get("stopped_early"), "seconds": round(time.monotonic() - t0, 1),
                          "in_process_seconds": round(result["seconds"], 1),
                          "build_seconds": round(result["build_seconds"], 1),
                          "trials": [(t["batch"], t["fits"], round(t["seconds"], 2)) for t in result["trials"]],
                          "first_estimate": (result.get("first_estimate") or {}).get("batch"),
                          "estimate": (result.get("estimate") or {}).get("batch")}
            out["goals"].append(goal(f"{model}: seconds to find the largest batch", out[model]["seconds"], 30, "<="))
        except Exception as e:
            out[model] = {"error": one_line(e)}
    return out


def stage_ddp(r: Runner) -> dict:
    """Scaling over the visible GPUs under torchrun: benchmarks/run_gpu_ddp.py."""
    return run_gpu_ddp.stage_ddp(r)


def stage_book_code(r: Runner) -> dict:
    """The book's own train_ch6 (benchmarks/d2l_book.py) where `d2l` is importable: speed-ups are reported
    against its figure, beside the baseline's."""
    probe = subprocess.run([sys.executable, "-c", "import d2l.torch"], capture_output=True, text=True)
    if probe.returncode != 0:
        return {"skipped": "the d2l package is not importable here (benchmarks/README.md: carry it as wheels)"}
    args = ["--device", r.device, "--json", *r.data()]
    args += ["--images", "256", "--test-images", "64", "--steps", "1", "--warmup", "1"] if r.smoke else \
        ["--images", "12800", "--test-images", "1000", "--steps", "30", "--warmup", "5"]
    result = json.loads(run([sys.executable, str(ROOT / "benchmarks" / "d2l_book.py"), *args], r.left()))
    book = result["book"]["examples_per_sec"]
    ours = result["bench_auto"]["ours"]["train_images_per_sec"]
    return {"book_examples_per_sec": book, "ours_images_per_sec": ours, "ours_over_book": ours / book,
            "raw": result}


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
    x, y = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    # each channel sin(x / a + c) * cos(y / b), an outer product of two lines (20,480 full-size sin/cos fields took
    # ~11 ms an image, most of the 15 s the H200 run's folder stage had for its JPEGs)
    base = np.stack([np.outer(np.cos(y / (7 + c + label % 5)), np.sin(x / (10 + label) + c)) for c in range(3)], -1)
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * 12
    image = ((base * 0.5 + 0.5) * 200 + noise).clip(0, 255).astype(np.uint8)
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
             f"`benchmarks/run_gpu.sh --out {summary['out']}` on {summary['date']}; {summary['wall_s']:.0f} s in all; "
             f"exit status {summary['exit_status']}.",
             "", "| stage | result | goal |", "| --- | --- | --- |"]
    for name, stage in s.items():
        if "error" in stage:
            lines.append(f"| {name} | error: {stage['error'][:200]} | |")
            continue
        lines.append(f"| {name} | {_cells(name, stage)} |")
    goals = [(name, g) for name, stage in s.items() for g in stage.get("goals", [])]
    if goals:
        lines += ["", "| stage | goal | measured | target | |", "| --- | --- | --- | --- | --- |"]
        for name, g in goals:
            mark = {True: "met", False: "**missed**", None: "not measured"}[g["met"]]
            value = "-" if g["value"] is None else f"{g['value']:.4g}"
            lines.append(f"| {name} | {g['goal']} | {value} | {g['target']} | {mark} |")
    return "\n".join(lines) + "\n"


def failed(summary: dict) -> list[str]:
    """The stages that make the run fail: an error anywhere in a stage's result, however deep (a bench variant,
    a model of max_batch, a study), except a smoke run's expected "needs a CUDA device"."""
    return [name for name, stage in summary["stages"].items() if errors(stage, summary["smoke"])]


def errors(result, smoke: bool) -> list[str]:
    if isinstance(result, list):
        return [e for item in result for e in errors(item, smoke)]
    if not isinstance(result, dict):
        return []
    own = result.get("error")
    mine = [own] if isinstance(own, str) and not (smoke and "needs a CUDA device" in own) else []
    return mine + [e for key, value in result.items() if key not in ("error", "raw") for e in errors(value, smoke)]


def _cells(name: str, r: dict) -> str:
    if name == "tests":
        return f"{r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped | all pass, none skipped"
    if name == "profile":
        plain, fast = r["plain"]["step"], r["fast"]["step"]
        gpu = lambda st: f"GPU {st['gpu_ms']:.2f} ms, host {st['host_work_ms']:.2f} ms" if "gpu_ms" in st else ""
        return (f"step {plain['wall_ms']:.2f} ms plain ({gpu(plain)}) -> {fast['wall_ms']:.2f} ms with the fast "
                f"paths ({gpu(fast)}) | host < GPU")
    if name == "paper_profile":
        return "; ".join(f"{k}: " + (f"error {v['error']}" if "error" in v else f"step {v['step']['wall_ms']:.2f} ms")
                         for k, v in r.items()) + " |"
    if name == "book_code":
        if "skipped" in r:
            return f"skipped: {r['skipped']} |"
        return (f"the book's train_ch6 {r['book_examples_per_sec']:.0f} examples/s, ours {r['ours_images_per_sec']:.0f}"
                f" img/s ({r['ours_over_book']:.1f}x) |")
    if name == "d2l_book":
        return (f"test acc {r['test_acc']:.4f} in {r['epochs']} epochs, {r['wall_s']:.0f} s, "
                f"{r['images_per_sec']:.0f} img/s | the book: 0.883, 4,186 img/s (V100)")
    if name == "d2l_fast":
        return f"test acc {r['test_acc']:.4f} in {r['epochs']} epochs, {r['wall_s']:.0f} s | >= 0.945 in <= 20"
    if name == "d2l_fast_candidates":
        tried = "; ".join(f"{k} val {c['val_acc']:.4f} test {c['test_acc']:.4f}" if c.get("val_acc") is not None
                          else f"{k}: {c.get('error') or 'skipped, ' + c['skipped']}"
                          for k, c in r["candidates"].items())
        return f"{tried}; best by validation: {r['best_by_val']} | chosen by validation, never by test"
    if name == "d2l_book_candidates":
        tried = "; ".join(f"{k} {c['wall_s']:.1f} s, test {c['test_acc']:.4f}" if c.get("wall_s") is not None
                          else f"{k}: {c.get('error') or 'skipped, ' + c['skipped']}"
                          for k, c in r["candidates"].items())
        return f"{tried}; fastest at >= 0.88: {r['fastest']} | the book's recipe in <= 15 s"
    if name == "bench":
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        others = ", ".join(f"{k} {v['images_per_sec']:.0f}" if "error" not in v else f"{k} error"
                           for k, v in r["variants"].items())
        return (f"{r['images_per_sec']:.0f} img/s ({r['precision']}), MFU {mfu}, baseline "
                f"{r['baseline_images_per_sec']:.0f} img/s, ratio {r['ratio']:.1f}x; {others} | MFU >= 50 %")
    if name == "time_to_090":
        reached = f"{r['wall_s']:.1f} s (epoch {r['epoch']})" if r["reached"] else "not reached"
        return f"{reached}, preset {r['preset']} | <= 3 s"
    if name == "folder":
        others = ", ".join(f"{k[5:-15]} {v:.0f}" if isinstance(v, (int, float)) else f"{k[5:-15]} error"
                           for k, v in r.items() if k.startswith("step_") and k.endswith("_images_per_sec")
                           and k != "step_images_per_sec" and v is not None)
        wait = "-" if r.get("input_wait_s") is None else f"{r['input_wait_s']:.2f}"
        return (f"{r['images_per_sec']:.0f} img/s end to end (second epoch; first {r['first_epoch_images_per_sec']:.0f}"
                f"), input wait {wait} s; decode {r['decode_images_per_sec']:.0f}, step "
                f"{r['step_images_per_sec']:.0f} img/s{f' ({others})' if others else ''} | >= 20,000 img/s, "
                "step >= 30,000")
    if name == "studies":
        rvt = r.get("relu-vs-tanh", {})
        head = ("relu-vs-tanh: error" if "error" in rvt else
                f"relu-vs-tanh: ReLU {rvt.get('steps_to_target', {}).get('relu')} vs tanh "
                f"{rvt.get('steps_to_target', {}).get('tanh')} steps to {rvt.get('target')}, "
                f"{rvt.get('ratio_tanh_over_relu')}x") if rvt else "relu-vs-tanh: not run"
        errors = [k for k, v in r.items() if isinstance(v, dict) and "error" in v]
        return f"{head}; errors: {', '.join(errors) or 'none'} | the paper: 6x"
    if name == "ddp":
        return run_gpu_ddp.ddp_cells(r)
    if name == "max_batch":
        return ", ".join(f"{k} {max_batch_cell(v)} ({v.get('seconds', '-')} s)" for k, v in r.items()
                         if k != "goals") + " | largest batch at 224, <= 30 s each"
    return ", ".join(f"{k} {v}" for k, v in r.items() if not isinstance(v, (dict, list))) + " |"


def max_batch_cell(v: dict) -> str:
    """A model's largest batch; a search that stopped early is a lower bound, and said (with the bracket left)."""
    if "max_batch" not in v:
        return "error"
    if v.get("stopped_early") == "budget":
        return f">= {v['max_batch']} (stopped early: budget, bracket {v['max_batch']}..{v['smallest_not_fitting']})"
    if v.get("stopped_early") == "limit":
        return f">= {v['max_batch']} (stopped early: the search's limit)"
    return str(v["max_batch"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/run_gpu.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/gpu-<date>-<device>)")
    p.add_argument("--data-dir", help="where Fashion-MNIST is (a folder, or Debian's dataset-fashion-mnist .deb)")
    p.add_argument("--smoke", action="store_true", help="every stage at toy size on the CPU")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all stages (default 540)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of the stages")
    p.add_argument("--run", help="a sub-folder of the results folder for this run, one plain name (run1, run2: a "
                                 "run writes summary.json and tables.md for its own stages only)")
    p.add_argument("--archive", type=Path, help="also pack the run's results (text files: JSON, tables, profiles, "
                                                "metrics, the log) into this .tgz, e.g. $OUT/run1.tgz (its folder "
                                                "must exist)")
    args = p.parse_args(argv)
    unknown = [stage for stage in args.stages.split(",") if f"stage_{stage}" not in globals()]
    if unknown:
        p.error(f"unknown stage {', '.join(unknown)}; stages: {', '.join(STAGES + ON_REQUEST)}")
    # checked before any stage runs: a bad name or an unwritable archive found at the end loses the GPU's time
    if args.run is not None and not plain_folder_name(args.run):
        p.error(f"--run {args.run!r}: not one plain folder name (letters, digits, '-', '_', '.'; not '.' or '..')")
    if args.archive is not None and (problem := archive_problem(args.archive)):
        p.error(f"--archive {args.archive}: {problem}")
    import torch

    name = device_name().replace(" ", "-").replace("/", "-")
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu-{time.strftime('%Y-%m-%d')}-{name}"
    out = out / args.run if args.run else out
    out.mkdir(parents=True, exist_ok=True)
    data_dir = unpack_deb(args.data_dir, out) if args.data_dir else None
    runner, started = Runner(out, data_dir, args.smoke, args.budget), time.monotonic()
    summary: dict = {"device": device_name(), "torch": str(torch.__version__), "smoke": args.smoke,
                     "stages": runner.results, "stage_seconds": {}}
    for stage in args.stages.split(","):
        t0 = time.monotonic()
        try:
            result = globals()[f"stage_{stage}"](runner)
        except Exception as e:  # recorded, and the next stage runs
            result = {"error": one_line(e)}
        seconds = summary["stage_seconds"][stage] = round(time.monotonic() - t0, 1)
        (out / f"{stage}.json").write_text(json.dumps(result, indent=1) + "\n")
        summary["stages"][stage] = result
        line = f"[{stage}] {result.get('error') or 'done'} ({seconds} s)"
        print(line, file=sys.stderr, flush=True)
        with open(out / "log.txt", "a") as log:
            log.write(line + "\n")
        if args.archive:  # after every stage: a run killed at the device's limit still returns what it finished
            try:
                archive(out, args.archive)
            except OSError as e:  # a full disk: the stages still run, and the last pack tries again
                print(f"run_gpu: could not pack {args.archive}: {one_line(e)}", file=sys.stderr, flush=True)
    summary.update(out=str(out), date=time.strftime("%Y-%m-%d %H:%M"), wall_s=round(time.monotonic() - started, 1))
    summary["failed_stages"] = failed(summary)
    summary["exit_status"] = 1 if summary["failed_stages"] else 0
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "tables.md").write_text(tables(summary))
    print(out / "summary.json")
    if summary["failed_stages"]:
        print(f"run_gpu: failed: {', '.join(summary['failed_stages'])}", file=sys.stderr)
    if args.archive:
        print(f"{archive(out, args.archive)} files in {args.archive}")
    return summary["exit_status"]


ARCHIVED = (".json", ".jsonl", ".md", ".txt", ".xml", ".yaml")  # results (config.yaml: what each run took), not data
NOT_ARCHIVED = re.compile(r"folder|fmnist-.*")  # folders: the generated JPEGs and shards, the unpacked package
ARCHIVED_MAX_BYTES = 4 << 20


def plain_folder_name(name: str) -> bool:
    """One folder name of letters, digits, '-', '_' and '.', not '.' or '..': no path, absolute or relative."""
    return re.fullmatch(r"[A-Za-z0-9._-]+", name) is not None and name not in (".", "..")


def archive_problem(path: Path) -> str | None:
    """Why the .tgz `path` could not be written (None: it can): a folder at `path`, or its folder missing or
    not writable, tried by creating a file there (root passes any permission check but not a read-only place)."""
    if path.is_dir():
        return "is a folder, not a file"
    folder = path.parent
    if not folder.is_dir():
        return f"its folder {folder} does not exist"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return f"its folder {folder} is not writable ({e.strerror or one_line(e)})"
    return None


def data_folder(relative: Path) -> bool:
    """Whether `relative` lies in one of the NOT_ARCHIVED folders (folder.json, the folder stage's result, does not)."""
    return len(relative.parts) > 1 and NOT_ARCHIVED.fullmatch(relative.parts[0]) is not None


def archive(out: Path, path: Path) -> int:
    """The run's text results under `out` (by suffix, each under ARCHIVED_MAX_BYTES) packed into the .tgz `path`,
    with their paths relative to `out`; how many. One file brings a whole run back from a machine that returns
    only a few (the device tool's $OUT). Written to a file beside `path`, then renamed over it: a failure (or a
    kill) leaves the previous archive, never half of one."""
    import tarfile

    files = sorted(f for f in out.rglob("*") if f.is_file() and f.suffix in ARCHIVED
                   and f.stat().st_size <= ARCHIVED_MAX_BYTES
                   and not data_folder(f.relative_to(out)))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # same folder: os.replace is one rename
    try:
        with tarfile.open(partial, "w:gz") as tar:
            for f in files:
                tar.add(f, arcname=str(f.relative_to(out)))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return len(files)


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
