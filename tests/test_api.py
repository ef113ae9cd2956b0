"""The Python API as a notebook uses it (alexnet.api): train a preset, fit a net of one's own as d2l's train_ch6
does, load a checkpoint, predict a PNG, evaluate, summarise; and the book's shape loop."""

import os
import time
from pathlib import Path

import pytest
import torch
from synthetic import patterned, write_fashion_mnist
from torch import nn
from torchvision.io import write_png

import alexnet
from alexnet.base.errors import AlexNetError
from alexnet.training.trainer import Trainer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def test_a_notebook_session(tmp_path, data_dir):
    # 1. a preset, one epoch, on a subset: keyword overrides with __ for the dot, or the shortcuts
    run = alexnet.train("quick", tmp_path / "quick", epochs=1, data_dir=str(data_dir), batch_size=32,
                        model__width=8, model__hidden=32, data__train_subset=300, quiet=True)
    assert run.out == tmp_path / "quick" and len(run.history) == 1 and run.best.is_file()
    assert run.config.data.train_subset == 300 and run.config.model.options["width"] == 8
    assert isinstance(run.model, nn.Module) and not run.model.training

    # 2. a user-defined nn.Sequential, as d2l's train_ch6(net, ...) trains it
    net = nn.Sequential(nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(6 * 14 * 14, 10))
    fitted = alexnet.fit(net, "fashion-mnist", out=tmp_path / "fit", input_size=28, epochs=2, lr=0.1, batch_size=32,
                         data_dir=str(data_dir), quiet=True)
    assert fitted.model is net and [r["epoch"] for r in fitted.history] == [1, 2]
    assert fitted.config.model.name == "custom:Sequential" and fitted.history[-1]["val_count"] == 51
    assert fitted.history[-1]["test_acc"] > 0.3  # the bars are easy; chance is 0.1

    # 3. load best.pt and predict a PNG
    model, preprocess = alexnet.load(run.best, device="cpu")
    image, label = patterned(1, seed=11)
    png = tmp_path / "bar.png"
    write_png(torch.from_numpy(image[0])[None].expand(3, -1, -1).contiguous(), str(png))
    batch = preprocess(png)
    assert batch.shape == (1, 1, 28, 28) and batch.dtype == torch.float32
    with torch.no_grad():
        probs = model(batch).softmax(-1)[0]
    top = alexnet.predict(run.best, [png], topk=3, device="cpu")[0]
    classes = torch.load(run.best, weights_only=True)["classes"]
    assert top[0][0] == classes[int(probs.argmax())]
    assert len(top) == 3 and top[0][1] == pytest.approx(probs.max().item(), rel=1e-5)
    assert alexnet.predict(run.best, str(png), topk=3, device="cpu") == [top]  # one path, not a list, is one image
    assert preprocess(torch.from_numpy(image)).shape == (1, 1, 28, 28)  # uint8 tensors too

    # 4. evaluate, and a net of one's own needs its instance to load
    result = alexnet.evaluate(run.best, device="cpu")
    assert result.count == 200 and 0 <= result.top1 <= 1
    assert result.classes == classes and list(result.accuracy_by_class()) == classes  # the names, in class order
    assert list(result.accuracy_by_class().values()) == result.per_class and len(classes) == 10
    with pytest.raises(AlexNetError, match="pass an instance of it"):
        alexnet.load(fitted.best)
    again, _ = alexnet.load(fitted.best, model=nn.Sequential(*[type(m)(*_args(m)) for m in net]))
    assert torch.equal(again[-1].weight, torch.load(fitted.best, weights_only=True)["model"]["4.weight"])


TINY = dict(batch_size=32, model__width=8, model__hidden=32, data__train_subset=300, quiet=True)
FIGURES = ("train_loss", "val_acc", "test_acc", "test_loss")  # of an epoch, the same however often it is run


def figures(history):
    return [[r[k] for k in FIGURES] for r in history]


