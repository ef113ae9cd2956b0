"""alexnet.experiments.visualize: the first layer's filters (paper Fig. 3) and nearest neighbours in the last
hidden layer (Fig. 4), from a real (tiny) run's checkpoint, and the `visualize` command."""


import matplotlib.image
import numpy as np
import pytest
import torch
from synthetic import write_fashion_mnist

from alexnet.base.errors import AlexNetError
from alexnet.config import apply_overrides, load_preset
from alexnet.experiments.visualize import MIN_SIDE_PX, PAD, TITLE_PX, filter_mosaic, filters, neighbours, title_band
from alexnet.run.trained import load_trained
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
    image = matplotlib.image.imread(tmp_path / "f.png")[..., :3]
    # a 2 x 4 grid of 3x3 kernels is 9 x 17 px: enlarged until its longer side reaches MIN_SIDE_PX (29 x 17 = 493)
    assert (info["rows"], info["cols"]) == (2, 4) and info["scale"] == 29
    side = [info["rows"] * (3 + PAD) + PAD, info["cols"] * (3 + PAD) + PAD]
    assert list(image.shape[:2]) == [TITLE_PX + 29 * side[0], 29 * side[1]] == info["pixels"]
    assert info["layer"] == "features.0" and info["title"] == "small, features.0: 8 filters of 1x3x3 (grey)"
    # below the title, the kernels' own pixels as 29 x 29 blocks; in the title band, dark text on white
    trained = load_trained(out / "best.pt", "cpu")
    mosaic, _, _ = filter_mosaic(trained.model.features[0].weight)
    np.testing.assert_allclose(image[TITLE_PX:], mosaic.repeat(29, 0).repeat(29, 1), rtol=0, atol=1 / 255 + 1e-6)
    band = image[:TITLE_PX]
    assert band[0].min() == 1.0 and band.min() < 0.3  # white edge, black letters
    assert not list(tmp_path.glob(".*"))


def test_filters_of_the_papers_net_keep_their_44_px_tiles(tmp_path):
    """Big nets stay as they were: 96 11x11 kernels need no more than the 4x of MIN_TILE_PX."""
    big = filter_mosaic(torch.randn(96, 3, 11, 11))[0]
    assert max(big.shape[:2]) * 4 >= MIN_SIDE_PX
    assert title_band("paper, features.0: 96 filters of 3x11x11", 580).shape == (TITLE_PX, 580, 3)


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
    assert "small, features.0: 8 filters of 1x3x3 (grey) (2 x 4 grid, 493x293 px)" in stdout
    assert (tmp_path / "f.png").exists()
    code, stdout, err = cli_x("visualize", "neighbours", "--checkpoint", out / "best.pt", "--out",
                              tmp_path / "n.png", "--queries", "2", "--k", "3", "--data-dir", data_dir,
                              "--device", "cpu")
    assert code == 0, err
    assert stdout.count(" -> train [") == 2
    code, stdout, err = cli_x("visualize", "filters", "--checkpoint", tmp_path / "nope.pt", "--out", "x.png")
    assert code == 2 and err.count("\n") == 1 and "no checkpoint" in err
    code, stdout, err = cli_x("visualize", "neighbours", "--checkpoint", "x", "--out", "y", "--k", "0")
    assert code == 2 and err.count("\n") == 1 and "positive integer" in err
