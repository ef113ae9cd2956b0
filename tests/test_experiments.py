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
        assert module.CLAIM.startswith(("Paper section", "d2l 7.1, exercise")), name  # the source, then its claim


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

def batch_accuracies(out, arm: str, per_epoch: int) -> list[float]:
    """Each step's training-batch accuracy, from the epoch-so-far accuracy steps.jsonl holds after every step."""
    records = [json.loads(line) for line in (out / "runs" / arm / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))  # train.log_every_steps = 1
    so_far = [r["acc"] * (r["step"] - (r["epoch"] - 1) * per_epoch) for r in records]  # correct / batch size
    return [so_far[i] - (so_far[i - 1] if i % per_epoch else 0.0) for i in range(len(so_far))]


def test_relu_vs_tanh_measures_steps_finer_than_an_epoch_and_relu_first(tmp_path, data_dir):
    out = tmp_path / "study"
    result = run_study("relu-vs-tanh", out, "tiny", "cpu", data_dir)
    saved = check_files(result, out)
    summary = saved["summary"]
    assert saved["claim"].startswith("Paper section 3.1, Fig. 1") and "six times faster" in saved["claim"]
    assert result["table_md"].startswith("Claim: Paper section 3.1") and summary["verdict"] in result["table_md"]
    assert (summary["target_train_error"], summary["window_steps"]) == (0.2, 5)
    per_epoch = 461 // 32  # 512 images, a tenth (51) held out for validation: 14 full batches of 32 an epoch
    for name, arm in summary["arms"].items():
        assert (arm["steps_per_epoch"], arm["steps_run"]) == (per_epoch, 4 * per_epoch)
        batches = batch_accuracies(out, name, per_epoch)
        for k, acc in enumerate(batches):  # a whole number of correct images out of 32: the differences are exact
            assert acc * 32 == pytest.approx(round(acc * 32), abs=1e-6) and 0 <= acc <= 1, k
        for epoch in history(out, name):  # the steps' batches make up each epoch's average
            assert sum(batches[(epoch["epoch"] - 1) * per_epoch:epoch["step"]]) / per_epoch == pytest.approx(
                epoch["train_acc"], abs=1e-9)
        # a point per step once 5 steps are behind it, not one per epoch: the error of the last 5 batches
        assert [step for step, _ in arm["curve"]] == list(range(5, 4 * per_epoch + 1))
        assert [err for _, err in arm["curve"]] == pytest.approx(
            [1 - sum(batches[s - 5:s]) / 5 for s in range(5, 4 * per_epoch + 1)], abs=1e-4)
        first = next((step for step, err in arm["curve"] if err <= 0.2), None)
        assert arm["steps_to_target"] == first
        assert arm["best_window_error"] == min(err for _, err in arm["curve"])
    # The direction of Fig. 1, at one learning rate for both (0.001), the paper's inputs (pixels minus the mean
    # image) and init (N(0, 0.01)): on these images ReLU reached 20% at steps 21-27 with seeds 0-4 on the
    # development Xeon, while tanh never did within its 56 steps (best windowed error 0.21-0.39). Another CPU's
    # kernels change sums in their last bits, far less than another seed does, so the test asks only for
    # tanh / ReLU >= 1.5 (measured: > 2 for every seed). With each net at its own best rate the gap is much smaller
    # (docs/experiments.md), so this is the setting where the claim's direction is large enough to test.
    relu, tanh = summary["arms"]["relu-lr0.001"], summary["arms"]["tanh-lr0.001"]
    assert summary["fastest_arm"] == {"relu": "relu-lr0.001", "tanh": "tanh-lr0.001"}
    assert relu["steps_to_target"] is not None
    if tanh["steps_to_target"] is None:  # it needs more than every step it ran: a lower bound on the ratio
        ratio = summary["steps_ratio_lower_bound"]
        assert summary["steps_ratio_tanh_over_relu"] is None and "tanh never did in 56 steps" in summary["verdict"]
        assert ratio == round(56 / relu["steps_to_target"], 2)
    else:
        ratio = summary["steps_ratio_tanh_over_relu"]
        assert ratio == round(tanh["steps_to_target"] / relu["steps_to_target"], 2)
    assert ratio >= 1.5
    config = yaml.safe_load((out / "runs" / "tanh-lr0.001" / "config.yaml").read_text())
    assert config["model"] == {"name": "cifar4", "activation": "tanh", "init": "paper"}
    assert config["optim"]["weight_decay"] == 0.0 and config["data"]["train_augment"] == []
    assert config["data"]["normalize"] == "mean_image" and config["train"]["precision"] == "fp32"