def test_train_again_into_one_folder(tmp_path, data_dir, monkeypatch):
    out, keys = tmp_path / "nb", dict(TINY, data_dir=str(data_dir))
    first = alexnet.train("quick", out, epochs=1, **keys)
    with pytest.raises(AlexNetError) as info:
        alexnet.train("quick", out, epochs=2, **keys)
    assert str(info.value) == (f"{out} already holds a run; continue it with resume=True, replace it with "
                               f"overwrite=True, or pass another out=")

    # resume=True continues the run, as `alexnet train --resume`: epochs count them all, the first one kept
    again = alexnet.train("quick", out, epochs=2, resume=True, **keys)
    assert [r["epoch"] for r in again.history] == [1, 2] and figures(again.history[:1]) == figures(first.history)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    more = alexnet.train(out=out, epochs=3, resume=True, quiet=True)  # no preset: the run's own config
    assert [r["epoch"] for r in more.history] == [1, 2, 3] and more.config.model.options["width"] == 8
    with pytest.raises(AlexNetError, match=r"^cannot resume: model.width is 16 but the run was started with 8; "
                                           r"use the run's own config or another out=$"):
        alexnet.train("quick", out, epochs=4, resume=True, **{**keys, "model__width": 16})

    # overwrite=True starts again; interrupted, it leaves the old run whole and nothing of its own
    def interrupted(self):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(Trainer, "fit", interrupted)
        with pytest.raises(KeyboardInterrupt):
            alexnet.train("quick", out, epochs=1, overwrite=True, **keys)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3 and os.listdir(tmp_path) == ["nb"]
    fresh = alexnet.train("quick", out, epochs=1, overwrite=True, **keys)
    assert figures(fresh.history) == figures(first.history) and fresh.out == out
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1 and os.listdir(tmp_path) == ["nb"]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["progress"]["epoch"] == 1
    with pytest.raises(AlexNetError, match="^resume=True continues the run in out= and overwrite=True replaces it"):
        alexnet.train("quick", out, resume=True, overwrite=True, **keys)


def test_without_out_every_call_gets_its_own_folder(tmp_path, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda _format: "20260102-030405")  # two calls within one second
    runs = [alexnet.train("quick", epochs=1, data_dir=str(data_dir), **TINY) for _ in range(2)]
    assert [r.out for r in runs] == [Path("runs/quick-20260102-030405"), Path("runs/quick-20260102-030405-2")]
    with pytest.raises(AlexNetError, match="^resume=True continues a run: name its folder with out=$"):
        alexnet.train("quick", epochs=1, resume=True, **TINY)


def test_fit_again_into_one_folder(tmp_path, data_dir):
    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    keys = dict(out=tmp_path / "fit", input_size=28, lr=0.1, batch_size=32, data_dir=str(data_dir), quiet=True)
    first = alexnet.fit(net(), epochs=1, **keys)
    with pytest.raises(AlexNetError, match="continue it with resume=True, replace it with overwrite=True, or pass"):
        alexnet.fit(net(), epochs=2, **keys)
    resumed = net()
    again = alexnet.fit(resumed, epochs=2, resume=True, **keys)
    assert [r["epoch"] for r in again.history] == [1, 2] and figures(again.history[:1]) == figures(first.history)
    saved = torch.load(tmp_path / "fit" / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(resumed[1].weight, saved["1.weight"])  # the net given went on from the run's weights
    fresh = alexnet.fit(net(), epochs=1, overwrite=True, **keys)
    assert figures(fresh.history) == figures(first.history)


def _args(module):
    """Constructor arguments to rebuild each layer of the test's Sequential."""
    if isinstance(module, nn.Conv2d):
        return (module.in_channels, module.out_channels, module.kernel_size, 1, module.padding)
    if isinstance(module, nn.Linear):
        return (module.in_features, module.out_features)
    if isinstance(module, nn.MaxPool2d):
        return (module.kernel_size,)
    return ()


def test_summary_returns_data():
    s = alexnet.summary("d2l")
    assert s.total_params == 46_764_746 and s.layers[0].output_shape == [96, 54, 54]
    assert alexnet.summary("paper", two_column=True).total_params == 60_965_224


def test_the_books_shape_loop_runs_on_the_d2l_net():
    """d2l 7.1: `for layer in net: X = layer(X); print(layer.__class__.__name__, X.shape)`."""
    net = alexnet.create_model("d2l").eval()
    X = torch.randn(1, 1, 224, 224)
    shapes = []
    for layer in net:
        X = layer(X)
        shapes.append((layer.__class__.__name__, tuple(X.shape)))
    assert shapes[12] == ("MaxPool2d", (1, 256, 5, 5)) and shapes[13] == ("Flatten", (1, 6400))
    assert shapes[-1] == ("Linear", (1, 10)) and len(shapes) == 21


def test_fit_refuses_a_net_that_cannot_take_the_data(tmp_path, data_dir):
    with pytest.raises(AlexNetError, match="cannot take 1x224x224 images") as info:
        alexnet.fit(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)), out=tmp_path / "x", data_dir=str(data_dir))
    assert "\n" not in str(info.value)
    with pytest.raises(AlexNetError, match="has 3 outputs but fashion-mnist has 10 classes"):
        alexnet.fit(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 3)), input_size=28, out=tmp_path / "y",
                    data_dir=str(data_dir))
