"""Every bad input a user can type, across every command: exit code 2, one line on stderr, no traceback, and the
files of an existing run folder unchanged (hashed before and after). One row per case; `setup` makes what the
case needs (a garbage checkpoint, a huge image ...) and returns the arguments."""

import errno
import hashlib
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import write_fashion_mnist

from alexnet.base import files as files_mod
from alexnet.config import apply_overrides, load_preset
from alexnet.training.guards import Interrupted
from alexnet.training.run import train

TINY = {"model.width": 8, "model.hidden": 32, "train.batch_size": 32, "train.epochs": 1, "train.threads": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished tiny run, its data, and a scratch folder; the run folder must never change."""
    root = tmp_path_factory.mktemp("bad")
    data = write_fashion_mnist(root / "data")
    train(apply_overrides(load_preset("quick"), {**TINY, "data.data_dir": str(data)}), root / "run", quiet=True)
    (root / "a-file").write_text("not a folder")
    (root / "empty").mkdir()
    (root / "garbage.pt").write_bytes(b"this is not a checkpoint at all")
    torch.save({"model": Evil()}, root / "evil.pt")  # unpickling would call os.system
    (root / "text.png").write_text("not an image")
    Image.fromarray(np.zeros((8200, 8200), dtype=np.uint8)).save(root / "huge.png")  # 67 Mpx, over the limit
    (root / "dir.onnx").mkdir()
    return root


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def folder_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def ck(w):
    return str(w / "run" / "best.pt")


CASES = {
    # train: YAML, paths, data, sizes, resumption, concurrency
    "set-malformed-yaml": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--set", "optim.lr=[0.1"],
                           "is not valid YAML"),
    "set-python-tag": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--set",
                                  "optim.lr=!!python/object/apply:os.system ['echo no']"], "is not valid YAML"),
    "train-out-is-a-file": (lambda w: ["train", "--preset", "quick", "--out", w / "a-file", "--data-dir", w / "data"],
                            "is a file, not a folder"),
    "train-out-under-a-file": (lambda w: ["train", "--preset", "quick", "--out", w / "a-file" / "run",
                                          "--data-dir", w / "data"], "cannot create folder"),
    "train-out-not-writable": (lambda w: ["train", "--preset", "quick", "--out", "/sys/alexnet-run",
                                          "--data-dir", w / "data"], "cannot create folder /sys/alexnet-run"),
    "train-data-dir-missing": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--data-dir",
                                          w / "no-such-dir"], "does not exist"),
    "train-data-dir-empty": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--data-dir", w / "empty"],
                             "holds no Fashion-MNIST train files"),
    "train-input-too-small": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--set",
                                         "data.input_size=2"], "the smallest input it takes is 9 px"),
    "train-val-size-negative": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--set",
                                           "data.val_size=-1"], "data.val_size must be >= 0"),
    "train-normalize-unknown": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--set",
                                           "data.normalize=zscore"], "data.normalize must be one of"),
    "train-mean-image-with-clamping-op": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--set",
                                                     "data.normalize=mean_image", "--set",
                                                     "data.train_augment=[{op: gaussian_noise}]"], "clamps"),
    "train-init-from-missing": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--init-from",
                                           w / "nope.pt"], "train.init_from: no such file"),
    "train-init-from-garbage": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--data-dir", w / "data",
                                           "--init-from", w / "garbage.pt"], "not an alexnet checkpoint"),
    "train-existing-run": (lambda w: ["train", "--preset", "quick", "--out", w / "run", "--data-dir", w / "data"],
                           "already holds a run"),
    "train-resume-other-config": (lambda w: ["train", "--out", w / "run", "--resume", "--set",
                                             "optim.momentum=0.5"],
                                  "cannot resume: optim.momentum"),
    "train-batch-larger-than-data": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--data-dir",
                                                w / "data", "--batch-size", "100000"], "fewer than one batch"),
    "train-epochs-zero": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--epochs", "0"],
                          "train.epochs must be >= 1"),
    "train-unknown-preset": (lambda w: ["train", "--preset", "imagenet21k", "--out", w / "x"], "unknown preset"),
    "train-preset-typo": (lambda w: ["train", "--preset", "d2l_fast", "--out", w / "x"], "did you mean d2l-fast?"),
    "train-model-typo": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--set", "model.name=D2L"],
                         "unknown model 'D2L'"),
    "train-unknown-key": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--set", "optim.lrr=1"],
                          "unknown config key"),
    "train-bad-option-type": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--set",
                                         "model.two_column=maybe"], "two_column must be bool"),
    "train-negative-checkpoint-steps": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--set",
                                                   "train.checkpoint_every_steps=-1"], "must be >= 0"),
    # eval
    "eval-garbage-checkpoint": (lambda w: ["eval", "--checkpoint", w / "garbage.pt"], "not an alexnet checkpoint"),
    "eval-malicious-checkpoint": (lambda w: ["eval", "--checkpoint", w / "evil.pt"], "is refused"),
    "eval-checkpoint-is-a-folder": (lambda w: ["eval", "--checkpoint", w / "empty"], "it is a folder"),
    "eval-checkpoint-missing": (lambda w: ["eval", "--checkpoint", w / "nope.pt"], "no checkpoint at"),
    "eval-ten-crop-on-whole-images": (lambda w: ["eval", "--checkpoint", ck(w), "--ten-crop"],
                                      "trained on whole 28x28 images"),
    "eval-out-is-a-file": (lambda w: ["eval", "--checkpoint", ck(w), "--out", w / "a-file"], "is a file"),
    "eval-data-dir-missing": (lambda w: ["eval", "--checkpoint", ck(w), "--data-dir", w / "nope"], "does not exist"),
    "eval-data-dir-empty": (lambda w: ["eval", "--checkpoint", ck(w), "--data-dir", w / "empty"], "holds no"),
    "eval-batch-size-zero": (lambda w: ["eval", "--checkpoint", ck(w), "--batch-size", "0"], "--batch-size"),
    "eval-classes-differ": (lambda w: ["eval", "--checkpoint", fewer_classes(w)], "do not fit"),
    "eval-classes-renamed": (lambda w: ["eval", "--checkpoint", renamed_classes(w)],
                             "the test data has 10 classes (T-shirt/top, Trouser, Pullover, Dress, Coat ...) but the "
                             "model was trained on 10 (c0, c1, c2, c3, c4 ...)"),
    # predict
    "predict-image-missing": (lambda w: ["predict", "--checkpoint", ck(w), w / "nope.png"], "no such file"),
    "predict-image-too-large": (lambda w: ["predict", "--checkpoint", ck(w), w / "huge.png"], "over the limit"),
    "predict-not-an-image": (lambda w: ["predict", "--checkpoint", ck(w), w / "text.png"], "cannot decode"),
    "predict-garbage-checkpoint": (lambda w: ["predict", "--checkpoint", w / "garbage.pt", w / "text.png"],
                                   "not an alexnet checkpoint"),
    "predict-unknown-precision": (lambda w: ["predict", "--checkpoint", ck(w), "--precision", "int8", w / "x.png"],
                                  "unknown precision 'int8'"),
    "eval-precision-typo": (lambda w: ["eval", "--checkpoint", ck(w), "--precision", "fp61"], "did you mean fp16?"),
    # export
    "export-out-is-a-folder": (lambda w: ["export", "--checkpoint", ck(w), "--format", "onnx", "--out",
                                          w / "dir.onnx"], "is a folder"),
    "export-out-under-a-file": (lambda w: ["export", "--checkpoint", ck(w), "--format", "safetensors", "--out",
                                           w / "a-file" / "m.safetensors"], "a-file is a file, not a folder"),
    "export-onto-its-checkpoint": (lambda w: ["export", "--checkpoint", ck(w), "--format", "onnx", "--out", ck(w)],
                                   "best.pt: the file name must end in .onnx"),
    "export-over-its-checkpoint": (lambda w: ["export", "--checkpoint", onnx_named(w), "--format", "onnx", "--out",
                                              onnx_named(w)], "is the checkpoint being exported"),
    "export-suffix-of-another-format": (lambda w: ["export", "--checkpoint", ck(w), "--format", "safetensors",
                                                   "--out", w / "m.onnx"], "must end in .safetensors"),
    "export-onto-a-device": (lambda w: ["export", "--checkpoint", ck(w), "--format", "safetensors", "--out",
                                        "/dev/full"], "/dev/full is not a regular file"),
    "train-init-from-a-folder": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--init-from", w / "empty"],
                                 "is a folder, not a weights file"),
    "train-key-typo": (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--set", "train.epoch=3"],
                       "did you mean train.epochs?"),
    "export-malicious-checkpoint": (lambda w: ["export", "--checkpoint", w / "evil.pt", "--format", "onnx",
                                               "--out", w / "m.onnx"], "is refused"),
    # augment, visualize
    "augment-out-is-a-folder": (lambda w: ["augment", "--data-dir", w / "data", "--out", w / "empty"],
                                "is a folder"),
    "augment-out-no-image-suffix": (lambda w: ["augment", "--data-dir", w / "data", "--out", w / "grid.txt"],
                                    "must end in .png"),
    "visualize-out-is-a-folder": (lambda w: ["visualize", "filters", "--checkpoint", ck(w), "--out", w / "empty"],
                                  "is a folder"),
    "visualize-out-no-suffix": (lambda w: ["visualize", "neighbours", "--checkpoint", ck(w), "--out", w / "nbrs"],
                                "must end in .png"),
    # experiment, summary, bench
    "experiment-out-is-a-file": (lambda w: ["experiment", "complexity", "--out", w / "a-file"], "is a file"),
    "summary-option-malformed-yaml": (lambda w: ["summary", "--option", "lrn={a"], "is not valid YAML"),
    "summary-input-too-small": (lambda w: ["summary", "--model", "d2l", "--input", "1,32,32"], "too small"),
    "bench-unknown-precision": (lambda w: ["bench", "--model", "small", "--precision", "fp8"], "--precision"),
    "experiment-data-dir-missing": (lambda w: ["experiment", "relu-vs-tanh", "--budget", "tiny", "--out", w / "x",
                                               "--data-dir", w / "nope"], "does not exist"),
    "bench-data-dir-missing": (lambda w: ["bench", "--model", "small", "--steps", "1", "--warmup", "0",
                                          "--data-dir", w / "nope"], "does not exist"),
}


if not torch.cuda.is_available():
    CASES["train-cuda-without-gpu"] = (lambda w: ["train", "--preset", "quick", "--out", w / "x", "--device", "cuda"],
                                       "no CUDA device")


def onnx_named(w: Path) -> Path:
    """best.pt under a name that export's suffix check lets through: only the same-file check stops it."""
    path = w / "checkpoint-named.onnx"
    if not path.exists():
        path.write_bytes((w / "run" / "best.pt").read_bytes())
    return path


def renamed_classes(w: Path) -> Path:
    """best.pt with its 10 classes renamed: the model loads, but it was not trained on this dataset's classes."""
    path = w / "renamed-classes.pt"
    if not path.exists():
        state = torch.load(w / "run" / "best.pt", weights_only=True)
        state["classes"] = [f"c{i}" for i in range(len(state["classes"]))]
        torch.save(state, path)
    return path


def fewer_classes(w: Path) -> Path:
    """best.pt edited to list 3 classes: its 10-way head no longer fits the model its config describes."""
    path = w / "three-classes.pt"
    if not path.exists():
        state = torch.load(w / "run" / "best.pt", weights_only=True)
        state["classes"] = state["classes"][:3]
        torch.save(state, path)
    return path


def test_the_table_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, world, cli):
    make_args, message = CASES[case]
    before = folder_hashes(world / "run")
    code, out, err = cli(*make_args(world))
    assert code == 2, (code, err[-2000:])
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert "weights_only" not in err  # never torch's advice to turn the safe loader off
    assert folder_hashes(world / "run") == before
    assert not list((world / "run").glob(".*.tmp*"))
    assert not (world / "x").exists()  # a refused run leaves no folder and no record of a run that never was


