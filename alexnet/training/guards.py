"""What keeps a run alive or stops it cleanly: SIGINT / SIGTERM handling, the NaN / inf guard, the check that
torchrun's ranks ended equal, and a fault-injection hook that the crash tests use to kill a run at an exact step."""

import contextlib
import json
import os
import signal
import warnings
from pathlib import Path

import torch

from alexnet.base.errors import AlexNetError
from alexnet.base.files import atomic_write
from alexnet.runtime import distributed
from alexnet.runtime.distributed import DistEnv


class Diverged(AlexNetError):
    """The loss went NaN or inf; the message names the step and suggests a lower learning rate."""


class Interrupted(Exception):
    """Raised after the checkpoint of an interrupted run is written; carries the signal number."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint written, "
                         "continue with --resume")
        self.signum = signum


class SignalFlag:
    """SIGINT / SIGTERM set a flag; the loop finishes its step, checkpoints and raises `Interrupted`."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            # not the main thread (e.g. called from a notebook worker): leave signals alone
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class DivergenceGuard:
    """Stops the run when the loss is NaN or inf. The check of step t is read after step t + 1 is queued, so
    the device never waits on the host (one step of lag; a checkpoint first calls `flush()`). Under torchrun the
    flag is summed over the ranks on the way, so every rank stops at the same step instead of the others waiting
    in a collective for the one that left."""

    def __init__(self, lr_of_step):
        self._pending: tuple[int, torch.Tensor, object] | None = None
        self._lr_of_step = lr_of_step

    def push(self, step: int, loss_sum: torch.Tensor) -> None:
        bad = (~torch.isfinite(loss_sum.detach())).float().reshape(1)
        previous, self._pending = self._pending, (step, bad, distributed.all_sum_async(bad))
        if previous is not None:
            self._check(*previous)

    def flush(self) -> None:
        if self._pending is not None:
            self._check(*self._pending)
            self._pending = None

    def _check(self, step: int, bad: torch.Tensor, reduction) -> None:
        if reduction is not None:
            reduction.wait()
        if bool(bad):
            self.diverged(step)

    def diverged(self, step: int) -> None:
        lr = self._lr_of_step(step)
        raise Diverged(f"loss is not finite at step {step + 1} (lr {lr:.3g}); the learning rate is "
                           f"probably too high, try --lr {lr / 10:.3g}; the last checkpoint is unchanged")


def fault_injection(rank: int, restart_count: int):
    """ALEXNET_FAULT="step=N,signal=KILL|TERM|INT|NAN[,rank=R]": after optimizer step N, this process sends
    itself the signal (NAN: sets its first weight to NaN, so only its next loss is NaN), on the first attempt
    only (not after torchrun's elastic restart). Used by the crash and divergence tests."""
    spec = os.environ.get("ALEXNET_FAULT")
    if not spec or restart_count > 0:
        return lambda step, model: None
    fields = dict(item.split("=", 1) for item in spec.split(","))
    at, kind = int(fields["step"]), fields.get("signal", "KILL")
    if int(fields.get("rank", rank)) != rank:
        return lambda step, model: None

    def maybe_fire(step: int, model: torch.nn.Module) -> None:
        if step != at:
            return
        if kind == "NAN":
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")
        else:
            os.kill(os.getpid(), getattr(signal, "SIG" + kind))
    return maybe_fire


def check_ranks_agree(model: torch.nn.Module, env: DistEnv, path: Path) -> None:
    """DDP keeps replicas equal by construction; check it (per-tensor sums, float64) and record it in `path`."""
    if not env.distributed:
        return
    sums = torch.stack([p.detach().double().sum() for p in model.parameters()])
    gathered = [g.tolist() for g in distributed.all_gather(sums)]
    if env.is_main:
        atomic_write(path, json.dumps({"world_size": env.world_size, "parameter_sums": gathered}))
    if any(g != gathered[0] for g in gathered):
        raise AlexNetError("the ranks ended with different weights; this is a bug, please report it")


CHANCE_MIN_STEPS = 50  # before this many steps a net at chance may simply not have started: no warning


def warn_at_chance(history: list[dict], classes: int) -> None:
    """A net that does not learn (a too high rate can kill a plain ReLU net without raising a non-finite loss: it
    then predicts one class) is said at the first such epoch of the run, not left to a 0.10 in the report. "First"
    is read from the history, so a resumed run does not say it again."""
    at_chance = [r["train_acc"] < 1.5 / classes and r.get("step", 0) >= CHANCE_MIN_STEPS for r in history]
    if classes > 1 and at_chance and at_chance[-1] and not any(at_chance[:-1]):
        record = history[-1]
        warnings.warn(f"epoch {record['epoch']}: training accuracy {record['train_acc']:.3f} is chance level "
                      f"(1/{classes}): the net is not learning; a lower optim.lr, or optim.grad_clip "
                      f"(the fast preset clips at 2), may help", stacklevel=2)
