"""Checkpoints that survive a crash at any instant and resume bit-exactly.

Written atomically (`alexnet.base.files`): a kill at any point leaves either the old or the new file, never half of
one. Loaded with `torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts only, so a
crafted checkpoint cannot run code. The RNG states of Python, NumPy and torch (CPU, and the current CUDA device: a
resumed run may see a different number of GPUs) travel along.
"""

import io
import json
import pickle
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alexnet.base.errors import AlexNetError, one_line
from alexnet.base.files import atomic_path, atomic_write
from alexnet.config import Config

# A resumed run may differ from the run that wrote the checkpoint in these keys only. optim.lr is one: the paper
# divided the learning rate by hand, which is `--resume --lr X` here.
RESUMABLE_CHANGES = {"optim.lr", "train.epochs", "train.device", "train.threads", "train.checkpoint_every_steps",
                     "train.log_every_steps", "train.estimate_steps", "train.tensorboard", "train.init_from",
                     "data.data_dir", "data.workers", "data.download"}


def atomic_save(obj, path: Path) -> None:
    """torch.save, atomically. Serialised in memory first: torch's own file writer reports a full disk as an
    opaque "unexpected pos" error, a plain write as ENOSPC, which `atomic_path` turns into one line."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buffer.getbuffer())


# What torch.load raises on a damaged archive, found by flipping, zeroing and inserting bytes of a checkpoint:
# RuntimeError (its zip reader: "invalid header or archive is corrupted"), and from the unpickler reading a corrupt
# stream UnicodeDecodeError / ValueError, KeyError, IndexError ("pop from empty list"), EOFError and TypeError
# ("unhashable type"). Anything else (MemoryError, an interrupt, a bug) is not about the file and propagates.
DAMAGED = (RuntimeError, ValueError, KeyError, IndexError, EOFError, TypeError, zipfile.BadZipFile)
# How torch's weights-only unpickler words a refusal (torch/_weights_only_unpickler.py): a global that is not
# allowed, an object or a call it will not make. Its other UnpicklingErrors ("Unsupported operand") are damage.
FORBIDDEN = r"GLOBAL|allowlisted|call reduce|must be imported"


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint's contents: tensors, numbers, strings, lists and dicts only (`weights_only`). Anything else
    is refused with one line saying what the file is, never with torch's advice to turn the check off."""
    path = Path(path)
    if not path.is_file():
        raise AlexNetError(f"no checkpoint at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with open(path, "rb") as f:
            complete = _is_zip(f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True) if complete else None
    except OSError as error:  # unreadable (permissions, an I/O error): the file may be fine
        raise AlexNetError(f"cannot read {path}: {error.strerror or one_line(error)}") from None
    except pickle.UnpicklingError as error:
        if not re.search(FORBIDDEN, str(error)):  # "Unsupported operand 80": a corrupt stream, not an object
            raise AlexNetError(f"{path} is a damaged checkpoint ({_torch_reason(error)})") from None
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        raise AlexNetError(f"{path} is refused: it holds Python objects{what} beyond tensors and plain data, and "
                           f"checkpoints are loaded without running code") from None
    except DAMAGED as error:
        raise AlexNetError(f"{path} is a damaged checkpoint ({_torch_reason(error)})") from None
    if not complete:
        raise AlexNetError(f"{path} is not an alexnet checkpoint: not a complete PyTorch zip archive "
                           f"(truncated, or another kind of file)")
    if not isinstance(state, dict):
        raise AlexNetError(f"{path} is not an alexnet checkpoint (it holds a {type(state).__name__})")
    return state


def _is_zip(f) -> bool:
    # zipfile.is_zipfile raises BadZipFile (not False) for some damaged end records ("span multiple disks")
    try:
        return zipfile.is_zipfile(f)
    except zipfile.BadZipFile:
        return False


def _torch_reason(error: BaseException) -> str:
    """torch's message without its advice paragraphs (weights_only, miniz): the first sentence that says what."""
    text = one_line(error)
    text = re.sub(r"^.*WeightsUnpickler error: ", "", text)
    return re.sub(r"\.? (Check the documentation|This is an internal miniz error).*", "", text)[:200]


def rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()  # ("MT19937", keys, pos, has_gauss, cached_gaussian)
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


def best_state(state: dict, record: dict) -> dict:
    """What eval / predict / export need: weights, config, classes, normalisation statistics."""
    keep = ("format", "model", "config", "classes", "stats")
    return {**{k: state[k] for k in keep}, "metrics": record}


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


def write_metrics(path: Path, history: list[dict]) -> None:
    """Rewritten whole (atomically) from the checkpoint's history, so it always agrees with the checkpoint."""
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in history))


def read_metrics(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
