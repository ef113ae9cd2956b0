"""What every study shares: arms (config deltas over a preset) trained as real run folders, then `results.json`,
`results.md` (a table) and a plot, all written atomically (temp file, then `os.replace`).

A study folder DIR looks like

    DIR/results.json   everything measured, machine and date included
    DIR/results.md     the table and the plot, for people
    DIR/plot.png
    DIR/runs/<arm>/    one ordinary `alexnet train` run folder per arm (metrics.jsonl, checkpoint.pt, report.md)

Running the same study into the same DIR again skips the arms whose run finished and resumes the others from
their checkpoints, so an interrupted study loses at most one epoch.
"""

import contextlib
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alexnet.base.errors import AlexNetError
from alexnet.base.files import atomic_write, output_dir
from alexnet.config import Config, apply_overrides, load_config, load_preset
from alexnet.data.datasets import search_roots
from alexnet.data.run import load_split, make_loader
from alexnet.eval.evaluate import evaluate
from alexnet.run.checkpoint import check_resumable, read_metrics
from alexnet.run.layout import CHECKPOINT, CONFIG, METRICS
from alexnet.run.trained import load_trained
from alexnet.runtime.device import cpu_features
from alexnet.runtime.precision import resolve_precision
from alexnet.training.guards import Diverged
from alexnet.training.run import train

BUDGETS = ("small", "full", "tiny")  # tiny: seconds, a smoke test whose numbers mean nothing
PLOT = "plot.png"
DIVERGED = "diverged.txt"  # in an arm's run folder: training hit a non-finite loss (a re-run does not retry it)
# The `quick` preset's recipe (Nesterov SGD, one-cycle) at a batch and rate that learn within the few hundred steps
# of a `small` budget: at its own lr 0.1 and batch 256 the small net barely leaves chance in 200 steps.
SMALL_RECIPE = {"optim.lr": 0.05, "optim.label_smoothing": 0.0, "train.batch_size": 32}
# Every `tiny` budget (the test suite's): fp32 and one thread, so that a CPU with bf16 units (AVX512-BF16, AMX)
# trains the same nets as one without; the kernels still differ in the last bits from CPU to CPU.
TINY_RUNTIME = {"train.precision": "fp32", "train.threads": 1}


@dataclass(frozen=True)
class Arm:
    """One configuration of a study: `preset` (or the study's), then `model` (replaces the preset's model
    section whole: {"name": ..., **options}), then the budget's common overrides, then `overrides`."""
    name: str                                        # run folder name under DIR/runs/
    overrides: dict = field(default_factory=dict)    # dotted keys, as `--set`
    model: dict | None = None
    preset: str | None = None
    label: str = ""                                  # what the arm changes, for the table


@dataclass
class ArmRun:
    arm: Arm
    cfg: Config
    run_dir: Path
    history: list[dict]
    error: str | None = None  # set when training diverged (the loss went non-finite)

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}

    def record(self, out: Path) -> dict:
        """The arm as results.json stores it."""
        return {"name": self.arm.name, "label": self.arm.label, "preset": self.cfg.preset,
                "config": self.cfg.to_dict(), "run_dir": str(self.run_dir.relative_to(out)),
                "error": self.error, "history": self.history}


def check_budget(budget: str, table: dict) -> dict:
    if budget not in table:
        raise AlexNetError(f"unknown budget {budget!r}; choose from {', '.join(b for b in BUDGETS if b in table)}")
    return table[budget]


def start_study(out: Path, study: str, budget: str) -> Path:
    """Create DIR, or check that it holds this study at this budget (so a re-run resumes it)."""
    out = output_dir(out)
    previous = out / "results.json"
    if previous.exists():
        try:
            old = json.loads(previous.read_text())
        except ValueError:
            raise AlexNetError(f"{previous} is not valid JSON; choose another --out") from None
        if (old.get("study"), old.get("budget")) != (study, budget):
            raise AlexNetError(f"{out} holds the {old.get('study')!r} study at budget {old.get('budget')!r}; "
                               f"choose another --out")
    output_dir(out / "runs")
    return out


