"""SGD and learning-rate schedules.

The paper (section 5): SGD, momentum 0.9, weight decay 5e-4, batch 128, lr 0.01 divided by 10 "when the validation
error rate stopped improving", three times over ~90 epochs. d2l 7.1: plain SGD, lr 0.01, batch 128.
Modern recipes (d2l-fast, quick): Nesterov momentum, linear warm-up, then cosine or one-cycle decay.

`LRSchedule` sets the rate of every step from (step, plateau drops) alone, so its state is two integers and a
float, and a resumed run gets exactly the rates of an uninterrupted one.
"""

import math

import torch

from alexnet.config import OptimConfig


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.SGD:
    # One multi-tensor kernel per step on the GPU (fused), or the foreach path elsewhere: far fewer launches than
    # a Python loop over the 16 parameter tensors.
    fused = device.type == "cuda"
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, fused=fused or None, foreach=None if fused else True)


class LRSchedule:
    def __init__(self, cfg: OptimConfig, steps_per_epoch: int, epochs: int):
        self.cfg = cfg
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total = self.steps_per_epoch * epochs
        self.warmup = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.drops = 0            # plateau: times the rate was divided by 10
        self.best = -math.inf     # plateau: best test accuracy so far
        self.bad_epochs = 0       # plateau: epochs since the best

    def lr(self, step: int) -> float:
        """Learning rate for optimizer step `step` (0-based, counted over the whole run)."""
        c = self.cfg
        if step < self.warmup:
            return c.lr * (step + 1) / self.warmup
        if c.schedule in ("cosine", "onecycle"):
            span = max(1, self.total - self.warmup)
            t = min(1.0, (step - self.warmup) / span)
            if c.schedule == "cosine":
                shape = 0.5 * (1 + math.cos(math.pi * t))
            else:  # one-cycle's annealing half: linear to the floor (Smith & Topin 2017, as airbench uses)
                shape = 1 - t
            return c.lr * (c.final_lr_fraction + (1 - c.final_lr_fraction) * shape)
        if c.schedule == "step":
            return c.lr * 0.1 ** (step // (c.step_epochs * self.steps_per_epoch))
        if c.schedule == "plateau":
            return c.lr * 0.1 ** self.drops
        return c.lr

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        for group in optimizer.param_groups:
            group["lr"] = self.lr(step)

    def end_epoch(self, accuracy: float) -> None:
        """Plateau bookkeeping (the paper's manual schedule, automated): divide by 10 after `plateau_patience`
        epochs without a gain in validation accuracy, at most `plateau_max_drops` times."""
        if self.cfg.schedule != "plateau":
            return
        if accuracy > self.best + 1e-4:
            self.best, self.bad_epochs = accuracy, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.cfg.plateau_patience and self.drops < self.cfg.plateau_max_drops:
            self.drops, self.bad_epochs = self.drops + 1, 0

    def state_dict(self) -> dict:
        return {"drops": self.drops, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.drops, self.best, self.bad_epochs = int(state["drops"]), float(state["best"]), int(state["bad_epochs"])