def test_relu_vs_tanh_windows_uneven_records():
    """The full budget logs every 5 steps and at epoch ends: intervals of unequal length, an epoch boundary inside
    a window, and a record of an epoch whose start is unknown (skipped)."""
    from alexnet.experiments.relu_vs_tanh import blocks, reach, windowed_error

    # batch accuracies by step: 0, 0, 1, 1 | 1, 0, 1, 1 (4 steps an epoch; records at steps 3, 4, 6, 8)
    steps = [{"step": 3, "epoch": 1, "acc": 1 / 3}, {"step": 4, "epoch": 1, "acc": 0.5},
             {"step": 6, "epoch": 2, "acc": 0.5}, {"step": 8, "epoch": 2, "acc": 0.75},
             {"step": 10, "epoch": 4, "acc": 1.0}]
    history = [{"epoch": 1, "step": 4}, {"epoch": 2, "step": 8}]
    intervals = blocks(steps, history)
    assert [(s, n) for s, n, _ in intervals] == [(3, 3), (4, 1), (6, 2), (8, 2)]
    assert [c for _, _, c in intervals] == pytest.approx([1.0, 1.0, 1.0, 2.0])
    curve = windowed_error(intervals, 4)  # step 3 has only 3 steps behind it; step 6 takes 6 (whole intervals)
    assert curve == [(4, 0.5), (6, 0.5), (8, 0.25)]
    assert (reach(curve, 0.3), reach(curve, 0.5), reach(curve, 0.1)) == (8, 4, None)


def test_relu_vs_tanh_verdicts():
    from alexnet.experiments.relu_vs_tanh import fastest, verdict

    arm = lambda act, lr, steps, best: {"activation": act, "lr": lr, "steps_to_target": steps,  # noqa: E731
                                        "best_window_error": best, "best_at_step": 90, "steps_run": 100}
    arms = {"relu-a": arm("relu", 0.01, None, 0.3), "relu-b": arm("relu", 0.003, 40, 0.1),
            "tanh-a": arm("tanh", 0.01, None, 0.25), "tanh-b": arm("tanh", 0.03, None, 0.22)}
    assert fastest(arms) == {"relu": "relu-b", "tanh": "tanh-b"}  # reached first; else the lowest error
    text = verdict(arms["relu-b"], arms["tanh-b"], None, 2.5, 0.2)
    assert text == ("first to 20% windowed training error: relu (lr 0.003) at step 40; tanh never did in 100 steps "
                    "(best 0.22 at step 90). tanh / ReLU > 2.5 (the paper: about 6)")
    assert verdict(arms["relu-a"], arms["tanh-a"], None, None, 0.2).endswith("No ratio: ReLU did not reach the target")


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
    assert cfg.data.normalize == "mean_image" and cfg.model.options["init"] == "paper" and cfg.data.train_augment == []


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
    (["experiment", "vgg", "--out", "x"], "unknown study 'vgg'; choose from relu-vs-tanh, ablations"),
    (["experiment", "lenet", "--out", "x", "--budget", "huge"], "unknown budget 'huge'; choose from small, full"),
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
    assert "Claim: d2l 7.1, exercise 4" in out and "164 MB of memory and 81 MFLOPs" in out  # the claim it tests
    saved = json.loads((tmp_path / "c" / "results.json").read_text())
    assert all(math.isfinite(v) for row in saved["table"]["rows"] for v in row if isinstance(v, (int, float)))