def begin(study: str, out: Path, budget: str, device: str, data_dir: str | None, budgets: dict, arms_of,
          runner=None) -> tuple[dict, Path, float, dict, list["ArmRun"]]:
    """What every study's run() starts with: its budget's spec, the study folder, the start time, provenance,
    and every arm trained (or resumed, or read back when finished)."""
    spec = check_budget(budget, budgets)
    search_roots(data_dir)  # a --data-dir that is not a folder: refused before the study folder is made
    out, started = start_study(out, study, budget), time.perf_counter()
    info = provenance(study, out, budget, device, data_dir)
    runs = run_arms(out, study, arms_of(spec), preset=spec["preset"], common=spec["common"], device=device,
                    data_dir=data_dir, runner=runner or run_arm)
    return spec, out, started, info, runs


def arm_config(arm: Arm, preset: str, common: dict, device: str, data_dir: str | None) -> Config:
    cfg = load_preset(arm.preset or preset)
    if arm.model is not None:
        options = dict(arm.model)
        cfg.model.name, cfg.model.options = options.pop("name"), options
    apply_overrides(cfg, {**common, **arm.overrides, "train.device": device})
    if data_dir is not None:
        cfg.data.data_dir = str(data_dir)
    return cfg


def run_arm(cfg: Config, run_dir: Path) -> list[dict]:
    """Train one arm, or return its history if its run already finished with this config."""
    if (run_dir / CONFIG).exists():
        check_resumable(load_config(run_dir / CONFIG).to_dict(), cfg)  # a different arm in this folder: error
    history = read_metrics(run_dir / METRICS)
    if len(history) >= cfg.train.epochs and (run_dir / CHECKPOINT).exists():
        return history[:cfg.train.epochs]
    with contextlib.redirect_stdout(sys.stderr):  # "resuming ..." is progress, not the study's output
        return train(cfg, run_dir, resume=True, quiet=True)


def run_arms(out: Path, study: str, arms: list[Arm], *, preset: str, common: dict, device: str,
             data_dir: str | None, runner=run_arm) -> list[ArmRun]:
    """Every arm in turn, one progress line each on stderr. A diverged arm is recorded, not fatal: "lr too high
    for this variant" is a result. `runner(cfg, run_dir)` trains one arm (batch-size measures memory around it)."""
    results = []
    for i, arm in enumerate(arms, start=1):
        cfg = arm_config(arm, preset, common, device, data_dir)
        run_dir = Path(out) / "runs" / arm.name
        t0, error, history = time.perf_counter(), None, []
        try:
            if (run_dir / DIVERGED).exists():
                raise Diverged((run_dir / DIVERGED).read_text())
            history = runner(cfg, run_dir)
        except Diverged as exc:  # anything else is fatal
            atomic_write(output_dir(run_dir) / DIVERGED, str(exc))  # a run that diverged in its warm-up left no folder
            error, history = f"diverged: {exc}", read_metrics(run_dir / METRICS)
        last = history[-1] if history else {}
        status = error or (f"test acc {last['test_acc']:.4f}" if last else "no epochs")
        print(f"[{study}] {i}/{len(arms)} {arm.name}: {status} ({time.perf_counter() - t0:.1f} s)",
              file=sys.stderr, flush=True)
        results.append(ArmRun(arm, cfg, run_dir, history, error))
    return results


@torch.no_grad()
def train_set_accuracy(run: ArmRun) -> float | None:
    """Accuracy of the final weights on the arm's training images, in eval mode (no dropout, no augmentation):
    the training error a train-test gap should use. The per-epoch train_acc is measured with dropout and
    augmentation on, while the weights still move."""
    if run.error or not (run.run_dir / CHECKPOINT).exists():
        return None
    trained = load_trained(run.run_dir / CHECKPOINT, run.cfg.train.device)
    data = load_split(run.cfg, "train")
    loader = make_loader(run.cfg, data, trained.device, train=False)
    precision = resolve_precision(run.cfg.train.precision, trained.device, run.cfg.train.channels_last)
    return evaluate(trained.model.to(memory_format=precision.memory_format), loader, trained.pipeline,
                    num_classes=len(trained.classes), precision=precision).top1


