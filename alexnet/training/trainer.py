"""The Trainer: config -> data, model, optimizer on the device -> epochs of (train, evaluate, checkpoint).

Reproducibility: every step re-seeds torch's generators (dropout) and the augmentation generator from
(seed, rank, step), and the data order of an epoch is a function of (seed, epoch). A run resumed from any
checkpoint, or restarted by torchrun, therefore continues with exactly the random numbers an uninterrupted run
would have drawn; on the CPU the final weights are bit-identical.

Distributed (torchrun): `train.batch_size` is the *global* batch. Each rank takes its share of every global batch
and scales its summed loss by world_size / global batch, so DDP's gradient average equals the gradient of the
global mean loss: the same update as one process with the same batch, whatever the number of ranks.
"""

import contextlib
import copy
import functools
import itertools
import socket
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F

from alexnet.base.errors import AlexNetError, one_line
from alexnet.config import Config, build_model
from alexnet.data.loader import Timed
from alexnet.data.pipeline import Stats
from alexnet.data.run import RunData, prepare_data
from alexnet.eval.evaluate import evaluate
from alexnet.eval.metrics import EvalResult
from alexnet.kernels.forward import FastForward
from alexnet.report.run_report import write_run_report
from alexnet.run.checkpoint import atomic_save, best_state, rng_state, set_rng_state, write_metrics
from alexnet.run.layout import BEST, CHECKPOINT, METRICS, RANKS
from alexnet.run.writer import Writer, snapshot
from alexnet.runtime import distributed
from alexnet.runtime.device import device_name, sync
from alexnet.runtime.distributed import DistEnv
from alexnet.runtime.precision import resolve_precision
from alexnet.runtime.seeding import derived_seed
from alexnet.training import fast
from alexnet.training.graphs import CapturedStep
from alexnet.training.guards import (
    DivergenceGuard,
    Interrupted,
    SignalFlag,
    check_ranks_agree,
    fault_injection,
    warn_at_chance,
)
from alexnet.training.monitor import Monitor
from alexnet.training.optim import LRSchedule, build_optimizer

STOP_CHECK_EVERY = 10  # distributed: agree on a stop request every N steps (an all-reduce, so not every step)


@dataclass
class Progress:
    epoch: int = 0             # epoch in progress (0-based)
    step_in_epoch: int = 0     # optimizer steps of that epoch already taken
    global_step: int = 0
    best_acc: float = -1.0
    wall_s: float = 0.0        # training + evaluation seconds of earlier processes of this run
    partial: dict = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "seen": 0.0})
    history: list = field(default_factory=list)  # one metrics record per finished epoch


