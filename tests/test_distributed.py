"""torchrun with gloo on CPU: two ranks agree, equal one process that does their arithmetic (two micro-batches
per step), train as one process with the whole batch does, count every test image once, and survive a killed
rank through an elastic restart."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from synthetic import write_fashion_mnist

pytestmark = pytest.mark.distributed

# Dropout off, no augmentation, fp32: then one process and two ranks draw no random numbers that differ and round
# alike (bf16 autocast would round the two halves of a batch differently from the whole). No gradient clipping
# unless a test asks for it: clipped steps have a fixed length, and on this small net the rounding differences
# between batch shapes then grow to 2.6e-2 of a weight's norm in 28 steps (4e-6 unclipped), so the
# whole-batch comparison below would measure that growth, not DDP.
EXACT = ["--preset", "quick", "--quiet", "--epochs", "2", "--batch-size", "32", "--set", "model.width=8",
         "--set", "model.hidden=32", "--set", "model.dropout=0.0", "--set", "data.train_augment=[]",
         "--set", "train.eval_batch_size=64", "--set", "train.threads=1", "--set", "train.precision=fp32",
         "--set", "optim.grad_clip=0"]
CLIPPED = ["--set", "optim.grad_clip=2.0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    # 199 test images: the last evaluation batch (7) splits 4 / 3 over two ranks
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=512, n_test=199)


def launch(out, data_dir, *extra, nproc=2, env_extra=None, max_restarts=0, check=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               f"--max-restarts={max_restarts}", "-m", "alexnet"]
    else:
        cmd = [sys.executable, "-m", "alexnet"]
    # Own session: on a timeout the whole group (torchrun and its workers) is killed, never left running.
    proc = subprocess.Popen([*cmd, "train", "--out", str(out), "--data-dir", str(data_dir), *EXACT, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    proc = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert proc.returncode == 0 or not check, \
        "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("[W"))[:4000]
    return proc


def final(out):
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return state, metrics


def test_two_ranks_equal_one_process_with_their_arithmetic(tmp_path, data_dir):
    """DDP's arithmetic is: each rank's gradient of its half batch, then their average. One process with two
    micro-batches per step (train.accum_steps=2, micro-batch k = the share of rank k, with its seeds) does that
    same arithmetic with the same kernels (batch 16, one thread), so the two must agree to rounding; in fact the
    sum g0 / 2 + g1 / 2 is the same float whichever adds it. Clipped at 2 (the quick preset's; some steps
    here clip, as their losses show): DDP must clip the averaged gradient, as one process clips its accumulated one."""
    launch(tmp_path / "ddp", data_dir, *CLIPPED)
    launch(tmp_path / "accum", data_dir, *CLIPPED, "--set", "train.accum_steps=2", nproc=0)
    ddp, ddp_metrics = final(tmp_path / "ddp")
    accum, accum_metrics = final(tmp_path / "accum")
    ranks = json.loads((tmp_path / "ddp" / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["parameter_sums"][0] == ranks["parameter_sums"][1]
    own = [p.double().sum().item() for p in ddp["model"].values()]
    assert ranks["parameter_sums"][0] == pytest.approx(own, rel=1e-12)  # the checkpoint holds those weights
    for key, value in accum["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-6, atol=1e-7)
    assert [m["test_count"] for m in ddp_metrics] == [199, 199]
    for a, b in zip(ddp_metrics, accum_metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1 / 199 + 1e-9)  # eval batches split 32 / 64
    # 512 training images, a tenth (51) held out for validation on every rank alike: 461, 14 batches of 32
    assert ddp["progress"]["global_step"] == accum["progress"]["global_step"] == 2 * (461 // 32)
    assert [m["val_count"] for m in ddp_metrics] == [51, 51]


def test_two_ranks_train_as_one_process_with_the_whole_batch(tmp_path, data_dir):
    """Against one process that takes each batch of 32 whole, the arithmetic differs (oneDNN picks its kernels
    and summation order by batch shape and CPU: 16 elements of a conv weight differed by 5.5e-5 after 28 steps on
    an AVX512-BF16 EPYC, while an AMX Xeon agreed to 1e-5), and the differences grow over the steps. What must
    hold on any CPU is that it is the same training: every weight tensor within 1e-3 of its norm (20x the
    measured difference) and the same losses to 1e-3."""
    launch(tmp_path / "ddp", data_dir)
    launch(tmp_path / "single", data_dir, nproc=0)
    ddp, ddp_metrics = final(tmp_path / "ddp")
    single, single_metrics = final(tmp_path / "single")
    for key, value in single["model"].items():
        difference = (ddp["model"][key] - value).norm() / value.norm()
        assert difference < 1e-3, f"{key}: {difference:.2e} of its norm"
    for a, b in zip(ddp_metrics, single_metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=2 / 199 + 1e-9)


def test_killed_rank_restarts_from_the_checkpoint(tmp_path, data_dir):
    common = ["--resume", "--set", "train.checkpoint_every_steps=3"]
    launch(tmp_path / "calm", data_dir, *common)
    launch(tmp_path / "killed", data_dir, *common, max_restarts=1,
           env_extra={"ALEXNET_FAULT": "step=20,signal=KILL,rank=1"})
    resumed = yaml.safe_load((tmp_path / "killed" / "config.yaml").read_text())["runtime"]["resumed_at_step"]
    assert resumed == 18  # the restarted workers continued from the checkpoint of step 18, not from scratch
    calm, _ = final(tmp_path / "calm")
    killed, killed_metrics = final(tmp_path / "killed")
    assert [m["epoch"] for m in killed_metrics] == [1, 2]
    for key, value in calm["model"].items():
        assert torch.equal(killed["model"][key], value), key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, data_dir):
    """Rank 1's weights turn NaN after step 5: only its loss of step 6 is NaN. Both ranks must stop at that step
    with the same one-line error; without the flag summed over the ranks, rank 0 would wait forever in a
    collective. The two ranks are started by hand with torchrun's environment, not by torchrun: torchrun stops
    the other workers as soon as one exits, so what a rank prints would race with that stop."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "ALEXNET_FAULT": "step=5,signal=NAN,rank=1"}
    cmd = [sys.executable, "-m", "alexnet", "train", "--out", str(tmp_path / "nan"), "--data-dir", str(data_dir),
           *EXACT]
    ranks = [subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True) for r in range(2)]
    try:
        results = [rank.communicate(timeout=300) for rank in ranks]  # a rank left waiting would time out here
    finally:
        for rank in ranks:
            if rank.poll() is None:
                os.killpg(rank.pid, signal.SIGKILL)
    for rank, (_, stderr) in zip(ranks, results, strict=True):
        assert rank.returncode == 2, stderr[-2000:]
        errors = [line for line in stderr.splitlines() if line.startswith("alexnet train: error:")]
        assert len(errors) == 1 and errors[0].startswith("alexnet train: error: loss is not finite at step 6 "), \
            stderr[-2000:]
    assert not (tmp_path / "nan" / "checkpoint.pt").exists()  # nothing was written from poisoned weights


def test_image_folder_with_a_bad_file_on_two_ranks(tmp_path):
    from torchvision.io import write_png

    root = tmp_path / "imgs"
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 24), ("val", 9)):  # 9 test images, eval batch 4: the last batch leaves a rank empty
        for i in range(n):
            cls = ("ant", "bee", "cat")[i % 3]
            path = root / split / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(torch.randint(0, 256, (3, 20, 20), generator=g, dtype=torch.uint8), str(path))
    (root / "train" / "bee" / "broken.png").write_text("not a png")
    folder = ["--set", "data.dataset=folder", "--set", "data.image_size=20", "--set", "data.input_size=28",
              "--set", "data.skip_bad_files=true", "--set", "data.workers=0", "--set", "train.eval_batch_size=4",
              "--batch-size", "8", "--epochs", "1"]
    launch(tmp_path / "ddp", root, *folder)
    state, metrics = final(tmp_path / "ddp")
    assert metrics[0]["test_count"] == 9 and state["classes"] == ["ant", "bee", "cat"]
    # the broken file was dropped on both ranks; a tenth of the 24 good ones (2) held out for validation
    assert metrics[0]["val_count"] == 2 and state["progress"]["global_step"] == 22 // 8
