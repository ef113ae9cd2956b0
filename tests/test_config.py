"""The typed config (alexnet.config): coercion of YAML and command-line values, validation, presets, files."""

import pytest
import yaml

from alexnet.base.errors import AlexNetError
from alexnet.config import (
    Config,
    apply_overrides,
    build_model,
    check,
    list_presets,
    load_config,
    load_preset,
    resolve,
    save_config,
)
from alexnet.data.run import validate


@pytest.mark.parametrize("key,value,expected", [
    ("optim.lr", "5e-4", 5e-4),            # YAML 1.1 reads 5e-4 (no dot) as a string
    ("optim.lr", 1, 1.0),                  # an int where a float goes
    ("train.epochs", 3.0, 3),              # an integral float where an int goes
    ("train.epochs", "7", 7),
    ("data.data_dir", None, None),         # str | None
    ("data.data_dir", 12, "12"),
    ("optim.nesterov", True, True),
    ("train.channels_last", "auto", "auto"),  # bool | str: true, false or auto
    ("train.channels_last", False, False),
    ("data.train_augment", [{"op": "hflip"}], [{"op": "hflip"}]),
])
def test_values_are_coerced_to_the_field_type(key, value, expected):
    cfg = apply_overrides(Config(), {key: value})
    section, name = key.split(".")
    got = getattr(getattr(cfg, section), name)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("key,value,message", [
    ("train.epochs", 2.5, "train.epochs must be int, got 2.5"),
    ("train.epochs", True, "train.epochs must be int, got True"),  # a bool is not a count
    ("optim.lr", False, "optim.lr must be float"),
    ("optim.nesterov", "yes", "optim.nesterov must be bool"),
    ("train.channels_last", "sometimes", "train.channels_last must be true, false or auto"),
    ("data.train_augment", {"op": "hflip"}, "data.train_augment must be list"),
    ("data.data_dir", ["a"], "data.data_dir must be str"),
    ("optim.lrr", 0.1, "unknown config key 'optim.lrr'"),
    ("loss.kind", "ce", "unknown config key 'loss.kind'"),
])
def test_bad_values_are_one_line_errors(key, value, message):
    with pytest.raises(AlexNetError) as info:
        apply_overrides(Config(), {key: value})
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("override,message", [
    ({"optim.lr": 0.0}, "optim.lr must be > 0"),
    ({"optim.momentum": 1.0}, "optim.momentum must be in [0, 1)"),
    ({"optim.nesterov": True, "optim.momentum": 0.0}, "optim.nesterov needs optim.momentum > 0"),
    ({"optim.final_lr_fraction": 1.5}, "optim.final_lr_fraction must be in [0, 1]"),
    ({"train.precision": "fp8"}, "train.precision must be one of auto, fp32, tf32, bf16, fp16"),
    ({"train.device": "tpu"}, "train.device must be auto, cpu, cuda or cuda:N"),
    ({"data.dataset": "mnist"}, "data.dataset must be one of fashion-mnist, cifar10, folder"),
    ({"model.input_size": 64}, "model.input_size follows the data section"),
    ({"model.num_classes": 5}, "model.num_classes follows the data section"),
    ({"model.dropout": 1.0}, "dropout must be in [0, 1)"),
    ({"data.input_size": 8, "model.name": "d2l"}, "is too small"),
])
def test_check_refuses_before_any_work(override, message):
    cfg = apply_overrides(load_preset("quick"), override)
    with pytest.raises(AlexNetError) as info:
        check(cfg)
    assert message in str(info.value)


def test_validate_adds_the_data_section():
    cfg = apply_overrides(load_preset("quick"), {"data.train_augment": [{"op": "pca_lighting"}]})
    check(cfg)  # the config itself is fine...
    with pytest.raises(AlexNetError, match="needs RGB images"):  # ...but Fashion-MNIST has one channel
        validate(cfg)


def test_every_preset_loads_and_checks():
    assert list_presets() == ["cifar10", "d2l", "d2l-fast", "fast", "paper", "quick"]
    for name in list_presets():
        cfg = validate(load_preset(name))
        assert cfg.preset == name and cfg.train.precision == "auto"


def test_another_model_keeps_only_the_options_it_has():
    cfg = apply_overrides(load_preset("quick"), {"model.name": "d2l"})  # quick sets width and hidden (small's)
    assert cfg.model.name == "d2l" and cfg.model.options == {"dropout": 0.1, "init": "xavier"}


def test_build_model_follows_the_data_section():
    cfg = apply_overrides(load_preset("cifar10"), {"data.input_size": 28})
    model = build_model(cfg)
    assert model.features[0].in_channels == 3 and model.classifier[-1].out_features == 10
    assert build_model(cfg, num_classes=7).classifier[-1].out_features == 7


def test_saved_config_round_trips(tmp_path):
    cfg = apply_overrides(load_preset("d2l-fast"), {"optim.lr": 0.05, "model.dropout": 0.3})
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"] == {"name": "d2l", "dropout": 0.3}


def test_resume_without_a_preset_reads_the_run_config(tmp_path):
    save_config(apply_overrides(load_preset("quick"), {"optim.lr": 0.07}), tmp_path / "config.yaml")
    cfg = resolve(None, {"train.epochs": 9}, out=tmp_path, resume=True)
    assert (cfg.preset, cfg.optim.lr, cfg.train.epochs) == ("quick", 0.07, 9)
    with pytest.raises(AlexNetError, match="name a preset with --preset"):
        resolve(None, {}, out=tmp_path / "elsewhere", resume=True)


@pytest.mark.parametrize("data,message", [
    ([1, 2], "a config is a mapping of sections"),
    ({"model": [1]}, "config section model must be a mapping"),
    ({"extra": {}}, "unknown config section extra"),
])
def test_broken_config_mappings(data, message):
    with pytest.raises(AlexNetError, match=message):
        Config.from_dict(data)
