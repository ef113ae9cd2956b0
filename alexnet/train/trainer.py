"""`alexnet train`: config -> data, model, optimizer on the device -> epochs of (train, evaluate, checkpoint).

Reproducibility: every step re-seeds torch's generators (dropout) and the augmentation generator from
(seed, rank, step), and the data order of an epoch is a function of (seed, epoch). A run resumed from any
checkpoint, or restarted by torchrun, therefore continues with exactly the random numbers an uninterrupted run
would have drawn; on the CPU the final weights are bit-identical.

Distributed (torchrun): `train.batch_size` is the *global* batch. Each rank takes its share of every global batch
and scales its summed loss by world_size / global batch, so DDP's gradient average equals the gradient of the
global mean loss: the same update as one process with the same batch, whatever the number of ranks.
"""

import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from alexnet.atomic import atomic_write
from alexnet.config import Config, build_model, save_config, validate
from alexnet.data.pipeline import Stats
from alexnet.errors import AlexNetError
from alexnet.eval.evaluate import evaluate
from alexnet.train import distributed
from alexnet.train.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from alexnet.train.data import RunData, prepare_data
from alexnet.train.distributed import DistEnv
from alexnet.train.guards import DivergenceGuard, Interrupted, SignalFlag, fault_injection
from alexnet.train.optim import LRSchedule, build_optimizer

CHECKPOINT, BEST, METRICS, CONFIG = "checkpoint.pt", "best.pt", "metrics.jsonl", "config.yaml"
RANKS = "ranks.json"  # distributed runs: every rank's final parameter sums, which must agree
STOP_CHECK_EVERY = 10  # distributed: agree on a stop request every N steps (an all-reduce, so not every step)
# A resumed run may differ from the run that wrote the checkpoint in these keys only. optim.lr is one: the paper
# divided the learning rate by hand, which is `--resume --lr X` here.
RESUMABLE_CHANGES = {"optim.lr", "train.epochs", "train.device", "train.threads", "train.checkpoint_every_steps",
                     "data.data_dir", "data.workers", "data.download"}


@dataclass
class Progress:
    epoch: int = 0             # epoch in progress (0-based)
    step_in_epoch: int = 0     # optimizer steps of that epoch already taken
    global_step: int = 0
    best_acc: float = -1.0
    wall_s: float = 0.0        # training + evaluation seconds of earlier processes of this run
    partial: dict = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "seen": 0.0})
    history: list = field(default_factory=list)  # one metrics record per finished epoch


def _cpu_has_bf16() -> bool:
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe and probe()) or (amx and amx()))


def step_seed(seed: int, rank: int, step: int, stream: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729 + stream) % (2**63)


