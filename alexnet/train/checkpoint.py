"""Checkpoints that survive a crash at any instant and resume bit-exactly.

Written atomically (`alexnet.atomic`): a kill at any point leaves either the old or the new file, never half of
one. Loaded with `torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts only, so a
crafted checkpoint cannot run code. The RNG states of Python, NumPy and torch (CPU, and the current CUDA device: a
resumed run may see a different number of GPUs) travel along.
"""

import random
from pathlib import Path

import numpy as np
import torch

from alexnet.atomic import atomic_path
from alexnet.errors import AlexNetError


def atomic_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle, ...: all the same to the user
        raise AlexNetError(f"cannot load checkpoint {path}: {type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else 'corrupt file'}") from None


def rng_state() -> dict:
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])
