"""Fashion-MNIST's IDX files (alexnet.data.idx) and where load_dataset finds them (alexnet.data.datasets)."""

import hashlib
import os
import socket
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from helpers import one_line_error, write_fmnist, write_idx

from alexnet.base.errors import AlexNetError, one_line
from alexnet.data import datasets as datasets_mod
from alexnet.data import download as download_mod
from alexnet.data import idx as idx_mod
from alexnet.data.datasets import Dataset, load_dataset


def test_one_line_collapses_whitespace_or_names_the_type():
    assert one_line(OSError("bad\n  header\tat byte 4 ")) == "bad header at byte 4"
    assert one_line(EOFError()) == "EOFError"


def test_real_fashion_mnist(fmnist_dir):
    train = load_dataset("fashion-mnist", "train", fmnist_dir)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.images.is_contiguous() and train.labels.dtype == torch.int64
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    assert train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the published first labels
    test = load_dataset("fashion-mnist", "test", fmnist_dir)
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    assert test.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot" and len(train.classes) == 10
    assert (train.name, train.split, test.split) == ("fashion-mnist", "train", "test")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_tiny_roundtrip(tmp_path, gz, split):
    images, labels = write_fmnist(tmp_path, split, n=5, gz=gz, label_offset=7)
    ds = load_dataset("fashion-mnist", split, tmp_path)
    assert isinstance(ds, Dataset) and len(ds) == 5
    assert ds.images.shape == (5, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert ds.images[2, 0, 3, 4].item() == 202 and ds.images[2, 0, 0, 0].item() == 2
    assert ds.labels.tolist() == [7, 8, 9, 0, 1] and ds.labels.dtype == torch.int64
    assert ds.classes[7] == "Sneaker"


def _corrupt(tmp_path, problem):
    """Write a valid tiny train split, then break it one way; return the file that should be named."""
    write_fmnist(tmp_path, n=4)
    img, lbl = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    if problem == "bad-gzip":
        img.write_bytes(b"this is not gzip data at all")
    elif problem == "cut-gzip":
        img.write_bytes(img.read_bytes()[:40])
    elif problem == "truncated":
        write_idx(img, 0x803, (4, 28, 28), bytes(4 * 28 * 28 - 1))
    elif problem == "trailing":
        write_idx(img, 0x803, (4, 28, 28), bytes(4 * 28 * 28 + 3))
    elif problem == "magic":
        write_idx(img, 0x801, (4, 28, 28), bytes(4 * 28 * 28))
    elif problem == "dims":
        write_idx(img, 0x803, (4, 32, 32), bytes(4 * 32 * 32))
    elif problem == "label-range":
        write_idx(lbl, 0x801, (4,), bytes([0, 1, 10, 2]))
        return lbl
    elif problem == "count":
        write_idx(lbl, 0x801, (3,), bytes(3))
        return lbl
    return img


@pytest.mark.parametrize("problem, words", [
    ("bad-gzip", "cannot read"), ("cut-gzip", "cannot read"), ("truncated", "truncated"),
    ("trailing", "trailing"), ("magic", "magic"), ("dims", "4x32x32"), ("label-range", "label 10"),
    ("count", "4 images but"),
])
def test_idx_corrupt_files_are_one_line_errors(tmp_path, problem, words):
    bad = _corrupt(tmp_path, problem)
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("fashion-mnist", "train", tmp_path)
    one_line_error(excinfo, bad.name, words)


def test_fashion_mnist_search_order(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_mod, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    explicit, env, cache = tmp_path / "explicit", tmp_path / "env", Path(os.environ["ALEXNET_CACHE"])
    write_fmnist(tmp_path / "debian", n=2)  # the last resort
    assert len(load_dataset("fashion-mnist", "train")) == 2
    write_fmnist(cache / "fashion-mnist", n=3)
    assert len(load_dataset("fashion-mnist", "train")) == 3
    write_fmnist(env / "fashion-mnist", n=4)  # $ALEXNET_DATA with our subfolder
    monkeypatch.setenv("ALEXNET_DATA", str(env))
    assert len(load_dataset("fashion-mnist", "train")) == 4
    write_fmnist(explicit / "FashionMNIST" / "raw", n=5, gz=False)  # torchvision's layout
    ds = load_dataset("fashion-mnist", "train", explicit)
    assert len(ds) == 5 and ds.source == str(explicit / "FashionMNIST" / "raw")


def test_an_explicit_data_dir_is_the_only_place_looked_in(tmp_path, monkeypatch):
    write_fmnist(Path(os.environ["ALEXNET_CACHE"]) / "fashion-mnist", n=3)  # would be found without data_dir
    assert len(load_dataset("fashion-mnist", "train")) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlexNetError) as excinfo:  # a typo or an empty folder never falls through
        load_dataset("fashion-mnist", "train", tmp_path / "empty")
    one_line_error(excinfo, str(tmp_path / "empty"), "holds no Fashion-MNIST train files", "--download")
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("fashion-mnist", "train", tmp_path / "typo")
    one_line_error(excinfo, f"data folder {tmp_path / 'typo'} does not exist")
    (tmp_path / "file").write_text("x")
    with pytest.raises(AlexNetError, match="is a file"):
        load_dataset("cifar10", "train", tmp_path / "file")


def test_fashion_mnist_not_found_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_mod, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("fashion-mnist", "train")
    one_line_error(excinfo, "--download", "dataset-fashion-mnist", "--data-dir")


def test_fashion_mnist_download_into_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_mod, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    mirror = tmp_path / "mirror"
    write_fmnist(mirror, "test", n=4)
    md5s = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in mirror.iterdir()}
    monkeypatch.setattr(idx_mod, "FASHION_MNIST_MIRRORS", [mirror.as_uri() + "/"])
    monkeypatch.setattr(idx_mod, "FASHION_MNIST_MD5", md5s)
    ds = load_dataset("fashion-mnist", "test", download=True)
    assert len(ds) == 4 and ds.labels.tolist() == [0, 1, 2, 3]
    cached = Path(os.environ["ALEXNET_CACHE"]) / "fashion-mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(md5s)


