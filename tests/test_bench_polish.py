"""`alexnet bench` names what the user typed and shows what ran: a fast path forced on where it cannot apply is
named by its flag (`alexnet train` and --time-to-accuracy keep naming the config key), the throughput output
says which fast paths the step took (text and JSON), and the profile's table never cuts a unit or layer name."""

import json
import pickle

import pytest
import torch
from synthetic import write_fashion_mnist

from alexnet.bench.profile import format_profile
from alexnet.training import fast

SMALL_CPU = ["--model", "small", "--synthetic", "--device", "cpu", "--batch-size", "8", "--steps", "1",
             "--warmup", "1", "--precision", "fp32"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without CUDA does")


@pytest.fixture(autouse=True)
def _fast_peak(fast_peak):
    pass  # conftest's fast_peak for every test here


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture
def bench(cli):
    return lambda *argv: cli("bench", *argv)


# --- 1. a fast path that cannot apply, named as typed ---------------------------------------------------------------

@no_cuda
@pytest.mark.parametrize("argv, message", [
    (["--fused-pool"], "--fused-pool does not apply: not a CUDA device: the kernels are Triton's"),
    (["--cuda-graphs"], "--cuda-graphs does not apply: not a CUDA device"),
    (["--space-to-depth"], "--space-to-depth does not apply: small's conv1 is not a strided convolution: nothing "
                           "to fold"),
    (["--fused-lrn"], "--fused-lrn does not apply: small as configured has no LRN"),
    (["--triton-lrn"], "--triton-lrn does not apply: not a CUDA device: the kernels are Triton's"),
    (["--pool-first", "--set", "model.activation=tanh"],
     "--pool-first does not apply: small as configured has no ReLU followed by a max-pool"),
    (["--profile", "--fused-pool"], "--fused-pool does not apply: not a CUDA device: the kernels are Triton's"),
    (["--compile", "--fused-pool"], "--fused-pool does not apply: not a CUDA device: the kernels are Triton's"),
])
def test_a_flag_that_cannot_apply_is_named_as_typed(bench, argv, message):
    code, out, err = bench(*argv, *SMALL_CPU)
    assert (code, out, err) == (2, "", f"alexnet bench: error: {message}\n")


@no_cuda
def test_train_and_time_to_accuracy_name_the_config_key(cli, bench, data_dir, tmp_path):
    code, _, err = cli("train", "--preset", "quick", "--out", tmp_path / "run", "--data-dir", data_dir,
                       "--set", "train.fused_pool=true")
    assert (code, err) == (2, "alexnet train: error: train.fused_pool: true does not apply: not a CUDA device: "
                              "the kernels are Triton's\n")
    code, _, err = bench("--time-to-accuracy", "0.5", "--out", tmp_path / "tta", "--set", f"data.data_dir={data_dir}",
                         "--set", "train.device=cpu", "--set", "train.cuda_graphs=true")
    assert (code, err) == (2, "alexnet bench: error: train.cuda_graphs: true does not apply: not a CUDA device\n")


def test_not_applicable_names_the_key_and_survives_a_copy():
    with pytest.raises(fast.NotApplicable) as caught:
        fast.decide(True, "fused_lrn", "no LRN", "auto: on", True)
    error = caught.value
    assert (error.name, error.blocker, str(error)) == ("fused_lrn", "no LRN", "train.fused_lrn: true does not apply: "
                                                                              "no LRN")
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.name, again.blocker, str(again)) == (fast.NotApplicable, "fused_lrn", "no LRN",
                                                                    str(error))
    assert fast.decide(True, "fused_lrn", None, "auto: on", False) == fast.Choice(True, "train.fused_lrn: true")


# --- 2. the throughput output names the fast paths the step took ----------------------------------------------------

SMALL_ON_A_CPU = {  # what the trainer chooses for `small` on a CPU (alexnet.training.fast), in the banner's order
    "space_to_depth": "space_to_depth off (small's conv1 is not a strided convolution: nothing to fold)",
    "pool_first": "pool_first on (auto: max-pool before ReLU, exact; the ReLU touches ~4x fewer elements)",
    "fused_lrn": "fused_lrn off (small as configured has no LRN)",
    "triton_lrn": "triton_lrn off (not a CUDA device: the kernels are Triton's)",
    "fused_pool": "fused_pool off (not a CUDA device: the kernels are Triton's)",
    "cuda_graphs": "cuda_graphs off (not a CUDA device)"}


@no_cuda
def test_the_json_result_holds_the_fast_paths_taken(bench):
    code, out, err = bench(*SMALL_CPU, "--json")
    assert code == 0, err
    taken = json.loads(out)["ours"]["fast_paths"]
    assert {name: taken[name] for name in SMALL_ON_A_CPU} == SMALL_ON_A_CPU
    assert list(taken)[-1] == "cuda_graphs" and all(d.startswith(f"{name} ") for name, d in taken.items())


