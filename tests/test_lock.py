"""One writer per run folder (alexnet.run.lock) and no temp file left behind by a kill (alexnet.base.files)."""

import fcntl
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from synthetic import write_fashion_mnist

from alexnet.base.errors import AlexNetError
from alexnet.base.files import sweep_temp_files
from alexnet.run.lock import RunLock, process_start

TINY = ["--preset", "quick", "--quiet", "--set", "model.width=8", "--set", "model.hidden=32", "--batch-size", "32",
        "--set", "train.threads=1", "--set", "train.estimate_steps=0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_owner_keeps_the_folder(tmp_path):
    with RunLock(tmp_path) as lock:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid() and lock.took_over is None
        with pytest.raises(AlexNetError, match="in use by another alexnet train"):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / ".lock").exists()  # released on exit


def test_a_dead_owner_is_taken_over(tmp_path):
    stale = {"pid": dead_pid(), "start": "1", "host": socket.gethostname(), "since": "earlier"}
    (tmp_path / ".lock").write_text(json.dumps(stale))
    with RunLock(tmp_path) as lock:
        assert lock.took_over == stale
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_a_stale_record_whose_file_someone_holds_is_not_taken_over(tmp_path, monkeypatch):
    """Two processes taking over the same dead owner at once: the first holds the file's flock while it writes its
    record, so the second, reading the dead owner's record still, must refuse rather than win too (once its wait
    for the holder is over)."""
    monkeypatch.setattr(RunLock, "held_wait_s", 0.3)
    stale = {"pid": dead_pid(), "start": "1", "host": socket.gethostname(), "since": "earlier"}
    (tmp_path / ".lock").write_text(json.dumps(stale))
    holder = os.open(tmp_path / ".lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # the first taker, between its flock and its write
    try:
        with pytest.raises(AlexNetError, match="in use by another alexnet train"):
            RunLock(tmp_path).__enter__()
    finally:
        os.close(holder)
    with RunLock(tmp_path) as lock:  # once it is gone, the folder is free again
        assert lock.took_over == stale


def test_the_orphaned_children_of_a_killed_owner_are_waited_for(tmp_path):
    """A killed trainer's forked data-loader workers hold its flock until they exit: the record names a dead
    process, so the lock waits for them (here a child that holds the flock, says so, and exits a second later)
    and then takes the folder over, instead of refusing in the name of a dead pid."""
    stale = {"pid": dead_pid(), "start": "1", "host": socket.gethostname(), "since": "earlier"}
    (tmp_path / ".lock").write_text(json.dumps(stale))
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, sys, time
fd = os.open({str(tmp_path / ".lock")!r}, os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(1)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"  # it holds the flock before we try
        with RunLock(tmp_path) as lock:  # waits up to held_wait_s (10 s) for the child to exit
            assert lock.took_over == stale
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_file_unlinked_while_opened_is_not_held(tmp_path, monkeypatch):
    """An owner that exits unlinks the file, then drops the flock: a process that opened the old file in between
    must not count the old file's flock as the folder's."""
    real_open, calls = os.open, []

    def open_then_unlink(path, *args):
        fd = real_open(path, *args)
        calls.append(path)
        if len(calls) == 1:
            os.unlink(path)  # the previous owner's exit, between our open and our flock
        return fd
    monkeypatch.setattr(os, "open", open_then_unlink)
    with RunLock(tmp_path):
        assert len(calls) == 2 and (tmp_path / ".lock").exists()  # it opened the new file and holds that one
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_a_recycled_pid_is_not_mistaken_for_the_owner(tmp_path):
    """Our own pid, but another start time: the process that wrote the lock is gone."""
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getpid(), "start": "0", "host": socket.gethostname()}))
    assert process_start(os.getpid()) not in (None, "0")
    with RunLock(tmp_path) as lock:
        assert lock.took_over["start"] == "0"


def test_another_hosts_lock_is_refused_with_its_name(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "node-17", "since": "then"}))
    with pytest.raises(AlexNetError, match="pid 1 on host node-17") as info:
        RunLock(tmp_path).__enter__()
    assert "delete" in str(info.value) and "\n" not in str(info.value)


def test_a_second_train_into_the_same_folder_refuses(tmp_path, data_dir, cli):
    (tmp_path / "run").mkdir()
    with RunLock(tmp_path / "run"):  # another train holds the folder
        code, _, err = cli("train", *TINY, "--out", tmp_path / "run", "--data-dir", data_dir, "--epochs", "1")
    assert code == 2 and "in use by another alexnet train" in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # nothing was written, the lock released


def test_sweep_takes_only_old_temp_files(tmp_path):
    old, new, keep = tmp_path / ".checkpoint.pt.ab12.tmp.pt", tmp_path / ".best.pt.cd34.tmp.pt", tmp_path / "x.pt"
    for path in (old, new, keep):
        path.write_bytes(b"half")
    os.utime(old, (time.time() - 60, time.time() - 60))
    assert sweep_temp_files(tmp_path, older_than=time.time() - 30) == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == [new.name, keep.name]


KILL_DURING_SAVE = """
import os, signal, sys
from alexnet.base.files import atomic_path
from alexnet.training import trainer
saves = []
def killing_save(obj, path):  # the second checkpoint write dies half-way, as a SIGKILL at that instant would
    saves.append(path.name)
    if saves.count("checkpoint.pt") == 2:
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"PK half a checkpoint")
            os.kill(os.getpid(), signal.SIGKILL)
    original(obj, path)
original, trainer.atomic_save = trainer.atomic_save, killing_save
from alexnet.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.timing
def test_a_kill_during_a_checkpoint_write_leaves_no_temp_file_after_the_resume(tmp_path, data_dir):
    out = tmp_path / "run"
    args = ["train", *TINY, "--out", str(out), "--data-dir", str(data_dir), "--epochs", "3", "--resume"]
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *args], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr
    left = sorted(p.name for p in out.iterdir() if ".tmp" in p.name)
    assert len(left) == 1 and left[0].startswith(".checkpoint.pt.")  # what the kill left: a half temp file
    assert (out / ".lock").exists()  # and the dead process's lock
    resumed = subprocess.run([sys.executable, "-m", "alexnet", *args], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "no longer running; taking it over" in resumed.stderr
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temp file, no lock
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["progress"]["epoch"] == 3
