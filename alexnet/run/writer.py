"""The run folder's writes (checkpoint.pt, best.pt, metrics.jsonl, report.md, curves.png) off the training loop's
path. On an H200 the d2l preset spent ~1.3 s of each ~3 s epoch serialising and fsyncing 374 MB of weights and
momentum (issue #21); here the loop only copies the state to host memory (`snapshot`) and goes on while one
background thread writes it.

What stays true:
* Order. One thread runs the jobs in the order they were submitted, so checkpoint.pt, the commit point, is still
  written after its epoch's best.pt, metrics and report; each write is atomic (`alexnet.base.files`).
* Nothing after a failure. A job that raises drops every job queued after it (no checkpoint.pt after a best.pt
  that could not be written), and its error is raised in the training thread at the next `submit` or `wait`.
* Bounded. The trainer waits for an epoch's writes before it submits the next epoch's (one snapshot in memory at a
  time), and for all of them before `fit` returns or raises: a Ctrl-C or a finished run leaves every file whole.
  A kill -9 may find the last epoch's checkpoint.pt not yet written: the resume re-runs that epoch, bit-exactly,
  as after a kill during any epoch. Checkpoints asked for mid-epoch (`train.checkpoint_every_steps`, a signal)
  are waited for: they exist to survive a kill.
"""

import queue
import threading
from collections.abc import Callable
from typing import Any

import torch


def snapshot(obj: Any) -> Any:
    """A copy of a state dict's nested dicts, lists and tuples with every tensor copied to host memory (the
    training loop goes on changing the originals in place)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: snapshot(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(snapshot(value) for value in obj)
    return obj


class Writer:
    """Runs jobs (callables) in order: in a background thread, or at once with `background=False`."""

    def __init__(self, background: bool = True):
        self.background = background
        self._jobs: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], object]) -> None:
        self._raise()
        if not self.background:
            job()
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="alexnet-writer", daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def wait(self) -> None:
        """Until every submitted job has run; raises the first error of a job."""
        if self._thread is not None:
            self._jobs.join()
        self._raise()

    def close(self) -> BaseException | None:
        """Wait for the jobs and stop the thread; returns (does not raise) an error not yet raised, for a caller
        that is already unwinding another exception."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        return error

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:  # after a failure, the jobs queued behind it are dropped
                    job()
            except BaseException as error:  # handed to the training thread, which raises it
                self._error = error
            finally:
                self._jobs.task_done()
