"""CIFAR-10's pickled batches (alexnet.data.cifar): folders, archives, and pickles that are refused."""

import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error

from alexnet.base.errors import AlexNetError
from alexnet.data import cifar as cifar_mod
from alexnet.data.cifar import RestrictedUnpickler
from alexnet.data.datasets import load_dataset

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def py2_pickle(obj) -> bytes:
    """What Python 2 wrote for the 2009 batches: protocol 2, str as BINSTRING (read back as bytes under
    encoding="bytes"), arrays rebuilt by numpy.core.multiarray._reconstruct. Handles the types CIFAR uses."""
    def enc(x) -> bytes:
        if isinstance(x, dict):
            return b"}(" + b"".join(enc(k) + enc(v) for k, v in x.items()) + b"u"
        if isinstance(x, list):
            return b"](" + b"".join(map(enc, x)) + b"e"
        if isinstance(x, bytes):
            return b"T" + struct.pack("<I", len(x)) + x
        if isinstance(x, int):
            return b"J" + struct.pack("<i", x)
        assert isinstance(x, np.ndarray) and x.dtype == np.uint8
        dtype = (b"cnumpy\ndtype\n" + enc(b"u1") + enc(0) + enc(1) + b"\x87R("
                 + enc(3) + enc(b"|") + b"NNN" + enc(-1) + enc(-1) + enc(0) + b"tb")
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + enc(0) + b"\x85" + enc(b"b")
                + b"\x87R(" + enc(1) + b"(" + b"".join(map(enc, x.shape)) + b"t" + dtype + b"\x89" + enc(x.tobytes())
                + b"tb")
    return b"\x80\x02" + enc(obj) + b"."


def cifar_batch(first: int, n: int = 2, keys="py2") -> bytes:
    """Image i of the batch is filled with (first + i); R(5, 7)=11, G(6, 8)=22, B(31, 0)=33 mark the planes."""
    data = np.repeat(np.arange(first, first + n, dtype=np.uint8), 3072).reshape(n, 3072)
    data[:, 0 * 1024 + 5 * 32 + 7] = 11
    data[:, 1 * 1024 + 6 * 32 + 8] = 22
    data[:, 2 * 1024 + 31 * 32 + 0] = 33
    batch = {b"batch_label": b"batch", b"labels": [(first + i) % 10 for i in range(n)], b"data": data,
             b"filenames": [b"x.png"] * n}
    return _dump(batch, keys)


def _dump(obj: dict, keys: str) -> bytes:
    """keys: "py2" the original files, "bytes" / "str" re-pickled by Python 3 (protocol 4, 3.11's default)."""
    if keys == "py2":
        return py2_pickle(obj)
    return pickle.dumps({k.decode(): v for k, v in obj.items()} if keys == "str" else obj, protocol=4)


def cifar_files(keys="py2") -> dict[str, bytes]:
    files = {f"data_batch_{i}": cifar_batch(10 * i, keys=keys) for i in range(1, 6)}
    files["test_batch"] = cifar_batch(100, n=3, keys=keys)
    files["batches.meta"] = _dump({b"num_cases_per_batch": 2, b"label_names": [n.encode() for n in CIFAR_NAMES],
                                   b"num_vis": 3072}, keys)
    return files


def write_cifar_dir(directory: Path, files=None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, blob in (files or cifar_files()).items():
        (directory / name).write_bytes(blob)
    return directory


def write_cifar_tar(archive: Path, files=None, extra: dict[str, bytes] | None = None) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    members = {f"cifar-10-batches-py/{k}": v for k, v in (files or cifar_files()).items()} | (extra or {})
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return archive


def check_cifar(ds, split):
    assert ds.name == "cifar10" and ds.split == split and ds.classes == CIFAR_NAMES
    assert ds.images.dtype == torch.uint8 and ds.images.is_contiguous() and ds.labels.dtype == torch.int64
    assert (ds.images[:, 0, 5, 7] == 11).all() and (ds.images[:, 1, 6, 8] == 22).all()
    assert (ds.images[:, 2, 31, 0] == 33).all()
    if split == "train":  # batches 1..5 in order, two images each
        assert ds.images.shape == (10, 3, 32, 32)
        assert ds.images[:, 0, 0, 0].tolist() == [10, 11, 20, 21, 30, 31, 40, 41, 50, 51]
        assert ds.labels.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    else:
        assert ds.images.shape == (3, 3, 32, 32) and ds.labels.tolist() == [0, 1, 2]
        assert ds.images[1, 2, 0, 0].item() == 101 and ds.images[1, 0, 5, 7].item() == 11


@pytest.mark.parametrize("keys", ["py2", "bytes", "str"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_batches_folder(tmp_path, split, keys):
    write_cifar_dir(tmp_path / "cifar-10-batches-py", cifar_files(keys))
    check_cifar(load_dataset("cifar10", split, tmp_path), split)
    check_cifar(load_dataset("cifar10", split, tmp_path / "cifar-10-batches-py"), split)  # the folder itself


def test_cifar_from_tar_in_env_and_cache(tmp_path, monkeypatch):
    # A member named to escape the folder must not be written anywhere: members are read, never extracted.
    write_cifar_tar(tmp_path / "env" / "cifar-10-python.tar.gz", extra={"../../escaped.txt": b"x"})
    monkeypatch.setenv("ALEXNET_DATA", str(tmp_path / "env"))
    check_cifar(load_dataset("cifar10", "train"), "train")
    assert not list(tmp_path.rglob("escaped.txt"))
    monkeypatch.delenv("ALEXNET_DATA")
    write_cifar_tar(Path(os.environ["ALEXNET_CACHE"]) / "cifar-10-python.tar.gz")
    check_cifar(load_dataset("cifar10", "test"), "test")


def test_cifar_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    files = cifar_files()
    files["data_batch_3"] = pickle.dumps({b"data": Evil(), b"labels": [0]})
    write_cifar_dir(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("cifar10", "train", tmp_path)
    one_line_error(excinfo, "data_batch_3", "system")
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(eval))).load()


@pytest.mark.parametrize("batch, words", [
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, "(N, 3072)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
    ({b"labels": [0]}, "'data'"),
])
def test_cifar_invalid_batches(tmp_path, batch, words):
    files = cifar_files()
    files["test_batch"] = pickle.dumps(batch)
    write_cifar_dir(tmp_path, files)
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("cifar10", "test", tmp_path)
    one_line_error(excinfo, "test_batch", words)


def test_cifar_not_found_then_download(tmp_path, monkeypatch):
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("cifar10", "train", tmp_path)
    one_line_error(excinfo, "--download", "cifar-10-python.tar.gz")
    archive = write_cifar_tar(tmp_path / "mirror" / "cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar_mod, "CIFAR_URL", archive.as_uri())
    monkeypatch.setattr(cifar_mod, "CIFAR_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    check_cifar(load_dataset("cifar10", "train", download=True), "train")
    assert (Path(os.environ["ALEXNET_CACHE"]) / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()


