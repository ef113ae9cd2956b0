"""What only a CUDA device can show (marker `gpu`: skipped without one; `benchmarks/run_gpu.sh` runs them):
a training step in fp32 / bf16 / fp16 is finite and agrees with the CPU; bit-exact resume on CUDA with
`train.deterministic`; evaluation on CUDA equals the CPU's; the device loader's order on CUDA is the CPU's;
`torchrun --nproc-per-node=1` with NCCL. (GPU JPEG decode: tests/test_decode.py, tests/test_prepare.py.)"""

import json
import os
import subprocess
import sys

import pytest
import torch
from synthetic import write_fashion_mnist

from alexnet.config import apply_overrides, load_preset
from alexnet.data.loader import DeviceLoader
from alexnet.data.run import prepare_data
from alexnet.eval.evaluate import evaluate
from alexnet.runtime.distributed import DistEnv
from alexnet.runtime.precision import resolve_precision
from alexnet.runtime.settings import torch_settings
from alexnet.training.trainer import Trainer

pytestmark = pytest.mark.gpu

SMALL = {"model.width": 16, "model.hidden": 64, "train.batch_size": 64, "train.eval_batch_size": 100,
         "model.dropout": 0.0, "data.train_augment": [], "train.estimate_steps": 0}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=512, n_test=200)


def trainer_on(device: str, data_dir, tmp_path, **overrides) -> Trainer:
    cfg = apply_overrides(load_preset("quick"), {**SMALL, "data.data_dir": str(data_dir), "train.device": device,
                                                 **overrides})
    return Trainer(cfg, tmp_path / device.replace(":", ""), DistEnv(), torch.device(device), quiet=True)


@pytest.mark.parametrize("precision,loss_rtol,update_rtol", [
    ("fp32", 1e-5, 1e-4),  # IEEE fp32 both sides: only the order of the sums differs (~1e-6 measured)
    ("tf32", 1e-2, 5e-2),  # 10-bit mantissa products: 2-3 % of the update measured on an H200
    ("bf16", 5e-2, None), ("fp16", 2e-2, None),  # 16-bit: the weights' check below
])
def test_a_training_step_agrees_with_the_cpu(tmp_path, data_dir, precision, loss_rtol, update_rtol):
    """Same seed, same batch, the trainer's real process settings (`torch_settings`, as `alexnet train`): the
    loss of one step on CUDA is finite and close to the CPU's fp32 loss, and so is the step's update of every
    weight tensor (norm of the difference over the norm of the CPU's update)."""
    cpu = trainer_on("cpu", data_dir, tmp_path, **{"train.precision": "fp32"})
    gpu = trainer_on("cuda", data_dir, tmp_path, **{"train.precision": precision})
    gpu.model.load_state_dict(cpu.model.state_dict())
    before = {k: v.clone() for k, v in cpu.model.state_dict().items()}
    batch_cpu = next(cpu.data.train.batches(0))
    batch_gpu = next(gpu.data.train.batches(0))
    assert torch.equal(batch_cpu.labels, batch_gpu.labels.cpu())
    loss_cpu = cpu.train_step(batch_cpu)[0].item() / len(batch_cpu.labels)
    with torch_settings(torch.device("cuda"), precision=precision):
        assert torch.backends.cudnn.allow_tf32 is (precision == "tf32")
        loss_gpu = gpu.train_step(batch_gpu)[0].item() / len(batch_gpu.labels)
    assert torch.isfinite(torch.tensor(loss_gpu)) and loss_gpu == pytest.approx(loss_cpu, rel=loss_rtol)
    for key, value in cpu.model.state_dict().items():
        on_gpu = gpu.model.state_dict()[key].float().cpu()
        if update_rtol is None:
            torch.testing.assert_close(on_gpu, value, rtol=loss_rtol, atol=loss_rtol * 1e-1, msg=key)
            continue
        update_cpu, update_gpu = value - before[key], on_gpu - before[key]
        error = (update_gpu - update_cpu).norm() / update_cpu.norm()
        assert error <= update_rtol, f"{key}: the update differs by {error:.2e} of its norm"