def test_a_log_the_disk_refuses_is_one_line(world, cli, tmp_path):
    """steps.jsonl, appended to while training (here a folder in its place: EISDIR), fails like every write."""
    (tmp_path / "run" / "steps.jsonl").mkdir(parents=True)
    code, _, err = cli("train", "--preset", "quick", "--out", tmp_path / "run", "--data-dir", world / "data",
                       *[a for key, value in TINY.items() for a in ("--set", f"{key}={value}")], "--quiet")
    assert code == 2 and err.count("\n") == 1 and f"cannot write {tmp_path / 'run' / 'steps.jsonl'}" in err, err


def test_a_full_disk_is_one_line_and_leaves_the_run_as_it_was(world, cli, monkeypatch):
    """ENOSPC, simulated where every file is committed (os.replace in alexnet.base.files)."""
    before = folder_hashes(world / "run")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files_mod.os, "replace", full)
    code, _, err = cli("train", "--preset", "quick", "--out", world / "run", "--data-dir", world / "data",
                       "--resume", "--epochs", "2", "--set", "model.width=8", "--set", "model.hidden=32",
                       "--batch-size", "32", "--set", "train.threads=1")
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
    assert folder_hashes(world / "run") == before
    assert not list((world / "run").glob(".*.tmp*"))  # the temp files were removed