# --- where and when ---------------------------------------------------------------------------------------------

def machine(device: str = "auto") -> str:
    """'2-core AMD EPYC CPU' or the GPU's name, as results.json records it."""
    if device != "cpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} GPU, {os.cpu_count()} CPU cores"
    model = cpu_features().model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores}-core {model} CPU, no GPU used"


def provenance(study: str, out: Path, budget: str, device: str, data_dir: str | None) -> dict:
    """Recorded with every study: a number in docs/ must say where it came from."""
    command = f"alexnet experiment {study} --out {out} --budget {budget} --device {device}"
    return {"study": study, "budget": budget, "machine": machine(device), "torch": torch.__version__,
            "python": platform.python_version(), "date": datetime.date.today().isoformat(),
            "command": command + (f" --data-dir {data_dir}" if data_dir else ""),
            "torch_threads": torch.get_num_threads(), "load_average_1min_at_start": _load()}


def _load() -> float | None:
    """The 1-minute load average: on a shared machine, images/s mean little without it."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


# --- writing the results ----------------------------------------------------------------------------------------

def markdown_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def study_results(info: dict, claim: str, title: str, t0: float, notes: list[str], summary: dict, *,
                  out: Path, runs: Sequence[ArmRun] = (), dataset: str | None = None) -> dict:
    """What every study's results.json holds: `info` from `begin`, the claim it tests (its source's words and
    figure: the study module's CLAIM), notes, dataset, the study's own summary, each arm's record, and the wall
    time."""
    results = {**info, "title": title, "claim": " ".join(claim.split()), "notes": notes}
    if dataset is not None:
        results["dataset"] = dataset
    results["summary"] = summary
    if runs:
        results["arms"] = [r.record(out) for r in runs]
    return {**results, "wall_s": round(time.perf_counter() - t0, 1)}


def finish(out: Path, results: dict, columns: list[str], rows: list[list], extra_md: str = "",
           verdict: str | None = None) -> dict:
    """Write results.json and results.md (the plot is already at DIR/plot.png); return the results with the
    paths and `table_md`: the claim, the table and, where the study states one, its verdict (what was measured
    against the claim), as `alexnet experiment` prints them and results.md holds them."""
    out = Path(out)
    table = markdown_table(columns, rows)
    # The arms' own training + evaluation seconds: unlike this invocation's wall_s, a re-run that skips
    # finished arms does not change it.
    arms = [a["history"][-1]["wall_s"] for a in results.get("arms", []) if a["history"]]
    results = {**results, "table": {"columns": columns, "rows": rows}, "plot": PLOT, "verdict": verdict,
               "arms_wall_s": round(sum(arms), 1) if arms else None, "load_average_1min_at_end": _load()}
    r = results
    notes = "".join(f"- {n}\n" for n in r.get("notes", []))
    spent = f"arms trained in {r['arms_wall_s']:.0f} s, " if arms else ""
    where = (f"{r['machine']}, torch {r['torch']}, {r['torch_threads']} thread(s), {r['date']}; {spent}"
             f"this invocation {r.get('wall_s', 0):.0f} s; 1-minute load average {r['load_average_1min_at_start']} "
             f"at the start, {r['load_average_1min_at_end']} at the end.")
    shown = f"Claim: {r['claim']}\n\n{table}" + (f"\n\nMeasured: {verdict}" if verdict else "")
    text = (f"# {r['title']}\n\n`{r['command']}`\n\n{where}\n\n{notes}\n{shown}\n\n"
            + (extra_md + "\n\n" if extra_md else "") + f"![plot]({PLOT})\n")
    atomic_write(out / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write(out / "results.md", text)
    return {**results, "table_md": shown, "results_json": str(out / "results.json"),
            "results_md": str(out / "results.md"), "plot_png": str(out / PLOT)}


def error_rate(acc: float | None) -> float | None:
    return None if acc is None else round(1.0 - acc, 4)
