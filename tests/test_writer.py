"""alexnet.run.writer: the run folder's writes in a background thread, in order, nothing after a failure, and the
failure raised in the training thread; snapshots that do not follow the live tensors."""

import threading

import pytest
import torch

from alexnet.base.errors import AlexNetError
from alexnet.run.writer import Writer, snapshot


@pytest.mark.parametrize("background", [True, False])
def test_jobs_run_in_order(background):
    done: list[int] = []
    writer = Writer(background=background)
    for i in range(50):
        writer.submit(lambda i=i: done.append(i))
    writer.wait()
    assert done == list(range(50))
    assert writer.close() is None


def test_jobs_run_off_the_calling_thread_and_wait_waits():
    release, names = threading.Event(), []
    writer = Writer()
    writer.submit(lambda: (release.wait(10), names.append(threading.current_thread().name)))
    assert names == []  # submit did not block on the job
    release.set()
    writer.wait()
    assert names == ["alexnet-writer"]
    writer.close()


def test_a_failure_drops_the_jobs_behind_it_and_is_raised_once():
    done: list[str] = []
    writer = Writer()

    def full_disk():
        raise AlexNetError("cannot write best.pt: No space left on device")

    writer.submit(lambda: done.append("metrics"))
    writer.submit(full_disk)
    writer.submit(lambda: done.append("checkpoint"))  # the commit point must not follow a failed write
    with pytest.raises(AlexNetError, match="No space left"):
        writer.wait()
    assert done == ["metrics"]
    writer.wait()  # raised once: the caller has it
    writer.submit(lambda: done.append("after"))
    writer.wait()
    assert done == ["metrics", "after"]
    writer.close()


def test_close_hands_back_an_error_not_yet_raised():
    writer = Writer()
    writer.submit(lambda: 1 / 0)
    error = writer.close()
    assert isinstance(error, ZeroDivisionError) and writer.close() is None


def test_snapshot_copies_every_tensor_to_host_memory():
    weight = torch.ones(3)
    state = {"model": {"w": weight}, "optimizer": {"state": {0: {"momentum": [weight, (weight, 2)]}}},
             "epoch": 3, "name": "d2l"}
    copy = snapshot(state)
    weight.add_(1)  # training goes on in place
    assert torch.equal(copy["model"]["w"], torch.ones(3))
    inner = copy["optimizer"]["state"][0]["momentum"]
    assert isinstance(inner, list) and isinstance(inner[1], tuple) and torch.equal(inner[1][0], torch.ones(3))
    assert copy["epoch"] == 3 and copy["name"] == "d2l" and copy["model"]["w"].device.type == "cpu"
