"""One writer per run folder: `OUT/.lock` holds the owner's pid, its start time and host. A second `alexnet
train` into the same folder refuses with one line; a lock left by a process that no longer runs on this host
(a SIGKILL, a power cut) is taken over, with a message. The pid's start time (Linux: /proc/PID/stat) tells a
dead owner from a new process that happens to have the same pid. The owner also holds an advisory `flock` on the
file for as long as it runs (the kernel drops it when the process dies), so that two processes taking over the
same stale lock at the same instant cannot both win; since a killed owner's forked children (data-loader workers)
keep the flock until they exit too, a flock whose record names no live process is waited for (up to 10 s)."""

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from alexnet.base.errors import AlexNetError
from alexnet.run.layout import LOCK


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in parentheses may hold spaces


def alive(pid: int, start: str | None) -> bool:
    if pid <= 0:  # no pid recorded (kill(0 or -1) would ask about a whole process group)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    return start is None or process_start(pid) in (None, start)


class RunLock:
    """`with RunLock(folder) as lock:` holds the folder; `lock.took_over` names a dead owner it replaced."""

    held_wait_s = 10.0  # how long a flock held without a live owner is waited for (orphaned workers exiting)

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.took_over: dict | None = None
        self.me = {"pid": os.getpid(), "start": process_start(os.getpid()), "host": socket.gethostname(),
                   "since": time.strftime("%Y-%m-%d %H:%M:%S")}

    def __enter__(self) -> "RunLock":
        deadline = time.monotonic() + self.held_wait_s
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as e:
                raise AlexNetError(f"cannot write {self.path}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = self._owner()
                # A flock outlives its owner while the owner's forked children (data-loader workers) still run:
                # a record naming no live process gets a few seconds for them to exit (or for a new owner,
                # between its flock and its write, to write its record).
                if time.monotonic() < deadline and not self._alive(owner):
                    time.sleep(0.1)
                    continue
                self._refuse(owner, alive_for_sure=True)
            if _same_file(fd, self.path):  # not a file its last owner unlinked while we opened it
                break
            os.close(fd)
        try:
            owner = self._owner()
            if owner is not None:
                self._refuse(owner)
                self.took_over = owner
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self.me).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if _same_file(self.fd, self.path):  # still ours (not deleted by hand and taken by another run)
            self.path.unlink(missing_ok=True)  # before the flock goes: the next owner opens a new file
        os.close(self.fd)

    def _alive(self, owner: dict | None) -> bool:
        if not owner or owner.get("host") != self.me["host"]:
            return False
        return alive(int(owner.get("pid", -1)), owner.get("start"))

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # missing, empty, or half-written by an owner killed while taking it
        return owner if isinstance(owner, dict) else None

    def _refuse(self, owner: dict | None, alive_for_sure: bool = False) -> None:
        """Raise unless `owner` (the lock file's record) is gone; `alive_for_sure`: it holds the flock."""
        owner = owner or {}
        if owner.get("host") not in (None, self.me["host"]):
            raise AlexNetError(f"{self.path.parent} is in use by pid {owner.get('pid')} on host "
                               f"{owner.get('host')} (since {owner.get('since')}); if that run is gone, delete "
                               f"{self.path}")
        if alive_for_sure or alive(int(owner.get("pid", -1)), owner.get("start")):
            raise AlexNetError(f"{self.path.parent} is in use by another alexnet train (pid {owner.get('pid', '?')}, "
                               f"since {owner.get('since', '?')}); wait for it or choose another --out")


def _same_file(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