class Trainer:
    def __init__(self, cfg: Config, out: Path, env: DistEnv, device: torch.device, *, quiet: bool = False,
                 stats: Stats | None = None):
        self.cfg, self.out, self.env, self.device = cfg, Path(out), env, device
        self.quiet = quiet or not env.is_main
        t = cfg.train
        if t.threads:
            torch.set_num_threads(t.threads)
        torch.backends.cudnn.benchmark = not t.deterministic  # fixed shapes: let cuDNN pick the fastest kernels
        if device.type == "cuda":  # cuDNN already runs fp32 convolutions in TF32; let the FC matmuls do the same
            torch.set_float32_matmul_precision("high")
        if t.precision == "bf16" and device.type == "cpu" and not _cpu_has_bf16():
            warnings.warn("bf16 on a CPU without native bf16 (AVX512-BF16 / AMX) is much slower than fp32; "
                          "consider --set train.precision=fp32", stacklevel=2)
        torch.use_deterministic_algorithms(t.deterministic, warn_only=True)
        torch.manual_seed(t.seed)
        self.data: RunData = prepare_data(cfg, env, device, stats)  # a resumed run keeps its statistics
        self.model = build_model(cfg, num_classes=len(self.data.classes)).to(device)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        net = self.model
        if env.distributed:
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None)
        self.net = torch.compile(net) if t.compile else net
        self.eval_net = torch.compile(self.model) if t.compile else self.model
        self.optimizer = build_optimizer(self.model, cfg.optim, device)
        self.schedule = LRSchedule(cfg.optim, len(self.data.train), t.epochs)
        self.scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
        self.autocast_dtype = torch.float16 if t.precision == "fp16" else torch.bfloat16
        self.aug_generator = torch.Generator(device=device)
        self.progress = Progress()
        self.guard = DivergenceGuard(self.schedule.lr)
        self.fire_fault = fault_injection(env.rank, env.restart_count)
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
        self.check_weights()
        self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        self.progress.partial = self._epoch_totals()
        if self.env.is_main:
            atomic_save(self.state_dict(), self.out / CHECKPOINT)

    # ----------------------------------------------------------------------------------------------- loop
    def fit(self) -> list[dict]:
        with SignalFlag() as stop:
            self.stop = stop
            for epoch in range(self.progress.epoch, self.cfg.train.epochs):
                self.train_epoch(epoch)
                self.end_epoch(epoch)
        self.check_ranks_agree()
        return self.progress.history

    def check_ranks_agree(self) -> None:
        """DDP keeps replicas equal by construction; check it (per-tensor sums, float64) and record it."""
        if not self.env.distributed:
            return
        sums = torch.stack([p.detach().double().sum() for p in self.model.parameters()])
        gathered = [g.tolist() for g in distributed.all_gather(sums)]
        if self.env.is_main:
            (self.out / RANKS).write_text(json.dumps({"world_size": self.env.world_size,
                                                      "parameter_sums": gathered}))
        if any(g != gathered[0] for g in gathered):
            raise AlexNetError("the ranks ended with different weights; this is a bug, please report it")

    def train_epoch(self, epoch: int) -> None:
        cfg, p, loader = self.cfg, self.progress, self.data.train
        self.net.train()
        # (loss sum, correct) of the epoch stay on the device: reading them is a host sync, done only for the
        # progress bar. Rank 0 carries the sums a mid-epoch checkpoint restored; the reduction adds them once.
        restored = [p.partial["loss"], p.partial["correct"]] if self.env.is_main else [0.0, 0.0]
        self.sums = torch.tensor(restored, dtype=torch.float64, device=self.device)
        self.seen = int(p.partial["seen"]) if self.env.is_main else 0  # this rank's images, host-side
        seen_before, t0 = self.seen, time.perf_counter()
        bar = tqdm(total=len(loader), initial=p.step_in_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=self.quiet or not sys.stderr.isatty(), unit="step", leave=False, dynamic_ncols=True)
        for batch in loader.batches(epoch, p.step_in_epoch):
            self.sums += self.train_step(batch)
            self.seen += len(batch.labels)
            p.global_step += 1
            p.step_in_epoch += 1
            self.fire_fault(p.global_step, self.model)
            if not bar.disable and (p.step_in_epoch % 10 == 0 or p.step_in_epoch == len(loader)):
                loss, correct = (self.sums / max(self.seen, 1)).tolist()
                rate = (self.seen - seen_before) * self.env.world_size / (time.perf_counter() - t0)
                bar.update(p.step_in_epoch - bar.n)
                bar.set_postfix(loss=f"{loss:.3f}", acc=f"{correct:.3f}", img_s=f"{rate:.0f}")
            every = cfg.train.checkpoint_every_steps
            if every and p.global_step % every == 0 and p.step_in_epoch < len(loader):
                self.save_checkpoint()
            self._maybe_stop()
        bar.close()
        self.guard.flush()
        self.epoch_rate = (self.seen - seen_before) * self.env.world_size / (time.perf_counter() - t0)

    def train_step(self, batch) -> torch.Tensor:
        """One optimizer step; returns (summed loss, correct predictions) of this rank's share, on the device."""
        cfg, step = self.cfg, self.progress.global_step
        torch.manual_seed(step_seed(cfg.train.seed, self.env.rank, step, 0))          # dropout
        self.aug_generator.manual_seed(step_seed(cfg.train.seed, self.env.rank, step, 1))  # augmentation
        self.schedule.apply(self.optimizer, step)
        x = self.data.train_pipeline(batch.images, self.aug_generator).contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=cfg.train.precision != "fp32"):
            logits = self.net(x)
        loss_sum = F.cross_entropy(logits.float(), batch.labels, reduction="sum",
                                   label_smoothing=cfg.optim.label_smoothing)
        # DDP averages gradients over ranks: scale so that the average is d(global mean loss).
        loss = loss_sum * (self.env.world_size / batch.global_size)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.guard.push(step, loss_sum)
        correct = (logits.detach().argmax(1) == batch.labels).sum()
        return torch.stack([loss_sum.detach().double(), correct.double()])

    def _maybe_stop(self) -> None:
        p = self.progress
        if self.env.distributed and p.global_step % STOP_CHECK_EVERY:
            return
        if distributed.any_rank(self.stop.signum is not None, self.device):
            self.save_checkpoint()
            raise Interrupted(self.stop.signum or 15, p.global_step)

    def _epoch_totals(self) -> dict:
        """Loss sum, correct and seen of the epoch so far over all ranks (what a mid-epoch checkpoint carries)."""
        if self.progress.step_in_epoch == 0:
            return {"loss": 0.0, "correct": 0.0, "seen": 0.0}
        seen = torch.tensor([float(self.seen)], dtype=torch.float64, device=self.device)
        loss, correct, seen = distributed.all_sum(torch.cat([self.sums, seen])).tolist()
        return {"loss": loss, "correct": correct, "seen": seen}

    def end_epoch(self, epoch: int) -> None:
        cfg, p = self.cfg, self.progress
        totals = self._epoch_totals()
        result = evaluate(self.eval_net, self.data.test, self.data.eval_pipeline,
                          num_classes=len(self.data.classes), precision=cfg.train.precision,
                          channels_last=cfg.train.channels_last)
        lr = self.schedule.lr(max(p.global_step - 1, 0))
        record = {"epoch": epoch + 1, "train_loss": totals["loss"] / max(totals["seen"], 1),
                  "train_acc": totals["correct"] / max(totals["seen"], 1), "test_acc": result.top1,
                  "test_top5": result.top5, "test_loss": result.loss, "test_count": result.count, "lr": lr,
                  "images_per_sec": self.epoch_rate,
                  "wall_s": self.wall(), "step": p.global_step}
        p.history.append(record)
        self.schedule.end_epoch(result.top1)
        p.epoch, p.step_in_epoch = epoch + 1, 0
        improved = result.top1 > p.best_acc
        p.best_acc = max(p.best_acc, result.top1)
        self.check_weights()
        # checkpoint.pt last: it is the commit point. A kill before it re-runs this epoch on resume (bit-exactly,
        # so best.pt and metrics.jsonl come out the same); a kill after it finds them already written.
        if self.env.is_main:
            if improved:
                atomic_save(best_state(self.state_dict(), record), self.out / BEST)
            write_metrics(self.out / METRICS, p.history)
        self._write_checkpoint()  # the weights were checked above
        if self.env.is_main and not self.quiet:
            print(format_record(record, cfg.train.epochs), flush=True)


