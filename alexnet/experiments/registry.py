"""The studies by name, as `alexnet experiment NAME` runs them."""

from pathlib import Path
from types import ModuleType

from alexnet.base.errors import AlexNetError
from alexnet.experiments import ablations, batch_size, complexity, lenet, relu_vs_tanh, simplify
from alexnet.experiments.common import BUDGETS

STUDIES: dict[str, ModuleType] = {
    "relu-vs-tanh": relu_vs_tanh,   # paper Fig. 1: ReLU reaches 25% training error 6x faster than tanh
    "ablations": ablations,         # paper sections 3-4: dropout, LRN, overlapping pooling, augmentation, depth
    "batch-size": batch_size,       # d2l 7.1 exercise 3: accuracy, images/s and memory against batch size
    "complexity": complexity,       # d2l 7.1 exercise 4: where parameters, FLOPs and activations go
    "simplify": simplify,           # d2l 7.1 exercise 2: slimmer / shallower nets, a native 28x28 net
    "lenet": lenet,                 # d2l 7.1 exercise 5: ReLU, dropout and augmentation applied to LeNet-5
}


def list_studies() -> list[str]:
    return list(STUDIES)


def get_study(name: str) -> ModuleType:
    if name not in STUDIES:
        raise AlexNetError(f"unknown study {name!r}; choose from {', '.join(STUDIES)}")
    return STUDIES[name]


def run_study(name: str, out: Path, budget: str = "small", device: str = "auto",
              data_dir: str | None = None) -> dict:
    if budget not in BUDGETS:
        raise AlexNetError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
    return get_study(name).run(Path(out), budget=budget, device=device, data_dir=data_dir)
