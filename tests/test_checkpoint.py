"""Loading a checkpoint (alexnet.run.checkpoint.load_checkpoint): a damaged file is one line naming it, a file with
objects beyond plain data is refused, and an error that is not about the file (no memory, a bug) is not dressed
up as a damaged checkpoint."""

import pickle
import zipfile

import pytest
import torch

from alexnet.base.errors import AlexNetError
from alexnet.run import checkpoint as ckpt_mod
from alexnet.run.checkpoint import atomic_save, load_checkpoint

STATE = {"model": {"w": torch.arange(100, dtype=torch.float32)}, "config": {"name": "x" * 40}, "epoch": 3}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "checkpoint.pt"
    atomic_save(STATE, path)
    return path


def _pickle_offset(path) -> int:
    """Where the pickled object stream (`<archive>/data.pkl`) starts in the file."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    blob = path.read_bytes()
    return blob.index(b"\x80\x02", info.header_offset)  # PROTO 2, the first opcode of torch.save's pickle


def test_a_good_checkpoint_loads(saved):
    state = load_checkpoint(saved)
    assert torch.equal(state["model"]["w"], torch.arange(100, dtype=torch.float32)) and state["epoch"] == 3


def test_a_corrupt_pickle_stream_is_damaged_not_refused(saved):
    blob = bytearray(saved.read_bytes())
    blob[_pickle_offset(saved) + 2] = 80  # opcode 'P' (PERSID): not one the weights-only unpickler knows
    saved.write_bytes(bytes(blob))
    with pytest.raises(AlexNetError) as info:
        load_checkpoint(saved)
    assert str(info.value) == f"{saved} is a damaged checkpoint (Unsupported operand 80)"


def test_a_corrupt_zip_header_is_damaged(saved):
    blob = bytearray(saved.read_bytes())
    start = blob.index(b"PK\x01\x02")  # the central directory's first entry: still a zip to zipfile, not to torch
    blob[start:start + 4] = b"XXXX"
    saved.write_bytes(bytes(blob))
    with pytest.raises(AlexNetError) as info:
        load_checkpoint(saved)
    assert str(info.value) == (f"{saved} is a damaged checkpoint (PytorchStreamReader failed reading zip archive: "
                               f"invalid header or archive is corrupted)")


def test_a_damaged_zip64_end_record_is_not_a_zip(saved):
    """zipfile.is_zipfile raises BadZipFile, rather than returning False, when the zip64 locator names a disk."""
    blob = bytearray(saved.read_bytes())
    locator = blob.rindex(b"PK\x06\x07")
    blob[locator + 4:locator + 8] = (1).to_bytes(4, "little")  # "the central directory starts on disk 1"
    saved.write_bytes(bytes(blob))
    with pytest.raises(AlexNetError) as info:
        load_checkpoint(saved)
    assert str(info.value) == (f"{saved} is not an alexnet checkpoint: not a complete PyTorch zip archive "
                               f"(truncated, or another kind of file)")


class Evil:
    def __reduce__(self):
        return (print, ("unpickling ran code",))


def test_python_objects_are_refused_with_their_name(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(AlexNetError) as info:
        load_checkpoint(path)
    assert str(info.value) == (f"{path} is refused: it holds Python objects (print) beyond tensors and "
                               f"plain data, and checkpoints are loaded without running code")


@pytest.mark.parametrize("error", [MemoryError(), AttributeError("a bug"), KeyboardInterrupt()])
def test_errors_that_are_not_about_the_file_propagate(saved, monkeypatch, error):
    def load(*args, **kwargs):
        raise error
    monkeypatch.setattr(ckpt_mod.torch, "load", load)
    with pytest.raises(type(error)):
        load_checkpoint(saved)


def test_an_unreadable_file_says_so(saved, monkeypatch):
    def load(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(ckpt_mod.torch, "load", load)
    with pytest.raises(AlexNetError) as info:
        load_checkpoint(saved)
    assert str(info.value) == f"cannot read {saved}: Permission denied"


@pytest.mark.parametrize("error, reason", [
    (RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory"),
     "PytorchStreamReader failed reading zip archive: failed finding central directory"),
    (EOFError(), "EOFError"), (KeyError(158), "158"), (IndexError("pop from empty list"), "pop from empty list"),
    (UnicodeDecodeError("utf-8", b"\xe5", 0, 1, "invalid continuation byte"), "invalid continuation byte"),
    (pickle.UnpicklingError("Weights only load failed. ... WeightsUnpickler error: String is too long Check the "
                            "documentation of torch.load"), "String is too long"),
])
def test_what_a_damaged_archive_raises_is_a_damaged_checkpoint(saved, monkeypatch, error, reason):
    def load(*args, **kwargs):
        raise error
    monkeypatch.setattr(ckpt_mod.torch, "load", load)
    with pytest.raises(AlexNetError) as info:
        load_checkpoint(saved)
    assert str(info.value).startswith(f"{saved} is a damaged checkpoint (") and reason in str(info.value)