def test_a_full_disk_during_a_safetensors_export_is_one_line(world, cli, tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files_mod.os, "replace", full)
    code, _, err = cli("export", "--checkpoint", ck(world), "--format", "safetensors", "--out",
                       tmp_path / "m.safetensors")
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_study_says_how_to_continue_it_in_one_line(cli, tmp_path, monkeypatch):
    import alexnet.experiments  # the command imports run_study from here when it runs

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGINT, 105)
    monkeypatch.setattr(alexnet.experiments, "run_study", interrupted)
    code, _, err = cli("experiment", "ablations", "--out", tmp_path / "study")
    assert code == 130
    assert err == ("alexnet experiment: stopped by SIGINT after step 105; checkpoint written, run the same command "
                   "again to continue\n")


def test_a_reader_that_goes_away_is_not_a_traceback(tmp_path):
    """`alexnet summary | head -1`: the pipe's read end is closed before the command writes (closed before it
    starts, so that nothing depends on timing)."""
    read, write = os.pipe()
    os.close(read)
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as usual
        proc = subprocess.run([sys.executable, "-m", "alexnet", "summary", "--model", "d2l"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120, env=env)
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_the_malicious_checkpoint_never_ran(world, tmp_path):
    """Loading it through the CLI in a fresh process prints the refusal, and its payload's output never appears."""
    proc = subprocess.run([sys.executable, "-m", "alexnet", "eval", "--checkpoint", str(world / "evil.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "this must never run" not in proc.stdout + proc.stderr
    with pytest.raises(pickle.UnpicklingError):  # the file really is a payload, not merely unreadable
        torch.load(world / "evil.pt", weights_only=True)
