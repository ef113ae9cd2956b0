"""`train()`: a config into a run folder, as `alexnet train` and the Python API run it.

Before the first step: the config is validated, the run folder checked and locked (one writer per folder), the
temp files a killed process left are swept, the data loaded, and only then the resolved config written (with
what this run resolved: device, precision, the files read; a run that fails before it leaves no record, and a
folder it created is removed again), and a banner printed: device, precision and why, the splits' sizes and sources,
steps per epoch, and an estimate of the time per epoch and for the run from a short timed warm-up.
"""

import contextlib
import sys
import time
from pathlib import Path

import torch

from alexnet.base.errors import AlexNetError, plural
from alexnet.base.files import output_dir, sweep_temp_files
from alexnet.config import Config, save_config
from alexnet.data.pipeline import Stats
from alexnet.data.run import validate
from alexnet.report.run_report import write_run_report
from alexnet.run.checkpoint import check_resumable, load_checkpoint, write_metrics
from alexnet.run.layout import CHECKPOINT, CONFIG, METRICS, STEPS
from alexnet.run.lock import RunLock
from alexnet.run.trained import load_weights
from alexnet.runtime import distributed
from alexnet.runtime.device import pick_device
from alexnet.runtime.distributed import DistEnv
from alexnet.runtime.precision import describe
from alexnet.runtime.settings import torch_settings
from alexnet.training.monitor import trim_steps
from alexnet.training.trainer import Trainer

SLOW_RUN_S = 3600  # an estimate above this gets a warning naming faster choices
EVAL_COST = 1 / 3  # an evaluated image costs about a third of a trained one (forward only)


def train(cfg: Config, out: Path, *, resume: bool = False, quiet: bool = False, model: torch.nn.Module | None = None,
          display=None) -> list[dict]:
    """Train `cfg` into the run folder `out`; with `resume`, continue from `out/checkpoint.pt` if there is one.
    `model` replaces the config's (the Python API's `fit`); `display` shows a figure per epoch (notebooks)."""
    validate(cfg, model_given=model is not None)
    if cfg.data.data_dir:  # recorded absolute, so that eval finds the data from any working directory
        cfg.data.data_dir = str(Path(cfg.data.data_dir).expanduser().absolute())
    out, env = Path(out), DistEnv.from_environ()
    device = pick_device(cfg.train.device, env)
    if cfg.train.init_from and not (resume and (out / CHECKPOINT).exists()):
        load_checkpoint(Path(cfg.train.init_from).expanduser())  # a file that is not weights: refused now
    created = env.is_main and not out.exists()
    if env.is_main:
        output_dir(out)
    try:
        return _train_in(cfg, out, env, device, resume=resume, quiet=quiet, model=model, display=display)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            with contextlib.suppress(OSError):  # another process got there first: the original error matters
                out.rmdir()  # refused before anything was written: leave no empty run folder behind
        raise


def _train_in(cfg: Config, out: Path, env: DistEnv, device: torch.device, *, resume: bool, quiet: bool,
              model: torch.nn.Module | None, display) -> list[dict]:
    started = time.time()
    lock = RunLock(out) if env.is_main else None
    with lock or contextlib.nullcontext():
        if lock is not None and lock.took_over is not None:  # said even with --quiet: the user should know
            print(f"alexnet train: {out} was locked by pid {lock.took_over.get('pid')}, which is no longer "
                  f"running; taking it over", file=sys.stderr, flush=True)
        state = _previous_state(cfg, out, resume)
        if state is not None and state["progress"]["epoch"] >= cfg.train.epochs:  # nothing to do: touch nothing
            done = state["progress"]["history"]
            print(f"alexnet train: {out} already finished its {plural(len(done), 'epoch')}; raise --epochs to train it "
                  f"longer", file=sys.stderr, flush=True)
            return done
        if env.is_main:
            sweep_temp_files(out, older_than=started)  # what a kill during a checkpoint write left
        distributed.init(env, device)
        try:
            with torch_settings(device, threads=cfg.train.threads, deterministic=cfg.train.deterministic,
                                precision=cfg.train.precision):
                return _fit(cfg, out, env, device, state, quiet=quiet, model=model, display=display)
        finally:
            distributed.shutdown()