def best_state(state: dict, record: dict) -> dict:
    """What eval / predict / export need: weights, config, classes, normalisation statistics."""
    keep = ("format", "model", "config", "classes", "stats")
    return {**{k: state[k] for k in keep}, "metrics": record}


def write_metrics(path: Path, history: list[dict]) -> None:
    """Rewritten whole (atomically) from the checkpoint's history, so it always agrees with the checkpoint."""
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in history))


def format_record(r: dict, epochs: int) -> str:
    return (f"epoch {r['epoch']:>{len(str(epochs))}}/{epochs}  loss {r['train_loss']:.3f}  "
            f"train acc {r['train_acc']:.3f}  test acc {r['test_acc']:.3f}  top-5 {r['test_top5']:.3f}  "
            f"lr {r['lr']:.3g}  {r['images_per_sec']:.0f} img/s  {r['wall_s']:.1f} s")


def train(cfg: Config, out: Path, *, resume: bool = False, quiet: bool = False) -> list[dict]:
    """Train `cfg` into the run folder `out`; with `resume`, continue from `out/checkpoint.pt` if there is one."""
    validate(cfg)
    out, env = Path(out), DistEnv.from_environ()
    device = distributed.pick_device(cfg.train.device, env)
    state = None
    if resume and (out / CHECKPOINT).exists():
        state = load_checkpoint(out / CHECKPOINT)
        check_resumable(state["config"], cfg)
    elif not resume and ((out / CHECKPOINT).exists() or (out / METRICS).exists()):
        raise AlexNetError(f"{out} already holds a run; continue it with --resume or choose another --out")
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / CONFIG)
    distributed.init(env, device)
    try:
        stats = Stats.from_dict(state["stats"]) if state is not None else None
        trainer = Trainer(cfg, out, env, device, quiet=quiet, stats=stats)
        if state is not None:
            trainer.load_state_dict(state)
            p = trainer.progress
            if env.is_main:
                write_metrics(out / METRICS, p.history)  # drops a record of an epoch that the kill undid
                print(f"resuming {out} at epoch {p.epoch + 1}, step {p.global_step}", flush=True)
        history = trainer.fit()
        if env.is_main:
            from alexnet.report.run_report import write_run_report
            write_run_report(out, cfg, history, trainer.data.classes)
        return history
    finally:
        distributed.shutdown()


def check_resumable(saved: dict, cfg: Config) -> None:
    """A checkpoint continues only the run that wrote it: same config but for RESUMABLE_CHANGES."""
    now = cfg.to_dict()
    for section in ("model", "data", "optim", "train"):
        keys = set(saved.get(section, {})) | set(now.get(section, {}))
        for key in sorted(keys):
            old, new = saved.get(section, {}).get(key), now.get(section, {}).get(key)
            if f"{section}.{key}" not in RESUMABLE_CHANGES and old != new:
                raise AlexNetError(f"cannot resume: {section}.{key} is {new!r} but the run was started with "
                                   f"{old!r}; use the run's own config or another --out")
