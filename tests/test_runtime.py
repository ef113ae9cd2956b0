"""The runtime layer: device choice, the `auto` precision per capability (probes mocked), process-wide settings put
back, derived seeds."""

import warnings

import pytest
import torch

from alexnet.base.errors import AlexNetError
from alexnet.runtime import device as device_mod
from alexnet.runtime import precision as precision_mod
from alexnet.runtime.device import CpuFeatures, cpu_features, pick_device
from alexnet.runtime.distributed import DistEnv
from alexnet.runtime.precision import resolve_precision
from alexnet.runtime.seeding import derived_seed
from alexnet.runtime.settings import num_threads, torch_settings

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


def fake_gpu(monkeypatch, name: str, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


@pytest.mark.parametrize("name,capability,expected", [
    ("NVIDIA H100 80GB HBM3", (9, 0), "bf16"), ("NVIDIA A100-SXM4-40GB", (8, 0), "bf16"),
    ("NVIDIA L4", (8, 9), "bf16"), ("Tesla T4", (7, 5), "fp16"), ("Tesla V100-SXM2-16GB", (7, 0), "fp16"),
    ("Tesla P100-PCIE-16GB", (6, 0), "fp32"),
])
def test_auto_on_cuda_follows_the_compute_capability(monkeypatch, name, capability, expected):
    fake_gpu(monkeypatch, name, capability)
    p = resolve_precision("auto", CUDA)
    assert p.name == expected and p.channels_last == (expected != "fp32")
    assert p.reason.startswith("auto: ") and name in p.reason and f"{capability[0]}.{capability[1]}" in p.reason
    assert p.needs_scaler == (expected == "fp16")


@pytest.mark.parametrize("features,expected", [
    (CpuFeatures("Xeon (Sapphire Rapids)", "AVX512", native_bf16=True, amx=True), "bf16"),
    (CpuFeatures("EPYC (Genoa)", "AVX512", native_bf16=True, amx=False), "bf16"),
    (CpuFeatures("EPYC (Rome)", "AVX2", native_bf16=False, amx=False), "fp32"),
])
def test_auto_on_a_cpu_follows_its_bf16_units(monkeypatch, features, expected):
    monkeypatch.setattr(precision_mod, "cpu_features", lambda: features)
    p = resolve_precision("auto", CPU)
    assert p.name == expected and p.channels_last  # NHWC is oneDNN's fast layout in fp32 too
    assert ("AMX" in p.reason) == features.amx and (expected == "fp32") == ("emulated" in p.reason)


def test_an_explicit_precision_wins_and_emulated_bf16_is_named(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_features", lambda: CpuFeatures("EPYC", "AVX2", False, False))
    with pytest.warns(UserWarning, match="emulated and much slower than fp32"):
        p = resolve_precision("bf16", CPU)
    assert p.name == "bf16" and "emulated" in p.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("fp32", CPU, channels_last=False).channels_last is False
    fake_gpu(monkeypatch, "NVIDIA H100", (9, 0))
    assert resolve_precision("fp16", CUDA).name == "fp16" and resolve_precision("fp32", CUDA).channels_last is False


def test_the_description_says_why_the_layout_when_only_the_precision_was_asked_for(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_features", lambda: CpuFeatures("Xeon", "AVX512", True, True))
    assert resolve_precision("fp32", CPU).describe() == "fp32 + channels_last (asked for; channels_last: auto, on " \
                                                        "every CPU)"
    assert resolve_precision("fp32", CPU, channels_last=True).describe() == "fp32 + channels_last (asked for)"
    assert resolve_precision("fp32", CPU, channels_last=False).describe() == "fp32 (asked for)"
    auto = resolve_precision("auto", CPU)  # auto names its reason once, for both
    assert auto.describe() == f"bf16 + channels_last ({auto.reason})" and "channels_last" not in auto.reason
    fake_gpu(monkeypatch, "NVIDIA H100", (9, 0))
    assert resolve_precision("bf16", CUDA).describe() == "bf16 + channels_last (asked for; channels_last: auto, " \
                                                          "with 16-bit autocast)"


def test_precision_names_say_what_runs_on_cuda(monkeypatch):
    fake_gpu(monkeypatch, "NVIDIA H100 80GB HBM3", (9, 0))
    fp32, tf32 = resolve_precision("fp32", CUDA), resolve_precision("tf32", CUDA)
    assert (fp32.name, fp32.tf32, fp32.dtype) == ("fp32", False, torch.float32) and "TF32 off" in fp32.reason
    assert (tf32.name, tf32.tf32, tf32.dtype) == ("tf32", True, torch.float32) and "TF32" in tf32.reason
    assert not tf32.channels_last and not tf32.needs_scaler  # fp32 tensors, as fp32
    assert "tf32" not in [resolve_precision("auto", CUDA).name]  # auto never picks it
    fake_gpu(monkeypatch, "Tesla V100-SXM2-16GB", (7, 0))
    with pytest.raises(AlexNetError, match="compute capability >= 8.0; Tesla V100-SXM2-16GB is 7.0"):
        resolve_precision("tf32", CUDA)
    with pytest.raises(AlexNetError, match="needs a CUDA GPU") as excinfo:
        resolve_precision("tf32", CPU)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("name,tf32", [("fp32", False), ("tf32", True), ("bf16", False), ("auto", False)])
def test_tf32_math_follows_the_precision_and_is_put_back(name, tf32):
    """torch's own defaults (TF32 on for convolutions, off for matmuls) are what the block must override."""
    saved = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = True
    try:
        with torch_settings(CPU, precision=name):
            assert torch.backends.cudnn.allow_tf32 is tf32
            assert torch.get_float32_matmul_precision() == ("high" if tf32 else "highest")
        assert torch.backends.cudnn.allow_tf32 is True  # put back
        if name in ("fp32", "tf32"):  # evaluation's forward, outside torch_settings, gets the same math
            with resolve_precision("fp32", CPU).autocast(CPU):
                assert torch.backends.cudnn.allow_tf32 is False
    finally:
        torch.backends.cudnn.allow_tf32 = saved[0]
        torch.set_float32_matmul_precision(saved[1])


def test_autocast_is_one_path_for_every_precision():
    x = torch.randn(4, 4)
    with resolve_precision("fp32", CPU).autocast(CPU):
        assert (x @ x).dtype == torch.float32
    with resolve_precision("bf16", CPU).autocast(CPU):
        assert (x @ x).dtype == torch.bfloat16


def test_onednn_capped_below_the_cpu_has_no_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    for cap in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):  # uncapped to start with, whatever the caller's shell set
        monkeypatch.delenv(cap, raising=False)
    cpu_features.cache_clear()
    try:
        assert cpu_features().native_bf16 and cpu_features().amx
        cpu_features.cache_clear()
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
        assert not cpu_features().native_bf16 and not cpu_features().amx
    finally:
        cpu_features.cache_clear()


def test_pick_device():
    assert pick_device("cpu") == CPU and pick_device("auto", DistEnv()).type in ("cpu", "cuda")
    with pytest.raises(AlexNetError, match="auto, cpu, cuda or cuda:N"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(AlexNetError, match="no CUDA device"):
            pick_device("cuda:0")


def test_torch_settings_are_put_back():
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    with torch_settings(CPU, threads=1, deterministic=True):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark is False
    assert torch.get_num_threads() == threads and torch.backends.cudnn.benchmark == benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    with num_threads(0):  # 0: leave it alone
        assert torch.get_num_threads() == threads


def test_derived_seeds_are_fixed_numbers():
    """Recorded values: a change here would change every run's random numbers (and break resuming old runs)."""
    assert derived_seed(0) == 0 and derived_seed(1) == 1_000_003
    assert derived_seed(3, rank=2, step=10, stream=1) == 3 * 1_000_003 + 2 * 7_919 + 10 * 104_729 + 1
    assert derived_seed(2**62, step=2**40) == (2**62 * 1_000_003 + 2**40 * 104_729) % 2**63


def test_device_name_says_what_the_cpu_is():
    name = device_mod.device_name(CPU)
    assert name.startswith("cpu: ") and f"{torch.get_num_threads()} threads" in name
