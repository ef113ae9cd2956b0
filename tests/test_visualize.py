"""alexnet.experiments.visualize: the first layer's filters (paper Fig. 3) and nearest neighbours in the last
hidden layer (Fig. 4), from a real (tiny) run's checkpoint, and the `visualize` command."""


import matplotlib.image
import numpy as np
import pytest
import torch
from synthetic import write_fashion_mnist

from alexnet.base.errors import AlexNetError
from alexnet.config import apply_overrides, load_preset
from alexnet.experiments.visualize import PAD, filter_mosaic, filters, neighbours
from alexnet.training.run import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One epoch of the `small` net (8 first-layer filters) on the synthetic Fashion-MNIST."""
    data_dir = write_fashion_mnist(tmp_path_factory.mktemp("fmnist"))
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = apply_overrides(load_preset("quick"), {"data.data_dir": str(data_dir), "model.width": 8,
                                                  "model.hidden": 32, "train.batch_size": 64, "train.epochs": 1,
                                                  "train.eval_batch_size": 200})
    threads = torch.get_num_threads()
    train(cfg, out, quiet=True)
    torch.set_num_threads(threads)
    return out, str(data_dir)


@pytest.fixture
def cli_x(cli):  # kept as a name: the tests read "cli_x(...)"
    return cli


def test_mosaic_of_the_papers_96_rgb_kernels():
    weight = torch.randn(96, 3, 11, 11)
    mosaic, rows, cols = filter_mosaic(weight)
    assert (rows, cols) == (8, 12)  # the paper's Fig. 3 grid
    assert mosaic.shape == (8 * (11 + PAD) + PAD, 12 * (11 + PAD) + PAD, 3)
    assert mosaic.min() == 0.0 and mosaic.max() == 1.0  # each kernel stretched to [0, 1]
    tile = mosaic[PAD:PAD + 11, PAD:PAD + 11]  # kernel 0, channels kept apart (RGB)
    w = weight[0].permute(1, 2, 0)
    np.testing.assert_allclose(tile, ((w - w.min()) / (w.max() - w.min())).numpy(), rtol=0, atol=1e-6)
    grey, _, _ = filter_mosaic(torch.randn(5, 1, 3, 3))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_filters_draws_one_tile_per_first_layer_filter(run, tmp_path):
    out, _ = run
    info = filters(out / "best.pt", tmp_path / "f.png")
    assert info["tiles"] == 8 and info["kernel"] == [1, 3, 3]  # `small` width 8: conv1 is 8 @ 1x3x3
    assert info["rows"] * info["cols"] >= 8 > (info["rows"] - 1) * info["cols"]
    image = matplotlib.image.imread(tmp_path / "f.png")
    assert info["scale"] == 11  # 3 px kernels drawn 33 px wide
    expected = [11 * (info["rows"] * (3 + PAD) + PAD), 11 * (info["cols"] * (3 + PAD) + PAD)]
    assert list(image.shape[:2]) == expected == info["pixels"]
    assert not list(tmp_path.glob(".*"))


def test_a_training_image_is_its_own_nearest_neighbour(run, tmp_path):
    out, data_dir = run
    info = neighbours(out / "checkpoint.pt", tmp_path / "n.png", n_queries=4, k=3, split="train",
                      data_dir=data_dir, device="cpu")
    assert len(info["queries"]) == 4 and len(set(info["queries"])) == 4
    assert [row[0] for row in info["neighbours"]] == info["queries"]
    assert all(row[0] == pytest.approx(0.0, abs=1e-3) for row in info["distances"])
    assert (tmp_path / "n.png").stat().st_size > 0


def test_test_queries_and_their_neighbours(run, tmp_path):
    out, data_dir = run
    info = neighbours(out / "best.pt", tmp_path / "n.png", n_queries=5, k=6, data_dir=data_dir, device="cpu",
                      seed=3)
    assert info["split"] == "test" and all(0 <= q < 200 for q in info["queries"])
    assert [len(row) for row in info["neighbours"]] == [6] * 5
    assert all(0 <= i < 512 for row in info["neighbours"] for i in row)
    for row in info["distances"]:
        assert row == sorted(row) and row[0] > 0  # a test image is not in the training set
    again = neighbours(out / "best.pt", tmp_path / "m.png", n_queries=5, k=6, data_dir=data_dir, device="cpu",
                       seed=3)
    assert again["queries"] == info["queries"] and again["neighbours"] == info["neighbours"]


def test_neighbours_rejects_impossible_requests(run, tmp_path):
    out, data_dir = run
    with pytest.raises(AlexNetError, match="the sets hold 200 and 5 images"):
        neighbours(out / "best.pt", tmp_path / "n.png", k=10, data_dir=data_dir, train_limit=5, device="cpu")
    with pytest.raises(AlexNetError, match="no checkpoint"):
        filters(tmp_path / "missing.pt", tmp_path / "f.png")


def test_cli(cli_x, run, tmp_path):
    out, data_dir = run
    code, stdout, err = cli_x("visualize", "filters", "--checkpoint", out / "best.pt", "--out", tmp_path / "f.png")
    assert code == 0, err
    assert "8 filters of 1x3x3" in stdout and (tmp_path / "f.png").exists()
    code, stdout, err = cli_x("visualize", "neighbours", "--checkpoint", out / "best.pt", "--out",
                              tmp_path / "n.png", "--queries", "2", "--k", "3", "--data-dir", data_dir,
                              "--device", "cpu")
    assert code == 0, err
    assert stdout.count(" -> train [") == 2
    code, stdout, err = cli_x("visualize", "filters", "--checkpoint", tmp_path / "nope.pt", "--out", "x.png")
    assert code == 2 and err.count("\n") == 1 and "no checkpoint" in err
    code, stdout, err = cli_x("visualize", "neighbours", "--checkpoint", "x", "--out", "y", "--k", "0")
    assert code == 2 and err.count("\n") == 1 and "positive integer" in err