def cli_train(out, data_dir, *extra, env_extra=None) -> subprocess.CompletedProcess:
    """A fresh process: deterministic cuBLAS needs its workspace setting before the first CUDA matmul."""
    return subprocess.run([sys.executable, "-m", "alexnet", "train", "--preset", "quick", "--quiet", "--out", str(out),
                           "--data-dir", str(data_dir), "--device", "cuda", "--batch-size", "64",
                           "--set", "model.width=16", "--set", "model.hidden=64", *extra],
                          capture_output=True, text=True, timeout=600, env={**os.environ, **(env_extra or {})})


def test_resume_on_cuda_is_bit_exact_with_deterministic_algorithms(tmp_path, data_dir):
    common = ["--epochs", "2", "--resume", "--set", "train.deterministic=true", "--set",
              "train.checkpoint_every_steps=3"]
    assert cli_train(tmp_path / "straight", data_dir, *common).returncode == 0
    broken = cli_train(tmp_path / "broken", data_dir, *common, env_extra={"ALEXNET_FAULT": "step=7,signal=TERM"})
    assert broken.returncode == 143, broken.stderr[-2000:]  # stopped by SIGTERM after step 7, checkpoint written
    assert cli_train(tmp_path / "broken", data_dir, *common).returncode == 0
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "broken" / "checkpoint.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_evaluation_on_cuda_equals_the_cpus(tmp_path, data_dir):
    cpu = trainer_on("cpu", data_dir, tmp_path, **{"train.precision": "fp32"})
    gpu = trainer_on("cuda", data_dir, tmp_path, **{"train.precision": "fp32"})
    gpu.model.load_state_dict(cpu.model.state_dict())
    fp32 = resolve_precision("fp32", torch.device("cpu"), False)
    a = evaluate(cpu.model, cpu.data.test, cpu.data.eval_pipeline, num_classes=10, precision=fp32)
    b = evaluate(gpu.model, gpu.data.test, gpu.data.eval_pipeline, num_classes=10,
                 precision=resolve_precision("fp32", torch.device("cuda"), False))
    assert a.count == b.count == 200
    assert abs(a.top1 - b.top1) <= 2 / 200 and a.loss == pytest.approx(b.loss, rel=1e-3)


def test_the_device_loaders_order_on_cuda_is_the_cpus(data_dir):
    cfg = apply_overrides(load_preset("quick"), {"data.data_dir": str(data_dir)})
    data = prepare_data(cfg, DistEnv(), torch.device("cpu"))
    images, labels = data.train.images, data.train.labels
    for epoch in (0, 3):
        on_cpu = DeviceLoader(images, labels, batch_size=48, device="cpu", shuffle=True, seed=5, drop_last=True)
        on_gpu = DeviceLoader(images, labels, batch_size=48, device="cuda", shuffle=True, seed=5, drop_last=True)
        for a, b in zip(on_cpu.batches(epoch), on_gpu.batches(epoch), strict=True):
            assert b.images.is_cuda and torch.equal(a.images, b.images.cpu()) and torch.equal(a.labels, b.labels.cpu())


def test_torchrun_one_process_with_nccl(tmp_path, data_dir):
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
                           "-m", "alexnet", "train", "--preset", "quick", "--quiet", "--out", str(out), "--data-dir",
                           str(data_dir), "--epochs", "1", "--batch-size", "64", "--device", "cuda",
                           "--set", "model.width=16", "--set", "model.hidden=64"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = (out / "config.yaml").read_text()
    assert "world_size: 1" in config and "cuda" in config
    ranks = json.loads((out / "ranks.json").read_text())  # written by the distributed path (NCCL) only
    assert ranks["world_size"] == 1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["test_count"] == 200