@no_cuda
def test_the_table_says_which_fast_paths_the_step_took(bench):
    code, out, err = bench(*SMALL_CPU, "--no-pool-first")
    assert code == 0, err
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("ours: fast paths: "))
    line = lines[at]
    assert lines[at - 1].startswith("ours: fp32") and sum("fast paths" in x for x in lines) == 1
    expected = {**SMALL_ON_A_CPU, "pool_first": "pool_first off (--no-pool-first)"}  # the flag as typed
    places = [line.index(f"; {d}" if name != "space_to_depth" else f": {d}") for name, d in expected.items()]
    assert places == sorted(places)  # each choice whole, in the banner's order
    assert line.endswith("; cuda_graphs off (not a CUDA device)")


@no_cuda
def test_the_fast_paths_name_the_flags_typed_and_what_bias_after_pool_moves(bench):
    """A fast path set by a flag is named by it; pool_first off with bias_after_pool on says that those pools
    still run before their ReLUs (conv -> max-pool -> + bias -> ReLU)."""
    code, out, err = bench(*SMALL_CPU, "--no-pool-first", "--bias-after-pool", "--json")
    assert code == 0, err
    taken = json.loads(out)["ours"]["fast_paths"]
    assert taken["bias_after_pool"] == "bias_after_pool on (--bias-after-pool)"
    assert taken["pool_first"] == ("pool_first off (--no-pool-first, but bias_after_pool pools before the ReLUs of "
                                   "the convolutions whose bias it moves)")
    code, out, err = bench(*SMALL_CPU, "--json")
    assert json.loads(out)["ours"]["fast_paths"]["pool_first"] == SMALL_ON_A_CPU["pool_first"]  # auto: as before


# --- 3. the profile's table: names whole, columns aligned -----------------------------------------------------------

def row(layer: str, types: str, output: list[int], fwd: float, bwd: float) -> dict:
    return {"layer": layer, "types": types, "output": output, "forward_ms": fwd, "backward_ms": bwd,
            "forward_flops": 2e9, "backward_flops": 4e9, "tflops": 1.5, "tensor_core_share": 0.25}


def profile_result(rows: list[dict]) -> dict:
    return {"model": "paper", "input_size": 227, "batch_size": 4, "precision": "bf16", "channels_last": True,
            "device": "cuda: H200", "torch": "2.9", "fast_paths": {"pool_first": "pool_first on (auto)"},
            "step": {"steps": 3, "wall_ms": 12.0}, "layers": rows}


def check_table(text: str, rows: list[dict]) -> None:
    """Each row's name and layers start in their header's column, whole; each figure ends under its header."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("unit "))
    header, body, sums = lines[start], lines[start + 1:start + 1 + len(rows)], lines[start + 1 + len(rows)]
    layers_at = header.index("layers")
    fwd_end, bwd_end = header.index("fwd ms") + len("fwd ms"), header.index("bwd ms") + len("bwd ms")
    for line, r in zip(body, rows, strict=True):
        assert len(line) == len(header)
        assert line[:layers_at].rstrip() == r["layer"] and line[layers_at - 1] == " "
        assert line[layers_at:].startswith(r["types"] + " ")
        assert line[:fwd_end].split()[-1] == f"{r['forward_ms']:.3f}"
        assert line[:bwd_end].split()[-1] == f"{r['backward_ms']:.3f}"
    assert sums.startswith("sum of units ") and len(sums) == bwd_end
    assert float(sums[:fwd_end].split()[-1]) == pytest.approx(sum(r["forward_ms"] for r in rows), abs=1e-3)
    assert float(sums[:bwd_end].split()[-1]) == pytest.approx(sum(r["backward_ms"] for r in rows), abs=1e-3)


def test_the_profile_table_never_cuts_a_name():
    rows = [row("features.0", "Conv2d+ReLU+LocalResponseNorm", [96, 55, 55], 1.25, 2.5),
            row("features.column_b.conv_block.0", "Conv2d+ReLU+LocalResponseNorm+MaxPool2d", [128, 27, 27],
                10.125, 20.25),
            row("classifier.6", "Linear", [10], 0.011, 0.043)]
    text = format_profile(profile_result(rows))
    check_table(text, rows)
    assert "features.column_b.conv_block.0  Conv2d+ReLU+LocalResponseNorm+MaxPool2d  " in text
    # short names: the usual columns (unit 14, layers 28 wide)
    short = [row("features.0", "Conv2d+ReLU", [64, 27, 27], 1.0, 2.0)]
    lines = format_profile(profile_result(short)).splitlines()
    assert lines[2].index("layers") == 14 and lines[3][14:42] == "Conv2d+ReLU".ljust(28)
    check_table("\n".join(lines), short)


@no_cuda
def test_the_paper_net_profile_shows_its_lrn_units_whole(bench):
    code, out, err = bench("--profile", "--model", "paper", "--input-size", "67", "--synthetic", "--device", "cpu",
                           "--batch-size", "2", "--steps", "1", "--warmup", "1", "--precision", "fp32", "--json")
    assert code == 0, err
    result = json.loads(out)
    rows = result["layers"]
    assert [r["types"] for r in rows][:2] == ["Conv2d+ReLU+LocalResponseNorm", "MaxPool2d"]
    check_table(format_profile(result), rows)
