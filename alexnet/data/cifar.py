"""CIFAR-10 reader for the "python version" batches (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html):
pickled dicts with `data` (uint8 (N, 3072): R plane, G plane, B plane, each 32x32 row-major) and `labels`, plus
`batches.meta` with `label_names`. Pickles can run arbitrary code, so they go through an unpickler that resolves
only the three globals NumPy needs to rebuild an array."""

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from alexnet.base.errors import AlexNetError, one_line

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_DIR = "cifar-10-batches-py"  # the archive's one top-level folder
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR_META = "batches.meta"
NUM_CLASSES = 10
ROW_BYTES = 3 * 32 * 32  # one image: three 32x32 uint8 planes

try:  # NumPy 2 moved `numpy.core` to `numpy._core`; the 2009 pickles still name `numpy.core.multiarray`
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]  # the same function, older home

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only NumPy's array-rebuilding globals; dicts, lists, bytes, str and ints need none. Anything else
    (`os.system`, `builtins.eval`, ...) is refused before it is looked up, so it can never be called."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def load_pickle(data: bytes, source: str):
    """Unpickle CIFAR bytes; `source` names the file (or archive member) in errors."""
    try:
        # encoding="bytes" as in CIFAR's own loader: the batches were written by Python 2, whose str -> bytes.
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # a corrupt pickle can raise almost anything (ValueError, EOFError, TypeError ...)
        raise AlexNetError(f"{source}: not a valid CIFAR-10 pickle ({one_line(e)})") from e


def _get(batch, key: str, source: str):
    """Batches from Python 2 have bytes keys, re-pickled ones str keys: accept both."""
    if isinstance(batch, dict):
        for k in (key.encode(), key):
            if k in batch:
                return batch[k]
    raise AlexNetError(f"{source}: not a CIFAR-10 batch (no {key!r} entry)")


def parse_batch(batch, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 3, 32, 32), labels int64 (N,)) from one unpickled batch dict, validated."""
    data, labels = _get(batch, "data", source), _get(batch, "labels", source)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_BYTES:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise AlexNetError(f"{source}: 'data' must be uint8 (N, {ROW_BYTES}), got {found}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:
        raise AlexNetError(f"{source}: 'labels' is not a list of integers") from e
    if len(labels) != len(data):
        raise AlexNetError(f"{source}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise AlexNetError(f"{source}: labels must be in 0..{NUM_CLASSES - 1}, found {labels.min()}..{labels.max()}")
    # Row layout R(1024) G(1024) B(1024), each 32x32 row-major, is exactly C-order (3, 32, 32).
    return data.reshape(-1, 3, 32, 32), labels


def parse_meta(meta, source: str) -> list[str]:
    names = _get(meta, "label_names", source)
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise AlexNetError(f"{source}: 'label_names' must list {NUM_CLASSES} names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def has_cifar_dir(directory: Path, split: str) -> bool:
    return all((directory / f).is_file() for f in CIFAR_BATCHES[split] + [CIFAR_META])


def read_cifar_dir(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, labels, classes) of `split` from a folder holding the batch files."""
    blobs = {}
    for name in CIFAR_BATCHES[split] + [CIFAR_META]:
        try:
            blobs[name] = (directory / name).read_bytes()
        except OSError as e:
            raise AlexNetError(f"{directory / name}: cannot read ({e.strerror or e})") from e
    return _assemble(blobs, split, str(directory))


def read_cifar_tar(archive: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read the batches straight out of `cifar-10-python.tar.gz` without extracting anything, so member names
    cannot write outside a folder (no path traversal) and nothing is left half-extracted."""
    wanted = {f"{CIFAR_DIR}/{name}": name for name in CIFAR_BATCHES[split] + [CIFAR_META]}
    blobs = {}
    try:
        # Iterating in archive order is one pass over the gzip stream; `getmember` would seek back and re-inflate.
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                data = tar.extractfile(member) if name is not None and member.isfile() else None
                if name is not None and data is not None:
                    blobs[name] = data.read()
    except (OSError, EOFError, tarfile.TarError) as e:
        raise AlexNetError(f"{archive}: cannot read archive ({one_line(e)})") from e
    missing = sorted(set(wanted.values()) - set(blobs))
    if missing:
        raise AlexNetError(f"{archive}: archive lacks {', '.join(f'{CIFAR_DIR}/{m}' for m in missing)}")
    return _assemble(blobs, split, f"{archive}:{CIFAR_DIR}")


def _assemble(blobs: dict[str, bytes], split: str, where: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    classes = parse_meta(load_pickle(blobs[CIFAR_META], f"{where}/{CIFAR_META}"), f"{where}/{CIFAR_META}")
    images, labels = [], []
    for name in CIFAR_BATCHES[split]:
        source = f"{where}/{name}"
        x, y = parse_batch(load_pickle(blobs[name], source), source)
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels), classes
