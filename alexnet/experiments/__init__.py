"""The paper's claims and d2l 7.1's exercises as runnable, measured studies.

Each study is a module with `run(out, budget, device, data_dir) -> dict`: a list of config deltas over a preset,
trained as ordinary run folders under `out/runs/`, summarised in `out/results.json`, `out/results.md` and
`out/plot.png`. Budgets: `small` finishes on two CPU cores in minutes, `full` is the real study for a GPU, `tiny`
is a seconds-long smoke test for the test suite on tiny subsets and nets (its numbers mean nothing). Modules are imported on use, so
listing the studies costs nothing.
"""

import importlib
from pathlib import Path
from types import ModuleType

from alexnet.errors import AlexNetError

BUDGETS = ("small", "full", "tiny")  # tiny: seconds, a smoke test whose numbers mean nothing

STUDIES = {
    "relu-vs-tanh": "relu_vs_tanh",   # paper Fig. 1: ReLU reaches 25% training error 6x faster than tanh
    "ablations": "ablations",         # paper sections 3-4: dropout, LRN, overlapping pooling, augmentation, depth
    "batch-size": "batch_size",       # d2l 7.1 exercise 3: accuracy, images/s and memory against batch size
    "complexity": "complexity",       # d2l 7.1 exercise 4: where parameters, FLOPs and activations go
    "simplify": "simplify",           # d2l 7.1 exercise 2: slimmer / shallower nets, a native 28x28 net
    "lenet": "lenet",                 # d2l 7.1 exercise 5: ReLU, dropout and augmentation applied to LeNet-5
}


def list_studies() -> list[str]:
    return list(STUDIES)


def get_study(name: str) -> ModuleType:
    if name not in STUDIES:
        raise AlexNetError(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
    return importlib.import_module(f"alexnet.experiments.{STUDIES[name]}")


def run_study(name: str, out: Path, budget: str = "small", device: str = "auto",
              data_dir: str | None = None) -> dict:
    if budget not in BUDGETS:
        raise AlexNetError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
    return get_study(name).run(Path(out), budget=budget, device=device, data_dir=data_dir)


__all__ = ["BUDGETS", "STUDIES", "get_study", "list_studies", "run_study"]
