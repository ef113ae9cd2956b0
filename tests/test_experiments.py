"""alexnet.experiments: every study at the `tiny` budget on the synthetic Fashion-MNIST (seconds each), the LeNet
and cifar4 models, resuming a study, and the `experiment` command's errors."""

import json
import math

import pytest
import torch
import yaml
from synthetic import write_fashion_mnist

import alexnet
from alexnet.base.errors import AlexNetError
from alexnet.experiments import list_studies, run_study


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(write_fashion_mnist(tmp_path_factory.mktemp("fmnist")))


@pytest.fixture(autouse=True)
def _restore_threads():
    # The tiny budgets train with train.threads=1, which sets torch's global thread count.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli_x(cli):  # kept as a name: the tests read "cli_x(...)"
    return cli


def check_files(result: dict, out) -> dict:
    for name in ("results.json", "results.md", "plot.png"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp*"))  # atomic writes leave no temp files behind
    saved = json.loads((out / "results.json").read_text())
    assert saved["study"] == result["study"] and saved["budget"] == "tiny"
    assert result["table_md"] in (out / "results.md").read_text()
    assert "![plot](plot.png)" in (out / "results.md").read_text()
    assert saved["machine"] and saved["date"] and saved["torch"] == torch.__version__
    return saved


def history(out, arm) -> list[dict]:
    return [json.loads(line) for line in (out / "runs" / arm / "metrics.jsonl").read_text().splitlines()]


def test_registry_lists_every_study():
    assert list_studies() == ["relu-vs-tanh", "ablations", "batch-size", "complexity", "simplify", "lenet"]
    for name in list_studies():
        module = alexnet.experiments.get_study(name)
        assert {"tiny", "small", "full"} == set(module.BUDGETS), name


# --- models ------------------------------------------------------------------------------------------------------

def test_lenet_is_the_books():
    model = alexnet.create_model("lenet").eval()
    assert sum(p.numel() for p in model.parameters()) == 61_706  # d2l 6.6: 156 + 2,416 + 48,120 + 10,164 + 850
    x, shapes = torch.randn(1, 1, 28, 28), []
    for layer in [*model.features, model.flatten, *model.classifier]:
        x = layer(x)
        shapes.append((type(layer).__name__, tuple(x.shape[1:])))
    assert shapes == [("Conv2d", (6, 28, 28)), ("Sigmoid", (6, 28, 28)), ("AvgPool2d", (6, 14, 14)),
                      ("Conv2d", (16, 10, 10)), ("Sigmoid", (16, 10, 10)), ("AvgPool2d", (16, 5, 5)),
                      ("Flatten", (400,)), ("Linear", (120,)), ("Sigmoid", (120,)), ("Linear", (84,)),
                      ("Sigmoid", (84,)), ("Linear", (10,))]


def test_lenet_options():
    model = alexnet.create_model("lenet", activation="relu", pooling="max", dropout=0.5, in_channels=3,
                                 input_size=32, num_classes=7)
    kinds = [type(m).__name__ for m in model.modules()]
    assert kinds.count("ReLU") == 4 and kinds.count("MaxPool2d") == 2 and kinds.count("Dropout") == 2
    assert model.num_features == 16 * 6 * 6 and model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(AlexNetError, match="pooling"):
        alexnet.create_model("lenet", pooling="median")
    with pytest.raises(AlexNetError, match="too small"):
        alexnet.create_model("lenet", input_size=8)


def test_cifar4_has_four_weight_layers():
    model = alexnet.create_model("cifar4")
    weights = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [type(m).__name__ for m in weights] == ["Conv2d"] * 3 + ["Linear"]
    assert model.num_features == 64 * 4 * 4  # 32 -> 16 -> 8 -> 4
    conv = lambda cin, cout: cout * cin * 25 + cout  # noqa: E731
    assert sum(p.numel() for p in model.parameters()) == conv(3, 32) + conv(32, 32) + conv(32, 64) + 1024 * 10 + 10
    assert alexnet.create_model("cifar4", in_channels=1, input_size=28).num_features == 64 * 4 * 4  # 28->14->7->4


# --- studies -----------------------------------------------------------------------------------------------------

def test_relu_vs_tanh(tmp_path, data_dir):
    out = tmp_path / "study"
    result = run_study("relu-vs-tanh", out, "tiny", "cpu", data_dir)
    saved = check_files(result, out)
    summary = saved["summary"]
    assert summary["target_train_error"] == 0.5
    assert {a["activation"] for a in summary["arms"].values()} == {"relu", "tanh"}
    for name, arm in summary["arms"].items():
        records = history(out, name)
        errors = [1 - r["train_acc"] for r in records]
        assert arm["train_error"] == [round(e, 4) for e in errors]
        assert errors[-1] < errors[0]  # both nets learn
        epochs, steps = arm["epochs_to_target"], arm["steps_to_target"]
        first = next(r for r in records if 1 - r["train_acc"] <= 0.5)  # the bars are easy: both reach 50%
        # 512 images, a tenth (51) held out for validation: 461 train, 7 full batches of 64 per epoch
        assert (epochs, steps) == (first["epoch"], first["step"]) and steps == epochs * (461 // 64)
    relu, tanh = (summary["arms"][summary["fastest_arm"][a]]["steps_to_target"] for a in ("relu", "tanh"))
    assert summary["steps_ratio_tanh_over_relu"] == round(tanh / relu, 3)
    config = yaml.safe_load((out / "runs" / "tanh-lr0.01" / "config.yaml").read_text())
    assert config["model"] == {"name": "cifar4", "activation": "tanh"}
    assert config["optim"]["weight_decay"] == 0.0 and config["data"]["train_augment"] == []


def test_rerun_skips_finished_arms_and_refuses_another_budget(tmp_path, data_dir):
    out = tmp_path / "study"
    run_study("lenet", out, "tiny", "cpu", data_dir)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/checkpoint.pt")}
    again = run_study("lenet", out, "tiny", "cpu", data_dir)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing trained again
    assert [a["history"] for a in again["arms"]] == [history(out, a["name"]) for a in again["arms"]]
    with pytest.raises(AlexNetError, match="holds the 'lenet' study at budget 'tiny'"):
        run_study("lenet", out, "small", "cpu", data_dir)
    with pytest.raises(AlexNetError, match="holds the 'lenet' study"):
        run_study("ablations", out, "tiny", "cpu", data_dir)


def test_lenet_arms_differ(tmp_path, data_dir):
    out = tmp_path / "study"
    saved = check_files(run_study("lenet", out, "tiny", "cpu", data_dir), out)
    rows = saved["summary"]["rows"]
    assert [r["arm"] for r in rows] == ["lenet5", "relu", "relu-maxpool-dropout"]
    models = [yaml.safe_load((out / "runs" / r["arm"] / "config.yaml").read_text())["model"] for r in rows]
    assert models == [{"name": "lenet"}, {"name": "lenet", "activation": "relu"},
                      {"name": "lenet", "activation": "relu", "pooling": "max", "dropout": 0.5}]
    curves = [tuple(h["train_loss"] for h in history(out, r["arm"])) for r in rows]
    assert len(set(curves)) == 3  # three different nets, three different trajectories
    for r in rows:
        assert 0 <= r["test_acc"] <= 1 and 0 <= r["train_acc_eval"] <= 1
        assert r["gap"] == pytest.approx(r["train_acc_eval"] - r["test_acc"], abs=1e-4)
        assert r["test_acc"] == history(out, r["arm"])[-1]["test_acc"]


def test_complexity_accounts_for_every_parameter(tmp_path):
    out = tmp_path / "study"
    saved = check_files(run_study("complexity", out, "tiny"), out)
    models = {m["model"]: m for m in saved["summary"]["models"]}
    d2l = models["d2l"]
    assert d2l["total_params"] == 46_764_746 == d2l["layer_params_sum"]
    for m in models.values():
        assert sum(layer["params"] for layer in m["layers"]) == m["total_params"]
        assert sum(s["params"] for s in m["stages"]) == m["total_params"]
        assert sum(b["flops"] for b in m["blocks"].values()) == m["total_flops"]
        assert sum(b["activation_bytes"] for b in m["blocks"].values()) == m["activation_bytes"]
        assert [s["stage"] for s in m["stages"]] == [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7", "fc8"]
    conv, fc = d2l["blocks"]["conv"], d2l["blocks"]["fc"]
    assert conv["flops"] > 10 * fc["flops"] and fc["params"] > 10 * conv["params"]  # the well-known split
    assert fc["flops_per_weight_byte"] == 0.5  # 2 FLOPs per 4-byte weight at batch 1
    # conv1 at 224: 96 x 54 x 54 outputs x 121 taps x 2 FLOPs
    assert d2l["stages"][0]["flops"] == 96 * 54 * 54 * 121 * 2
    assert saved["table"]["rows"][0][:3] == ["d2l", "conv", conv["params"]]


def test_ablations(tmp_path, data_dir):
    out = tmp_path / "study"
    saved = check_files(run_study("ablations", out, "tiny", "cpu", data_dir), out)
    rows = {r["arm"]: r for r in saved["summary"]["rows"]}
    assert list(rows) == ["baseline", "no-dropout", "no-lrn", "non-overlapping-pool", "no-augment", "no-conv3",
                          "mean-image", "mean-image-no-lrn"]
    assert any("PCA lighting needs RGB" in n for n in saved["notes"])
    config = lambda arm: yaml.safe_load((out / "runs" / arm / "config.yaml").read_text())  # noqa: E731
    assert config("baseline")["model"]["dropout"] == 0.5 and config("baseline")["model"]["lrn"] is True
    assert config("no-dropout")["model"]["dropout"] == 0.0 and config("no-lrn")["model"]["lrn"] is False
    assert config("no-augment")["data"]["train_augment"] == [] and config("no-conv3")["model"]["remove_conv"] == 3
    for arm, lrn in (("mean-image", True), ("mean-image-no-lrn", False)):
        assert config(arm)["data"]["normalize"] == "mean_image" and config(arm)["model"]["lrn"] is lrn
        assert config(arm)["optim"]["lr"] == pytest.approx(config("baseline")["optim"]["lr"] / 25)
    assert config("baseline")["data"]["normalize"] == "standardize"
    for r in rows.values():
        assert 0 <= r["test_error"] <= 1 and 0 <= r["train_error_eval"] <= 1
        assert r["gap"] == pytest.approx(r["test_error"] - r["train_error_eval"], abs=1e-4)
        assert r["delta_test_error"] == pytest.approx(r["test_error"] - rows["baseline"]["test_error"], abs=1e-4)


def test_batch_size_measures_memory_per_arm(tmp_path, data_dir):
    out = tmp_path / "study"
    saved = check_files(run_study("batch-size", out, "tiny", "cpu", data_dir), out)
    rows = saved["summary"]["rows"]
    assert [r["batch_size"] for r in rows] == [16, 64]
    # one epoch of the 461 images left after the validation hold-out, last partial batch dropped
    assert [r["steps"] for r in rows] == [461 // 16, 461 // 64]
    for r in rows:
        assert "ru_maxrss" in r["memory_kind"] and 0 < r["peak_memory_mib"] < 4096
        assert r["images_per_sec"] > 0 and 0 <= r["test_acc"] <= 1
        assert json.loads((out / "runs" / f"batch-{r['batch_size']}" / "memory.json").read_text())["peak_bytes"] > 0
        config = yaml.safe_load((out / "runs" / f"batch-{r['batch_size']}" / "config.yaml").read_text())
        assert config["train"]["eval_batch_size"] == r["batch_size"] == config["train"]["batch_size"]


def test_simplify(tmp_path, data_dir):
    out = tmp_path / "study"
    saved = check_files(run_study("simplify", out, "tiny", "cpu", data_dir), out)
    rows = {r["arm"]: r for r in saved["summary"]["rows"]}
    assert list(rows) == ["small-w16", "small-w8"]
    w16, w8 = rows["small-w16"], rows["small-w8"]
    assert w16["params"] == sum(p.numel() for p in alexnet.create_model("small", width=16, hidden=128).parameters())
    assert w16["params"] > w8["params"] and w16["mflops"] > w8["mflops"] > 0
    for r in rows.values():
        assert r["accuracy_meaningful"] and r["images_per_sec"] > 0 and 0 <= r["test_acc"] <= 1


def test_small_budgets_are_fashion_mnist_and_small():
    """The `small` budget must stay runnable on two CPU cores: subsets, few epochs, 28 px nets."""
    from alexnet.experiments import ablations, batch_size, lenet, relu_vs_tanh, simplify
    from alexnet.experiments.common import arm_config

    for module in (ablations, batch_size, lenet, relu_vs_tanh, simplify):
        spec = module.BUDGETS["small"]
        for arm in module.arms(spec):
            cfg = arm_config(arm, spec["preset"], spec["common"], "cpu", None)
            assert cfg.data.dataset == "fashion-mnist", (module.NAME, arm.name)
            assert 0 < cfg.data.train_subset <= 30000 and cfg.train.epochs <= 8, (module.NAME, arm.name)
    full = relu_vs_tanh.BUDGETS["full"]
    cfg = arm_config(relu_vs_tanh.arms(full)[0], full["preset"], full["common"], "cpu", None)
    assert cfg.data.dataset == "cifar10" and cfg.model.name == "cifar4" and cfg.data.input_size == 32


@pytest.mark.parametrize("name", ["relu-vs-tanh", "ablations", "batch-size", "simplify", "lenet"])
def test_every_arm_of_every_budget_is_a_valid_config(name):
    """The `full` budgets cannot run here (GPU, CIFAR-10): at least every arm's config must validate."""
    from alexnet.data.run import validate
    from alexnet.experiments.common import arm_config

    module = alexnet.experiments.get_study(name)
    for budget, spec in module.BUDGETS.items():
        names = [arm.name for arm in module.arms(spec)]
        assert len(names) == len(set(names)) >= 2, (budget, names)
        for arm in module.arms(spec):
            validate(arm_config(arm, spec["preset"], spec["common"], "auto", None))


@pytest.mark.parametrize("runner", ["in-process", "fresh-process"])
def test_a_diverged_arm_is_a_result_not_a_crash(tmp_path, data_dir, capsys, runner):
    from alexnet.experiments.batch_size import measured_run
    from alexnet.experiments.common import DIVERGED, Arm, run_arm, run_arms

    run = {"in-process": run_arm, "fresh-process": measured_run}[runner]  # batch-size trains in a fresh process

    common = {"data.train_subset": 128, "data.test_subset": 64, "train.epochs": 1, "train.batch_size": 32,
              "model.width": 8, "model.hidden": 32, "train.threads": 1}
    arms = [Arm("boom", {"optim.lr": 1e6, "optim.warmup_epochs": 0.0}), Arm("fine", {"optim.lr": 0.01})]
    first = run_arms(tmp_path, "t", arms, preset="quick", common=common, device="cpu", data_dir=data_dir,
                     runner=run)
    assert first[0].error.startswith("diverged: loss is not finite") and first[1].error is None
    assert len(first[1].history) == 1 and (tmp_path / "runs" / "boom" / DIVERGED).exists()
    again = run_arms(tmp_path, "t", arms, preset="quick", common=common, device="cpu", data_dir=data_dir,
                     runner=run)
    assert again[0].error == first[0].error and again[1].history == first[1].history
    assert "[t] 1/2 boom: diverged" in capsys.readouterr().err


def test_unknown_budget_and_study():
    with pytest.raises(AlexNetError, match="unknown budget 'huge'"):
        run_study("lenet", "unused", "huge")
    with pytest.raises(AlexNetError, match="unknown study 'vgg'"):
        run_study("vgg", "unused")


# --- command line ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["experiment", "vgg", "--out", "x"], "invalid choice: 'vgg'"),
    (["experiment", "lenet", "--out", "x", "--budget", "huge"], "invalid choice: 'huge'"),
    (["experiment", "lenet"], "--out"),
])
def test_cli_errors_are_one_line(cli_x, argv, message):
    code, out, err = cli_x(*argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_cli_refuses_a_folder_of_another_study(cli_x, tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"study": "lenet", "budget": "small"}))
    code, out, err = cli_x("experiment", "complexity", "--out", tmp_path, "--budget", "tiny")
    assert code == 2 and err.count("\n") == 1 and "holds the 'lenet' study" in err


def test_cli_runs_a_study(cli_x, tmp_path):
    code, out, err = cli_x("experiment", "complexity", "--out", tmp_path / "c", "--budget", "tiny")
    assert code == 0, err
    assert str(tmp_path / "c" / "results.md") in out and str(tmp_path / "c" / "plot.png") in out
    assert "| d2l | fc | 43,040,778 |" in out
    saved = json.loads((tmp_path / "c" / "results.json").read_text())
    assert all(math.isfinite(v) for row in saved["table"]["rows"] for v in row if isinstance(v, (int, float)))
