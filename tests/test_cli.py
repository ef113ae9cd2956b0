"""The `alexnet` command itself: it parses before torch loads (--help, --version and usage errors never import
it), every option says what it does, the names it takes come with a "did you mean", and `alexnet list` answers
from the code (config dataclasses, registries, PRECISIONS)."""

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest

from alexnet.cli import build_parser
from alexnet.cli.args import preset_names
from alexnet.config import Config, list_presets
from alexnet.experiments import list_studies
from alexnet.models import list_models
from alexnet.runtime.precision import PRECISIONS

# Runs in a fresh interpreter: every command's --help, --version and three usage errors, then reports what loaded.
PROBE = """
import argparse, json, sys
from alexnet.cli import build_parser, main
sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
runs = [["--help"], ["--version"]] + [[name, "--help"] for name in sub.choices] + [
    ["visualize", "filters", "--help"], ["visualize", "neighbours", "--help"],
    ["eval"], ["predict", "--checkpoint", "ck.pt"], ["list", "everything"], ["summary", "--input", "1,2"]]
codes = []
for argv in runs:
    try:
        codes.append(main(argv))
    except SystemExit as exit_:
        codes.append(exit_.code)
print(json.dumps({"codes": codes, "commands": list(sub.choices),
                  "heavy": sorted(m for m in ("torch", "numpy", "matplotlib") if m in sys.modules)}))
"""


def test_help_version_and_usage_errors_never_import_torch():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    helps = 2 + len(report["commands"]) + 2
    assert report["codes"] == [0] * helps + [2, 2, 2, 2]
    assert report["heavy"] == []
    assert set(report["commands"]) == {"summary", "train", "eval", "predict", "export", "augment", "prepare",
                                       "bench", "experiment", "visualize", "list"}
    # the usage errors are argparse's one line each, after the help pages
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 4 and "the following arguments are required: --checkpoint" in errors[0]


def test_import_alexnet_is_light_and_its_names_load_on_first_use():
    code = ("import sys, alexnet; light = 'torch' not in sys.modules; from alexnet import train, create_model; "
            "import alexnet.api, alexnet.models; "
            "print(light, train is alexnet.api.train, alexnet.create_model is alexnet.models.create_model, "
            "'fit' in dir(alexnet))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["True", "True", "True", "True"], proc.stderr[-2000:]
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        import alexnet
        alexnet.trian  # noqa: B018


def parsers(parser: argparse.ArgumentParser, prog: str = "alexnet"):
    """(prog, parser) for the parser and every subcommand's, at any depth."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, f"{prog} {name}")


def test_every_option_and_positional_says_what_it_does():
    missing = []
    for prog, parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or "--version" in action.option_strings:
                continue
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{prog} {a.dest}" for a in action._choices_actions if not a.help]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{prog} {'/'.join(action.option_strings) or action.metavar or action.dest}")
    assert not missing, "no help text: " + ", ".join(missing)
    assert len(list(parsers(build_parser()))) == 14  # the top, 11 commands, visualize's two


def test_version_names_alexnet_and_torch(cli):
    import torch

    import alexnet
    code, out, _ = cli("--version")
    assert code == 0 and out == f"alexnet {alexnet.__version__} (torch {torch.__version__})\n"  # +cu130 included


def test_the_help_lists_the_presets_without_torch():
    assert preset_names() == list_presets()


def test_train_help_points_to_the_keys_and_list_keys_gives_type_default_and_meaning(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the meanings are wrapped to the terminal: one line each here
    code, out, _ = cli("train", "--help")
    assert code == 0 and "`alexnet list keys` prints every key with its type, default and meaning" in out
    code, out, _ = cli("list", "keys")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    cfg = Config()
    for section in ("data", "optim", "train"):
        for f in dataclasses.fields(getattr(cfg, section)):
            assert f"{section}.{f.name}" in rows, f"{section}.{f.name} is not listed"
    assert rows["optim.lr"][1:4] == ["float", "0.01", "peak"]
    assert rows["data.data_dir"][1:5] == ["str", "|", "None", "None"]
    assert rows["train.batch_size"][1:3] == ["int", "128"]
    assert f"one of {', '.join(PRECISIONS)}" in " ".join(rows["train.precision"])  # the tuple itself, tf32 included
    assert f"one of {', '.join(list_models())}" in out
    assert rows["model.width"][1:] == ["int"] + ["-" if m != "small" else "32" for m in list_models()]
    code, out, _ = cli("list", "keys", "--model", "lenet")
    assert code == 0 and rows_of(out)["model.pooling"] == ["model.pooling", "str", "'avg'"]


def rows_of(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("  ")}


@pytest.mark.parametrize("what,names", [("models", list_models()), ("presets", list_presets()),
                                        ("studies", list_studies())])
def test_list_names_what_the_commands_take(cli, what, names):
    code, out, _ = cli("list", what)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:len(names) + 1]] == names


def test_list_precisions_and_what_auto_picks_here(cli):
    import torch
    code, out, _ = cli("list", "precisions")
    assert code == 0 and out.splitlines()[0] == ", ".join(PRECISIONS)
    assert out.splitlines()[1].startswith(f"auto on this machine ({'cuda' if torch.cuda.is_available() else 'cpu'}): ")


def test_list_ops_is_the_pipelines_registry(cli):
    from alexnet.data.pipeline import Stats, build_pipeline, list_ops
    code, out, _ = cli("list", "ops")
    rows = out.splitlines()[1:len(list_ops()) + 1]
    assert code == 0 and [row.split()[0] for row in rows] == list_ops()
    erasing = next(row for row in rows if row.startswith("random_erasing "))
    assert erasing.split(None, 1)[1] == "p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0"
    assert build_pipeline([{"op": "random_erasing"}], input_size=28, stats=Stats((0.5,), (0.25,))).steps == [
        ("random_erasing", {"p": 0.5, "scale": (0.02, 0.33), "ratio": (0.3, 3.3), "value": 0.0})]


@pytest.mark.parametrize("argv,message", [
    (["train", "--preset", "quik", "--out", "unused"], "unknown preset 'quik'; did you mean quick? choose from"),
    (["train", "--preset", "quick", "--out", "unused", "--set", "model.name=smal"],
     "unknown model 'smal'; did you mean small? choose from"),
    (["summary", "--model", "vgg"], "unknown model 'vgg'; choose from cifar4, d2l"),
    (["summary", "--model", "d2"], "did you mean d2l?"),
    (["bench", "--model", "papr"], "did you mean paper?"),
    (["experiment", "relu-vs-tan", "--out", "unused"], "unknown study 'relu-vs-tan'; did you mean relu-vs-tanh?"),
    (["experiment", "ablations", "--out", "unused", "--budget", "smal"], "did you mean small?"),
    (["eval", "--checkpoint", "unused.pt", "--precision", "fp23"], "did you mean fp32?"),
    (["predict", "--checkpoint", "unused.pt", "--precision", "bf", "a.png"], "unknown precision 'bf'; "),
    (["augment", "--out", "unused.png", "--dataset", "cifar"], "unknown dataset 'cifar'; did you mean cifar10?"),
    (["list", "presets", "--model", "d2l"], "--model goes with `alexnet list keys`"),
    (["list", "keys", "--model", "lenet5"], "did you mean lenet?"),
])
def test_a_near_miss_is_named(cli, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*argv)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert message in err, err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