class Trainer:
    """One run's training state on one rank. Public, for the benchmarks and the Python API: `cfg`, `device`,
    `precision` (`alexnet.runtime.precision.Precision`), `data` (`RunData`), `model` (the plain module),
    `net` (what trains: DDP- and compile-wrapped as configured), `eval_net`, `optimizer`, `progress`, and the
    methods `train_step(batch)`, `eval_logits(images)`, `check_weights()`, `fit()`, `state_dict()` and
    `load_state_dict()`. Process-wide torch settings are the caller's (`alexnet.runtime.settings`)."""

    def __init__(self, cfg: Config, out: Path, env: DistEnv, device: torch.device, *, quiet: bool = False,
                 stats: Stats | None = None, model: torch.nn.Module | None = None, display=None):
        self.cfg, self.out, self.env, self.device = cfg, Path(out), env, device
        t = cfg.train
        self.precision = resolve_precision(t.precision, device, t.channels_last)
        torch.manual_seed(t.seed)
        self.data: RunData = prepare_data(cfg, env, device, stats)  # a resumed run keeps its statistics
        if model is None:  # the config's model; `alexnet.fit` brings its own
            model = build_model(cfg, num_classes=len(self.data.classes))
        if t.batch_size < env.world_size * t.accum_steps:
            raise AlexNetError(f"train.batch_size {t.batch_size} cannot give each of {env.world_size} ranks "
                               f"{t.accum_steps} micro-batches of at least one image")
        self.model = model.to(device).to(memory_format=self.precision.memory_format)
        self.fast = fast.choose(cfg, device, env, self.precision, self.model)
        # what runs: the plain model, or the same parameters in exact faster forms (alexnet.kernels)
        runs = FastForward(self.model, **forms) if any((forms := fast.forms(self.fast)).values()) else self.model
        net = runs
        self.ddp = None
        if env.distributed:
            net = self.ddp = torch.nn.parallel.DistributedDataParallel(
                runs, device_ids=[device.index] if device.type == "cuda" else None)
        # torch.compile returns a callable wrapper of the module (with its methods): typed as the module it wraps
        self.net: torch.nn.Module = cast(torch.nn.Module, torch.compile(net)) if t.compile else net
        self.eval_net: torch.nn.Module = cast(torch.nn.Module, torch.compile(runs)) if t.compile else runs
        self.captured: CapturedStep | None = None  # the step's CUDA graph, captured at the first full batch
        self.optimizer = build_optimizer(self.model, cfg.optim, device)
        self.schedule = LRSchedule(cfg.optim, len(self.data.train), t.epochs)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.needs_scaler)
        self.aug_generator = torch.Generator(device=device)
        self.progress = Progress()
        self.guard = DivergenceGuard(self.schedule.lr)
        self.fire_fault = fault_injection(env.rank, env.restart_count)
        self.monitor = Monitor(out, cfg, enabled=env.is_main, quiet=quiet, display=display)
        self.writer = Writer()  # checkpoints and reports, written in order in a background thread
        self.record_base = {"device": device_name(device), "torch": str(torch.__version__),
                            "host": socket.gethostname()}
        self.run_info = {**self.record_base, **self.precision.to_dict(), "world_size": env.world_size,
                         "fast_paths": {name: choice.describe(name) for name, choice in self.fast.items()},
                         "parameters": sum(p.numel() for p in self.model.parameters()),
                         "data_sizes": self.data.sizes, "data_sources": self.data.sources}
        self._started = time.perf_counter()

    # ----------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        progress = {**asdict(self.progress), "wall_s": self.wall()}
        return {"format": 1, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
                "progress": progress, "rng": rng_state(), "config": self.cfg.to_dict(),
                "classes": list(self.data.classes), "stats": self.data.stats.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.captured = None  # the graph points at the optimizer state tensors just replaced
        self.progress = Progress(**state["progress"])
        if not self.env.is_main:  # partial sums are global and restored once, on rank 0
            self.progress.partial = Progress().partial
        set_rng_state(state["rng"])

    def wall(self) -> float:
        """Seconds of training and evaluation in this run, earlier processes included."""
        return self.progress.wall_s + time.perf_counter() - self._started

    def check_weights(self) -> None:
        """Raises Diverged if a NaN or inf reached the loss or the weights: they are never written."""
        self.guard.flush()
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            self.guard.diverged(self.progress.global_step - 1)

    def save_checkpoint(self) -> None:
        """checkpoint.pt of now, on disk when this returns (periodic and interrupt checkpoints: a kill -9 after
        `train.checkpoint_every_steps` finds it); epoch ends write theirs in the background instead."""
        self.check_weights()
        if (state := self._snapshot()) is not None:
            self.writer.submit(functools.partial(atomic_save, state, self.out / CHECKPOINT))
        self.writer.wait()

    def _snapshot(self) -> dict | None:
        """The state now, copied to host memory for the writer (alexnet.run.writer); None off the main rank.
        It waits for the writes before it: one snapshot in memory at a time."""
        self.progress.partial = self._epoch_totals()  # part of the state: set on every rank (a collective)
        if not self.env.is_main:
            return None
        self.writer.wait()
        return snapshot(self.state_dict())

    # ----------------------------------------------------------------------------------------------- loop
    def fit(self) -> list[dict]:
        self._started = time.perf_counter()  # the run's clock: training and evaluation, not set-up or estimate
        try:
            with SignalFlag() as stop:
                self.stop = stop
                for epoch in range(self.progress.epoch, self.cfg.train.epochs):
                    self.train_epoch(epoch)
                    self.end_epoch(epoch)
            self.writer.wait()  # a write that failed is this run's error
        finally:
            if (lost := self.writer.close()) is not None:  # already unwinding (Ctrl-C, a failure): say it too
                warnings.warn(f"a run-folder write failed as the run stopped: {one_line(lost)}", stacklevel=1)
            self.monitor.close()
        check_ranks_agree(self.model, self.env, self.out / RANKS)
        return self.progress.history

    def seconds_per_step(self, steps: int) -> float | None:
        """A timed warm-up for the start-up estimate: `steps` + 1 real training steps on the next batches (the
        first one, which pays for cuDNN autotuning, torch.compile and allocator growth, is not timed), then
        the weights, optimizer, scaler and RNG states put back exactly: the run continues as if none had been
        taken. None when `steps` is 0."""
        if steps < 1:
            return None
        saved = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()),
                 self.scaler.state_dict(), rng_state())
        p, times = self.progress, []
        self.net.train()
        for batch in itertools.islice(self.data.train.batches(p.epoch, p.step_in_epoch), steps + 1):
            t0 = time.perf_counter()
            self.train_step(batch)
            sync(self.device)
            times.append(time.perf_counter() - t0)
        self.guard.flush()  # a warm-up step that diverged stops the run here, before anything is written
        self.guard = DivergenceGuard(self.schedule.lr)
        for holder, state in zip((self.model, self.optimizer, self.scaler), saved, strict=False):  # rng: below
            holder.load_state_dict(state)
        self.captured = None  # the optimizer's state tensors were replaced: capture again at the next step
        set_rng_state(saved[3])
        self.optimizer.zero_grad(set_to_none=True)
        return statistics.median(times[1:]) if len(times) > 1 else (times[0] if times else None)

    def train_epoch(self, epoch: int) -> None:
        cfg, p, loader = self.cfg, self.progress, self.data.train
        self.net.train()
        # (loss sum, correct) of the epoch stay on the device: reading them is a host sync, done only every
        # log_every_steps. Rank 0 carries the sums a mid-epoch checkpoint restored; the reduction adds them once.
        restored = [p.partial["loss"], p.partial["correct"]] if self.env.is_main else [0.0, 0.0]
        self.sums = torch.tensor(restored, dtype=torch.float64, device=self.device)
        self.seen = int(p.partial["seen"]) if self.env.is_main else 0  # this rank's images, host-side
        seen_before, t0 = self.seen, time.perf_counter()

        def read() -> dict:
            loss, correct = (self.sums / max(self.seen, 1)).tolist()
            rate = (self.seen - seen_before) * self.env.world_size / (time.perf_counter() - t0)
            return {"loss": loss, "acc": correct, "lr": self.schedule.lr(p.global_step - 1),
                    "images_per_sec": rate}

        self.monitor.start_epoch(epoch, len(loader), p.step_in_epoch)
        batches = Timed(loader.batches(epoch, p.step_in_epoch))  # the seconds this loop waits for its input
        for batch in batches:
            self.sums += self.train_step(batch)
            self.seen += len(batch.labels)
            p.global_step += 1
            p.step_in_epoch += 1
            self.fire_fault(p.global_step, self.model)
            self.monitor.step(epoch, p.step_in_epoch, len(loader), p.global_step, read)
            every = cfg.train.checkpoint_every_steps
            if every and p.global_step % every == 0 and p.step_in_epoch < len(loader):
                self.save_checkpoint()
            self._maybe_stop()
        self.guard.flush()
        elapsed = time.perf_counter() - t0
        self.epoch_rate = (self.seen - seen_before) * self.env.world_size / elapsed
        # Host wall time: on CUDA the device's backlog lands in whichever call blocks (a loss read, the flush),
        # so step_s is the epoch's training loop less its input wait, not a sum of synchronised steps.
        self.epoch_times = {"input_wait_s": batches.waited, "step_s": elapsed - batches.waited}

    def train_step(self, batch) -> torch.Tensor:
        """One optimizer step; returns (summed loss, correct predictions) of this rank's share, on the device."""
        step, accum = self.progress.global_step, self.cfg.train.accum_steps
        self.schedule.apply(self.optimizer, step)
        stats: torch.Tensor | None = None
        if accum > 1:
            stats = self._accumulated_step(batch, step)
        else:
            x = self._augmented(batch.images, step, self.env.rank)
            if self.fast["cuda_graphs"].on:
                stats = self._replay(x, batch, step)
            if stats is None:
                stats = self.compute_step(x, batch.labels, batch.global_size)
        self.guard.push(step, stats[0])
        return stats

    def compute_step(self, x: torch.Tensor, labels: torch.Tensor, global_size: int) -> torch.Tensor:
        """zero_grad, forward, backward, update on one augmented batch: the arithmetic a CUDA graph captures."""
        self.optimizer.zero_grad(set_to_none=True)
        stats = self._forward_backward(x, labels, global_size)
        self._update()
        return stats

    def _augmented(self, images: torch.Tensor, step: int, rank: int) -> torch.Tensor:
        """Seed this (step, rank)'s streams, dropout and augmentation, and augment."""
        seed = self.cfg.train.seed
        torch.manual_seed(derived_seed(seed, rank=rank, step=step, stream=0))               # dropout
        self.aug_generator.manual_seed(derived_seed(seed, rank=rank, step=step, stream=1))  # augmentation
        x = self.data.train_pipeline(images, self.aug_generator)
        return x.contiguous(memory_format=self.precision.memory_format)

    def _forward_backward(self, x: torch.Tensor, labels: torch.Tensor, global_size: int) -> torch.Tensor:
        with self.precision.autocast(self.device):
            logits = self.net(x)
        loss_sum = F.cross_entropy(logits.float(), labels, reduction="sum",
                                   label_smoothing=self.cfg.optim.label_smoothing)
        # DDP averages gradients over ranks: scale so that the average is d(global mean loss). The backward's
        # products in the precision's math too (fp32: TF32 off), whoever drives the Trainer.
        with self.precision.math():
            self.scaler.scale(loss_sum * (self.env.world_size / global_size)).backward()
        correct = (logits.detach().argmax(1) == labels).sum()
        return torch.stack([loss_sum.detach().double(), correct.double()])

    def _update(self) -> None:
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _accumulated_step(self, batch, step: int) -> torch.Tensor:
        """accum_steps micro-batches, gradients summed: micro-batch k of rank r is the share rank r + k * world
        of world * accum_steps ranks would take (`Order`'s strided split), with that rank's random numbers."""
        accum, world = self.cfg.train.accum_steps, self.env.world_size
        self.optimizer.zero_grad(set_to_none=True)
        stats = torch.zeros(2, dtype=torch.float64, device=self.device)
        for k in range(accum):
            x = self._augmented(batch.images[k::accum], step, self.env.rank + k * world)
            last = k == accum - 1  # DDP all-reduces with the last backward only
            with contextlib.nullcontext() if self.ddp is None or last else self.ddp.no_sync():
                stats += self._forward_backward(x, batch.labels[k::accum], batch.global_size)
        self._update()
        return stats

    def _replay(self, x: torch.Tensor, batch, step: int) -> torch.Tensor | None:
        """The step through its CUDA graph, captured at the first full batch; None for a partial batch."""
        if batch.global_size != self.cfg.train.batch_size:
            return None
        if self.captured is None or not self.captured.matches(x, batch.labels):
            try:
                self.captured = CapturedStep(functools.partial(self.compute_step, global_size=batch.global_size),
                                             self.optimizer, x, batch.labels, buffers=list(self.model.buffers()))
            except RuntimeError as error:  # the step stays eager, and the banner's record says why
                if self.cfg.train.cuda_graphs is True:
                    raise AlexNetError(f"train.cuda_graphs: capturing the step failed: {one_line(error)}") from None
                self.fast["cuda_graphs"] = fast.Choice(False, f"capture failed: {one_line(error)[:200]}")
                self.run_info["fast_paths"]["cuda_graphs"] = self.fast["cuda_graphs"].describe("cuda_graphs")
                warnings.warn(f"CUDA graph capture failed, training eagerly: {one_line(error)[:300]}", stacklevel=2)
                torch.manual_seed(derived_seed(self.cfg.train.seed, rank=self.env.rank, step=step, stream=0))
                return None
            # the capture's warm-up steps drew dropout numbers: this step's stream starts again
            torch.manual_seed(derived_seed(self.cfg.train.seed, rank=self.env.rank, step=step, stream=0))
        return self.captured.replay(x, batch.labels, self.schedule.lr(step))

    @torch.no_grad()
    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a uint8 batch as evaluation computes them: eval pipeline, memory format, autocast."""
        x = self.data.eval_pipeline(images).contiguous(memory_format=self.precision.memory_format)
        with self.precision.autocast(self.device):
            return self.eval_net(x)

    def _maybe_stop(self) -> None:
        p = self.progress
        if self.env.distributed and p.global_step % STOP_CHECK_EVERY:
            return
        if distributed.any_rank(self.stop.signum is not None, self.device):
            self.save_checkpoint()
            stop = Interrupted(self.stop.signum or 15, p.global_step)
            if self.env.is_main:  # report.md says so, not "in progress"
                self.writer.submit(functools.partial(write_run_report, self.out, self.cfg, list(p.history),
                                                     self.data.classes, {**self.run_info, "interrupted": str(stop)}))
            raise stop

    def _epoch_totals(self) -> dict:
        """Loss sum, correct and seen of the epoch so far over all ranks (what a mid-epoch checkpoint carries)."""
        if self.progress.step_in_epoch == 0:
            return {"loss": 0.0, "correct": 0.0, "seen": 0.0}
        seen = torch.tensor([float(self.seen)], dtype=torch.float64, device=self.device)
        loss, correct, seen = distributed.all_sum(torch.cat([self.sums, seen])).tolist()
        return {"loss": loss, "correct": correct, "seen": seen}

    def evaluate(self, loader) -> EvalResult:
        return evaluate(self.eval_net, loader, self.data.eval_pipeline, num_classes=len(self.data.classes),
                        precision=self.precision)

    def end_epoch(self, epoch: int) -> None:
        p = self.progress
        totals = self._epoch_totals()
        val = None if self.data.val is None else self.evaluate(self.data.val)
        test = self.evaluate(self.data.test)
        record = {"epoch": epoch + 1, "train_loss": totals["loss"] / max(totals["seen"], 1),
                  "train_acc": totals["correct"] / max(totals["seen"], 1),
                  "val_acc": None if val is None else val.top1, "val_loss": None if val is None else val.loss,
                  "val_count": 0 if val is None else val.count,
                  "test_acc": test.top1, "test_top5": test.top5, "test_loss": test.loss, "test_count": test.count,
                  "top_k": 5 if len(self.data.classes) > 5 else None,  # top-k of k classes says nothing
                  "lr": self.schedule.lr(max(p.global_step - 1, 0)),
                  "images_per_sec": self.epoch_rate, "wall_s": self.wall(), "step": p.global_step,
                  **self.epoch_times, **self.record_base}
        if (decoded_on := getattr(self.data.train, "decoded_on", None)) is not None:
            record["decoded_on"] = decoded_on  # prepared shards: images per decode backend, this process so far
        p.history.append(record)
        if self.env.is_main:
            warn_at_chance(p.history, len(self.data.classes))
        chosen = test.top1 if val is None else val.top1  # the validation split chooses; the test split reports
        self.schedule.end_epoch(chosen)
        p.epoch, p.step_in_epoch = epoch + 1, 0
        improved = chosen > p.best_acc
        p.best_acc = max(p.best_acc, chosen)
        self.check_weights()
        # Written in this order, in the background (alexnet.run.writer), from copies taken now; checkpoint.pt last:
        # it is the commit point. A kill before it re-runs this epoch on resume (bit-exactly, so best.pt and
        # metrics.jsonl come out the same); a kill after it finds them already written.
        if (state := self._snapshot()) is not None:  # the weights were checked above
            history = list(p.history)
            if improved:
                self.writer.submit(functools.partial(atomic_save, best_state(state, record), self.out / BEST))
            self.writer.submit(functools.partial(write_metrics, self.out / METRICS, history))
            self.writer.submit(functools.partial(write_run_report, self.out, self.cfg, history, self.data.classes,
                                                 copy.deepcopy(self.run_info)))
            self.writer.submit(functools.partial(atomic_save, state, self.out / CHECKPOINT))
        self.monitor.end_epoch(record, p.history)