def _previous_state(cfg: Config, out: Path, resume: bool) -> dict | None:
    if resume and (out / CHECKPOINT).exists():
        state = load_checkpoint(out / CHECKPOINT)
        check_resumable(state.get("config", {}), cfg)
        return state
    if not resume and ((out / CHECKPOINT).exists() or (out / METRICS).exists()):
        raise AlexNetError(f"{out} already holds a run; continue it with --resume or choose another --out")
    return None


def _fit(cfg: Config, out: Path, env: DistEnv, device: torch.device, state: dict | None, *, quiet: bool,
         model: torch.nn.Module | None, display) -> list[dict]:
    """The run itself, once the process is set up: a resumed run keeps its statistics and state."""
    stats = Stats.from_dict(state["stats"]) if state is not None else None
    trainer = Trainer(cfg, out, env, device, quiet=quiet, stats=stats, model=model, display=display)
    if state is not None:
        trainer.load_state_dict(state)
    note = None
    if state is None and cfg.train.init_from:
        note = load_weights(trainer.model, cfg.train.init_from)
    banner(trainer, resumed=state is not None, weights=note)
    if trainer.data.val is None and env.is_main:  # said even with --quiet: the test split now chooses
        print(f"alexnet train: warning: no validation split (data.val_size 0): "
              f"{'best.pt and the plateau schedule follow' if cfg.optim.schedule == 'plateau' else 'best.pt follows'}"
              f" the test split",
              file=sys.stderr, flush=True)
    p = trainer.progress  # the restored one, on resume
    trainer.run_info["resumed_at_step"] = p.global_step if state is not None else None
    if env.is_main:
        save_config(cfg, out / CONFIG, runtime=trainer.run_info)
        if state is not None:
            write_metrics(out / METRICS, p.history)  # drops a record of an epoch that the kill undid
            trim_steps(out / STEPS, p.global_step)
    history = trainer.fit()
    if env.is_main:
        write_run_report(out, cfg, history, trainer.data.classes, trainer.run_info)
    return history


def banner(trainer: Trainer, *, resumed: bool, weights: str | None = None) -> None:
    """What the run is about to do, and how long it should take, before the first step."""
    cfg, info, m, p = trainer.cfg, trainer.run_info, trainer.monitor, trainer.progress
    sizes, sources = info["data_sizes"], info["data_sources"]
    steps = len(trainer.data.train)
    head = f"alexnet train: {cfg.preset} -> {trainer.out}"
    m.say(head + (f" (resuming at epoch {p.epoch + 1}, step {p.global_step})" if resumed else ""))
    m.say(f"  device     {info['device']} | torch {info['torch']} | host {info['host']}"
          + (f" | {info['world_size']} ranks" if info["world_size"] > 1 else ""))
    m.say(f"  precision  {describe(info['precision'], info['channels_last'], info['reason'])}")
    m.say(f"  fast paths {'; '.join(info['fast_paths'].values())}")
    m.say(f"  data       {cfg.data.dataset} from {sources['train']}: train {sizes['train']:,} | val "
          f"{sizes['val']:,} | test {sizes['test']:,}")
    m.say(f"  validation {sources['val']}")
    m.say(f"  model      {cfg.model.name} ({info['parameters']:,} parameters) at {cfg.data.input_size} px, "
          f"batch {cfg.train.batch_size}, {steps} steps per epoch, {plural(cfg.train.epochs, 'epoch')}")
    if weights is not None:
        m.say(f"  weights    {weights}")
    seconds = trainer.seconds_per_step(cfg.train.estimate_steps)
    if seconds is None:
        return
    evaluated = (sizes["val"] + sizes["test"]) * EVAL_COST / max(cfg.train.batch_size, 1)
    epoch_s = seconds * (steps + evaluated)
    left = epoch_s * (cfg.train.epochs - p.epoch) - seconds * p.step_in_epoch
    m.say(f"  estimate   {seconds:.3g} s per step ({cfg.train.estimate_steps} timed): {_about(epoch_s)} per "
          f"epoch with evaluation, {_about(left)} for the run")
    if left > SLOW_RUN_S and not m.quiet:
        print(f"alexnet train: warning: this run would take about {_duration(left)} on this device; for a first "
              f"try use --preset quick, a GPU (--device cuda), or fewer images (--set data.train_subset=5000)",
              file=sys.stderr, flush=True)


def _about(seconds: float) -> str:
    return "< 1 s" if seconds < 1 else f"~{_duration(seconds)}"  # never "~0 s"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

