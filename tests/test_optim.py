"""SGD and the learning-rate schedules (alexnet.training.optim): the rate of every step, recorded by hand."""

import math

import pytest
import torch

from alexnet.config import OptimConfig
from alexnet.training.optim import LRSchedule, build_optimizer


def rates(schedule: LRSchedule, steps: int) -> list[float]:
    return [schedule.lr(step) for step in range(steps)]


def test_constant_with_linear_warmup():
    # warm-up over one epoch of 4 steps: (step + 1) / 4 of the peak, then the peak
    s = LRSchedule(OptimConfig(lr=0.1, schedule="constant", warmup_epochs=1), steps_per_epoch=4, epochs=2)
    assert rates(s, 8) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.1])


def test_cosine_to_a_floor():
    # 6 steps, no warm-up: lr = floor + (1 - floor) * (1 + cos(pi * step / 6)) / 2, floor 0.1 of the peak
    s = LRSchedule(OptimConfig(lr=1.0, schedule="cosine", final_lr_fraction=0.1), steps_per_epoch=2, epochs=3)
    shape = [1.0, 0.9330127, 0.75, 0.5, 0.25, 0.0669873]
    assert rates(s, 6) == pytest.approx([0.1 + 0.9 * v for v in shape], rel=1e-6)
    assert s.lr(10_000) == pytest.approx(0.1)  # past the end: the floor, not a negative rate


def test_onecycle_warmup_then_linear_annealing():
    # 2 warm-up steps of 10, then linear from the peak to 0 over the 8 others
    s = LRSchedule(OptimConfig(lr=0.2, schedule="onecycle", warmup_epochs=0.4), steps_per_epoch=5, epochs=2)
    assert s.warmup == 2
    assert rates(s, 10) == pytest.approx([0.1, 0.2, 0.2, 0.175, 0.15, 0.125, 0.1, 0.075, 0.05, 0.025])


def test_step_divides_by_ten_every_step_epochs():
    s = LRSchedule(OptimConfig(lr=0.01, schedule="step", step_epochs=2), steps_per_epoch=3, epochs=6)
    assert rates(s, 18) == pytest.approx([0.01] * 6 + [0.001] * 6 + [0.0001] * 6)


def test_plateau_is_the_papers_manual_schedule_with_its_maximum_drops():
    """Section 5: divide by 10 "when the validation error rate stopped improving", three times in all."""
    s = LRSchedule(OptimConfig(lr=0.01, schedule="plateau", plateau_patience=1, plateau_max_drops=2),
                   steps_per_epoch=10, epochs=20)
    seen = []
    # improves, improves, stalls (1 bad epoch: patience), stalls (2: drop), a gain below 1e-4 counts as none
    for accuracy in [0.50, 0.60, 0.60, 0.60, 0.60005, 0.59, 0.61, 0.60, 0.60, 0.60, 0.60]:
        s.end_epoch(accuracy)
        seen.append(s.lr(0))
    assert seen == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001, 0.0001, 0.0001, 0.0001, 0.0001])
    assert s.drops == 2  # plateau_max_drops: never a third
    restored = LRSchedule(s.cfg, steps_per_epoch=10, epochs=20)
    restored.load_state_dict(s.state_dict())
    assert (restored.drops, restored.best, restored.bad_epochs) == (s.drops, s.best, s.bad_epochs)


def test_other_schedules_ignore_end_epoch():
    s = LRSchedule(OptimConfig(lr=0.1, schedule="cosine"), steps_per_epoch=2, epochs=2)
    for accuracy in (0.1, 0.1, 0.1, 0.1):
        s.end_epoch(accuracy)
    assert s.drops == 0 and s.lr(0) == 0.1


def test_apply_sets_every_group():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    optimizer = build_optimizer(model, OptimConfig(lr=1.0, momentum=0.9, nesterov=True), torch.device("cpu"))
    optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
    LRSchedule(OptimConfig(lr=1.0, schedule="cosine"), steps_per_epoch=4, epochs=1).apply(optimizer, 2)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5 * (1 + math.cos(math.pi / 2))] * 2)
    assert optimizer.defaults["nesterov"] and optimizer.defaults["weight_decay"] == 5e-4