@pytest.mark.parametrize("name, split, choices", [("imagenet", "train", "fashion-mnist, cifar10, folder"),
                                                  ("cifar10", "val", "train, test")])
def test_unknown_name_or_split(name, split, choices):
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset(name, split)
    one_line_error(excinfo, repr(name if name == "imagenet" else split), choices)




# --- where the demo's data comes from: found, downloaded, or one line saying how to get it --------------------------

@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A stand-in for the network: `fetch` copies from a local folder and records each call; nothing is opened."""
    source = tmp_path / "mirror"
    write_fmnist(source, "train", n=3)
    calls = []

    def fetch(urls, dest, md5):
        calls.append((urls, dest.name, md5))
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((source / dest.name).read_bytes())
        return dest
    monkeypatch.setattr(idx_mod, "fetch", fetch)
    return calls


def test_found_locally_is_never_downloaded(tmp_path, mirror):
    write_fmnist(tmp_path / "second", n=2)
    candidates = [tmp_path / "first", tmp_path / "second"]
    assert idx_mod.locate_fashion_mnist("train", candidates, tmp_path / "cache") == tmp_path / "second"
    assert mirror == [] and not (tmp_path / "cache").exists()


def test_not_found_and_no_download_is_none(tmp_path, mirror):
    assert idx_mod.locate_fashion_mnist("train", [tmp_path / "first"], None) is None
    assert mirror == []


def test_not_found_is_downloaded_checksummed_from_the_mirror(tmp_path, mirror):
    target = tmp_path / "cache" / "fashion-mnist"
    write_fmnist(tmp_path / "partial", n=3)
    target.mkdir(parents=True)
    (target / "train-labels-idx1-ubyte.gz").write_bytes((tmp_path / "partial" / "train-labels-idx1-ubyte.gz")
                                                       .read_bytes())  # one file already there: not fetched again
    assert idx_mod.locate_fashion_mnist("train", [tmp_path / "first"], target) == target
    assert mirror == [(["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz"],
                       "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d")]
    assert idx_mod.read_fashion_mnist(target, "train")[1].tolist() == [0, 1, 2]


UNREACHABLE = ("could not download train-images-idx3-ubyte.gz: http://fashion-mnist.s3-website.eu-central-1.amazonaws"
               ".com/train-images-idx3-ubyte.gz: <urlopen error [Errno -3] Temporary failure in name resolution>")


@pytest.mark.parametrize("only_here", [False, True], ids=["default-places", "explicit-data-dir"])
def test_a_failed_download_says_how_to_get_the_files(tmp_path, monkeypatch, only_here):
    def fetch(urls, dest, md5):
        raise AlexNetError(UNREACHABLE)
    monkeypatch.setattr(idx_mod, "fetch", fetch)
    target = tmp_path / "cache" / "fashion-mnist"
    with pytest.raises(AlexNetError) as excinfo:
        idx_mod.locate_fashion_mnist("train", [tmp_path / "first"], target, only_here=only_here)
    files = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
             "t10k-labels-idx1-ubyte.gz")  # both splits, whichever failed: a run reads both
    if only_here:  # an explicit --data-dir is the only place looked in: the fix is that folder
        expected = f"{UNREACHABLE}; to train without downloading, put {files} into {target}"
    else:
        expected = (f"{UNREACHABLE}; to train without downloading, `apt-get install dataset-fashion-mnist` (Debian; "
                    f"installs them under /usr/share/datasets/fashion-mnist/), or put {files} into {target} or into "
                    f"$ALEXNET_DATA")
    assert str(excinfo.value) == expected


def test_an_interrupted_download_is_not_given_advice(tmp_path, monkeypatch):
    def fetch(urls, dest, md5):
        raise AlexNetError("download of x from y interrupted; nothing was saved") from KeyboardInterrupt()
    monkeypatch.setattr(idx_mod, "fetch", fetch)
    with pytest.raises(AlexNetError) as excinfo:
        idx_mod.locate_fashion_mnist("train", [], tmp_path / "cache")
    assert str(excinfo.value) == "download of x from y interrupted; nothing was saved"


def test_train_download_without_a_network_is_one_line(tmp_path, monkeypatch, cli):
    """What `make demo` (`alexnet train --preset quick --download`) says where the data is nowhere and the mirror
    cannot be reached: the network is mocked at urlopen, below the mirror loop."""
    monkeypatch.setattr(datasets_mod, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")

    def urlopen(url, timeout):
        raise URLError(socket.gaierror(-3, "Temporary failure in name resolution"))
    monkeypatch.setattr(download_mod, "urlopen", urlopen)
    code, out, err = cli("train", "--preset", "quick", "--download", "--out", tmp_path / "run", "--quiet")
    assert (code, out) == (2, "") and err.count("\n") == 1, err
    assert "could not download train-images-idx3-ubyte.gz" in err and "Temporary failure in name resolution" in err
    assert "`apt-get install dataset-fashion-mnist`" in err and "$ALEXNET_DATA" in err
    assert str(Path(os.environ["ALEXNET_CACHE"]) / "fashion-mnist") in err
    assert not (tmp_path / "run").exists()  # refused before it started: no run folder left behind
