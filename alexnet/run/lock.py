"""One writer per run folder: `OUT/.lock` holds the owner's pid, its start time and host. A second `alexnet
train` into the same folder refuses with one line; a lock left by a process that no longer runs on this host
(a SIGKILL, a power cut) is taken over, with a message. The pid's start time (Linux: /proc/PID/stat) tells a
dead owner from a new process that happens to have the same pid."""

import json
import os
import socket
import time
from pathlib import Path

from alexnet.base.errors import AlexNetError
from alexnet.base.files import atomic_write
from alexnet.run.layout import LOCK


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in parentheses may hold spaces


def alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    return start is None or process_start(pid) in (None, start)


class RunLock:
    """`with RunLock(folder) as lock:` holds the folder; `lock.took_over` names a dead owner it replaced."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.took_over: dict | None = None
        self.me = {"pid": os.getpid(), "start": process_start(os.getpid()), "host": socket.gethostname(),
                   "since": time.strftime("%Y-%m-%d %H:%M:%S")}

    def __enter__(self) -> "RunLock":
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            self._take_over_or_refuse()
        except OSError as e:
            raise AlexNetError(f"cannot write {self.path}: {e.strerror or e}") from None
        else:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.me))
        return self

    def __exit__(self, *exc) -> None:
        if self._owner() == self.me:
            self.path.unlink(missing_ok=True)

    def _owner(self) -> dict | None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # missing, or half-written by an owner killed while taking it
        return owner if isinstance(owner, dict) else None

    def _take_over_or_refuse(self) -> None:
        owner = self._owner()
        if owner is not None:
            if owner.get("host") != self.me["host"]:
                raise AlexNetError(f"{self.path.parent} is in use by pid {owner.get('pid')} on host "
                                   f"{owner.get('host')} (since {owner.get('since')}); if that run is gone, delete "
                                   f"{self.path}")
            if alive(int(owner.get("pid", -1)), owner.get("start")):
                raise AlexNetError(f"{self.path.parent} is in use by another alexnet train (pid {owner['pid']}, "
                                   f"since {owner.get('since')}); wait for it or choose another --out")
        atomic_write(self.path, json.dumps(self.me))
        if self._owner() != self.me:  # another process took it over in the same instant
            raise AlexNetError(f"{self.path.parent} was just taken by another alexnet train; choose another --out")
        self.took_over = owner or {"pid": "unknown"}
