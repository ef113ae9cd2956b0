"""The validation split (alexnet.data.splits, alexnet.data.run): disjoint from training, stratified, stable per
seed; an image folder's own val/ beside a test/; and the validation split, never the test split, choosing
best.pt and the plateau schedule."""

import pytest
import torch
from synthetic import write_fashion_mnist
from torchvision.io import write_png

from alexnet.config import apply_overrides, load_preset
from alexnet.data.run import load_splits
from alexnet.data.splits import holdout_size, stratified_holdout
from alexnet.eval.metrics import EvalResult
from alexnet.training import trainer as trainer_mod
from alexnet.training.run import train


def test_holdout_is_disjoint_stratified_and_stable_per_seed():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    keep, held = stratified_holdout(labels, 20, seed=3)
    assert len(held) == 20 and len(keep) == 80
    assert set(keep.tolist()).isdisjoint(held.tolist()) and set(keep.tolist()) | set(held.tolist()) == set(range(100))
    assert torch.bincount(labels[held]).tolist() == [12, 6, 2]  # each class by its share
    again, other = stratified_holdout(labels, 20, seed=3), stratified_holdout(labels, 20, seed=4)
    assert torch.equal(again[1], held) and not torch.equal(other[1], held)


def test_holdout_rounding_gives_exactly_n():
    labels = torch.tensor([0] * 7 + [1] * 7 + [2] * 7)
    _, held = stratified_holdout(labels, 10, seed=0)
    assert len(held) == 10 and sorted(torch.bincount(labels[held]).tolist()) == [3, 3, 4]


def test_holdout_size_is_at_most_a_tenth():
    assert holdout_size(60_000, 5000) == 5000 and holdout_size(512, 5000) == 51 and holdout_size(9, 5000) == 0
    assert holdout_size(60_000, 0) == 0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def test_fashion_mnist_splits(data_dir):
    cfg = apply_overrides(load_preset("quick"), {"data.data_dir": str(data_dir)})
    train_part, val, test = load_splits(cfg)
    assert (len(train_part), len(val), len(test)) == (461, 51, 200)
    # the held-out images are images of the training file, none of them left in the training part
    rows = {bytes(image.numpy().tobytes()) for image in train_part.images}
    assert not any(bytes(image.numpy().tobytes()) in rows for image in val.images)
    assert load_splits(apply_overrides(cfg, {"data.val_size": 0}))[1] is None


def write_folder(root, splits):
    g = torch.Generator().manual_seed(0)
    for split, n in splits.items():
        for i in range(n):
            path = root / split / ("ant", "bee")[i % 2] / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(torch.randint(0, 256, (3, 12, 12), generator=g, dtype=torch.uint8), str(path))
    return root


@pytest.mark.parametrize("layout,expected", [
    ({"train": 40, "val": 6, "test": 8}, ("val", 40, 6, "test", 8)),   # val/ beside test/: the validation split
    ({"train": 40, "val": 6}, ("held", 36, 4, "val", 6)),               # val/ alone is the test split (ImageNet)
])
def test_image_folder_splits(tmp_path, layout, expected):
    root = write_folder(tmp_path / "imgs", layout)
    cfg = apply_overrides(load_preset("quick"), {"data.dataset": "folder", "data.data_dir": str(root),
                                                 "data.image_size": 12, "data.input_size": 12})
    train_part, val, test = load_splits(cfg)
    kind, n_train, n_val, test_folder, n_test = expected
    assert (len(train_part), len(val), len(test)) == (n_train, n_val, n_test)
    assert test.source == str(root / test_folder)
    assert val.source == (str(root / "val") if kind == "val" else train_part.source)


def test_best_and_plateau_read_validation_not_test(tmp_path, data_dir, monkeypatch):
    """Scripted accuracies where the two splits disagree: best.pt and the rate follow the validation split."""
    val_acc, test_acc = [0.5, 0.7, 0.6, 0.6, 0.6], [0.9, 0.1, 0.95, 0.95, 0.95]
    calls = []

    def scripted(self, loader):
        calls.append(loader is self.data.val)
        epoch = len(self.progress.history)
        acc = val_acc[epoch] if loader is self.data.val else test_acc[epoch]
        return EvalResult(count=len(loader.order.permutation(0)), top1=acc, top5=1.0, loss=1.0, per_class=[],
                          confusion=[])
    monkeypatch.setattr(trainer_mod.Trainer, "evaluate", scripted)
    cfg = apply_overrides(load_preset("quick"), {
        "data.data_dir": str(data_dir), "model.width": 8, "model.hidden": 32, "train.batch_size": 64,
        "train.epochs": 5, "optim.schedule": "plateau", "optim.plateau_patience": 1, "optim.lr": 0.01,
        "train.estimate_steps": 0})
    history = train(cfg, tmp_path / "run", quiet=True)
    assert calls == [True, False] * 5
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["metrics"]
    assert best["epoch"] == 2 and best["val_acc"] == 0.7  # not epoch 3, where the test accuracy peaks
    # validation: best 0.7 at epoch 2, then 0.6, 0.6 (two epochs without a gain > patience 1): divided by 10
    assert [round(r["lr"] / 0.01, 6) for r in history][-1] == 0.1
