"""Dataset readers: the real Fashion-MNIST when installed, and tiny fixtures written here in the real formats (IDX,
CIFAR-10 pickles and tar.gz, image folders). Offline: downloads are exercised through file:// URLs."""

import gzip
import hashlib
import http.client
import io
import os
import pickle
import stat
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import encode_jpeg, write_png

from alexnet.data import cifar as cifar_mod
from alexnet.data import datasets as datasets_mod
from alexnet.data import download as download_mod
from alexnet.data import idx as idx_mod
from alexnet.data.cifar import RestrictedUnpickler
from alexnet.data.datasets import Dataset, load_dataset
from alexnet.data.download import download
from alexnet.data.folder import FolderDataset, decode_rgb
from alexnet.errors import AlexNetError, one_line

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec and warns on every call; the readers still
# use them (with Pillow as the fallback), so keep the test output readable.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def one_line_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, f"{needle!r} not in {message!r}"
    return message


def test_one_line_collapses_whitespace_or_names_the_type():
    assert one_line(OSError("bad\n  header\tat byte 4 ")) == "bad header at byte 4"
    assert one_line(EOFError()) == "EOFError"


# ---------------------------------------------------------------- Fashion-MNIST (IDX)

def write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> Path:
    blob = struct.pack(f">I{len(dims)}I", magic, *dims) + payload
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)
    return path


def write_fmnist(directory: Path, split="train", n=5, gz=True, label_offset=0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny split in the original format: image i is filled with i, except pixel (3, 4) = 200 + i."""
    images = np.repeat(np.arange(n, dtype=np.uint8), 28 * 28).reshape(n, 28, 28)
    images[:, 3, 4] = 200 + np.arange(n)
    labels = ((np.arange(n) + label_offset) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    img_stem, lbl_stem = idx_mod.FASHION_MNIST_FILES[split]
    write_idx(directory / f"{img_stem}{ext}", 0x803, (n, 28, 28), images.tobytes())
    write_idx(directory / f"{lbl_stem}{ext}", 0x801, (n,), labels.tobytes())
    return images, labels


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
    assert len(load_dataset("fashion-mnist", "train", explicit)) == 5
    assert len(load_dataset("fashion-mnist", "train", tmp_path / "empty")) == 4  # a miss falls through


def test_fashion_mnist_not_found_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_mod, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("fashion-mnist", "train", tmp_path)
    one_line_error(excinfo, "--download", "dataset-fashion-mnist", "--data-dir", tmp_path)


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


# ---------------------------------------------------------------- CIFAR-10 (pickled batches)

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def py2_pickle(obj) -> bytes:
    """What Python 2 wrote for the 2009 batches: protocol 2, str as BINSTRING (read back as bytes under
    encoding="bytes"), arrays rebuilt by numpy.core.multiarray._reconstruct. Handles the types CIFAR uses."""
    def enc(x) -> bytes:
        if isinstance(x, dict):
            return b"}(" + b"".join(enc(k) + enc(v) for k, v in x.items()) + b"u"
        if isinstance(x, list):
            return b"](" + b"".join(map(enc, x)) + b"e"
        if isinstance(x, bytes):
            return b"T" + struct.pack("<I", len(x)) + x
        if isinstance(x, int):
            return b"J" + struct.pack("<i", x)
        assert isinstance(x, np.ndarray) and x.dtype == np.uint8
        dtype = (b"cnumpy\ndtype\n" + enc(b"u1") + enc(0) + enc(1) + b"\x87R("
                 + enc(3) + enc(b"|") + b"NNN" + enc(-1) + enc(-1) + enc(0) + b"tb")
        return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + enc(0) + b"\x85" + enc(b"b")
                + b"\x87R(" + enc(1) + b"(" + b"".join(map(enc, x.shape)) + b"t" + dtype + b"\x89" + enc(x.tobytes())
                + b"tb")
    return b"\x80\x02" + enc(obj) + b"."


def cifar_batch(first: int, n: int = 2, keys="py2") -> bytes:
    """Image i of the batch is filled with (first + i); R(5, 7)=11, G(6, 8)=22, B(31, 0)=33 mark the planes."""
    data = np.repeat(np.arange(first, first + n, dtype=np.uint8), 3072).reshape(n, 3072)
    data[:, 0 * 1024 + 5 * 32 + 7] = 11
    data[:, 1 * 1024 + 6 * 32 + 8] = 22
    data[:, 2 * 1024 + 31 * 32 + 0] = 33
    batch = {b"batch_label": b"batch", b"labels": [(first + i) % 10 for i in range(n)], b"data": data,
             b"filenames": [b"x.png"] * n}
    return _dump(batch, keys)


def _dump(obj: dict, keys: str) -> bytes:
    """keys: "py2" the original files, "bytes" / "str" re-pickled by Python 3 (protocol 4, 3.11's default)."""
    if keys == "py2":
        return py2_pickle(obj)
    return pickle.dumps({k.decode(): v for k, v in obj.items()} if keys == "str" else obj, protocol=4)


def cifar_files(keys="py2") -> dict[str, bytes]:
    files = {f"data_batch_{i}": cifar_batch(10 * i, keys=keys) for i in range(1, 6)}
    files["test_batch"] = cifar_batch(100, n=3, keys=keys)
    files["batches.meta"] = _dump({b"num_cases_per_batch": 2, b"label_names": [n.encode() for n in CIFAR_NAMES],
                                   b"num_vis": 3072}, keys)
    return files


def write_cifar_dir(directory: Path, files=None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, blob in (files or cifar_files()).items():
        (directory / name).write_bytes(blob)
    return directory


def write_cifar_tar(archive: Path, files=None, extra: dict[str, bytes] | None = None) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    members = {f"cifar-10-batches-py/{k}": v for k, v in (files or cifar_files()).items()} | (extra or {})
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return archive


def check_cifar(ds, split):
    assert ds.name == "cifar10" and ds.split == split and ds.classes == CIFAR_NAMES
    assert ds.images.dtype == torch.uint8 and ds.images.is_contiguous() and ds.labels.dtype == torch.int64
    assert (ds.images[:, 0, 5, 7] == 11).all() and (ds.images[:, 1, 6, 8] == 22).all()
    assert (ds.images[:, 2, 31, 0] == 33).all()
    if split == "train":  # batches 1..5 in order, two images each
        assert ds.images.shape == (10, 3, 32, 32)
        assert ds.images[:, 0, 0, 0].tolist() == [10, 11, 20, 21, 30, 31, 40, 41, 50, 51]
        assert ds.labels.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    else:
        assert ds.images.shape == (3, 3, 32, 32) and ds.labels.tolist() == [0, 1, 2]
        assert ds.images[1, 2, 0, 0].item() == 101 and ds.images[1, 0, 5, 7].item() == 11


@pytest.mark.parametrize("keys", ["py2", "bytes", "str"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_batches_folder(tmp_path, split, keys):
    write_cifar_dir(tmp_path / "cifar-10-batches-py", cifar_files(keys))
    check_cifar(load_dataset("cifar10", split, tmp_path), split)
    check_cifar(load_dataset("cifar10", split, tmp_path / "cifar-10-batches-py"), split)  # the folder itself


def test_cifar_from_tar_in_env_and_cache(tmp_path, monkeypatch):
    # A member named to escape the folder must not be written anywhere: members are read, never extracted.
    write_cifar_tar(tmp_path / "env" / "cifar-10-python.tar.gz", extra={"../../escaped.txt": b"x"})
    monkeypatch.setenv("ALEXNET_DATA", str(tmp_path / "env"))
    check_cifar(load_dataset("cifar10", "train"), "train")
    assert not list(tmp_path.rglob("escaped.txt"))
    monkeypatch.delenv("ALEXNET_DATA")
    write_cifar_tar(Path(os.environ["ALEXNET_CACHE"]) / "cifar-10-python.tar.gz")
    check_cifar(load_dataset("cifar10", "test"), "test")


def test_cifar_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    files = cifar_files()
    files["data_batch_3"] = pickle.dumps({b"data": Evil(), b"labels": [0]})
    write_cifar_dir(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("cifar10", "train", tmp_path)
    one_line_error(excinfo, "data_batch_3", "system")
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        RestrictedUnpickler(io.BytesIO(pickle.dumps(eval))).load()


@pytest.mark.parametrize("batch, words", [
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
    ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}, "(N, 3072)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "0..9"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
    ({b"labels": [0]}, "'data'"),
])
def test_cifar_invalid_batches(tmp_path, batch, words):
    files = cifar_files()
    files["test_batch"] = pickle.dumps(batch)
    write_cifar_dir(tmp_path, files)
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("cifar10", "test", tmp_path)
    one_line_error(excinfo, "test_batch", words)


def test_cifar_not_found_then_download(tmp_path, monkeypatch):
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("cifar10", "train", tmp_path)
    one_line_error(excinfo, "--download", "cifar-10-python.tar.gz")
    archive = write_cifar_tar(tmp_path / "mirror" / "cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar_mod, "CIFAR_URL", archive.as_uri())
    monkeypatch.setattr(cifar_mod, "CIFAR_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    check_cifar(load_dataset("cifar10", "train", download=True), "train")
    assert (Path(os.environ["ALEXNET_CACHE"]) / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()


# ---------------------------------------------------------------- image folders

GREEN = (0, 200, 0)


def stripes(height: int, width: int) -> torch.Tensor:
    """uint8 (3, H, W): left quarter red, middle green, right quarter blue; a centre crop after a shorter-side
    resize keeps only green."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[1] = 200
    image[:, :, : width // 4] = torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None, None]
    image[:, :, width - width // 4:] = torch.tensor([0, 0, 255], dtype=torch.uint8)[:, None, None]
    return image


def write_folder(root: Path) -> Path:
    for split, cls, name in [("train", "dog", "a.png"), ("train", "dog", "b.PNG"), ("train", "ant", "c.png"),
                             ("train", "cat", "d.jpg"), ("train", "cat", "e.bmp"), ("val", "cat", "f.png"),
                             ("val", "ant", "g.png")]:
        path = root / split / cls / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = stripes(40, 80)
        if name.endswith(".jpg"):
            path.write_bytes(encode_jpeg(image, quality=95).numpy().tobytes())
        elif name.endswith(".bmp"):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)  # torchvision cannot decode BMP: Pillow
        else:
            write_png(image, str(path))
    return root


def test_folder_loads_sorted_classes_and_paper_crop(tmp_path):
    root = write_folder(tmp_path / "imgs")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="notes.txt"):
        ds = load_dataset("folder", "train", root, image_size=32)
    assert isinstance(ds, FolderDataset) and (ds.name, ds.split) == ("folder", "train")
    assert ds.classes == ["ant", "cat", "dog"]
    assert [(Path(p).name, y) for p, y in ds.samples] == [("c.png", 0), ("d.jpg", 1), ("e.bmp", 1), ("a.png", 2),
                                                          ("b.PNG", 2)]
    assert ds.labels.tolist() == [0, 1, 1, 2, 2] and ds.labels.dtype == torch.int64 and len(ds) == 5
    image, label = ds[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and label == 0
    # 40x80 -> 32x64 -> central 32 columns = original columns 20..59: green apart from a blended edge column.
    inner = image[:, :, 2:-2]
    assert (inner == torch.tensor(GREEN, dtype=torch.uint8)[:, None, None]).all()
    assert image[0, 0, 0] > 0 and image[0, 0, 16] == 0  # red leaks only into the edge column
    assert torch.equal(ds[2][0], image)  # BMP through Pillow, pixel-identical
    assert (ds[1][0][:, :, 4:-4].int() - torch.tensor(GREEN)[:, None, None]).abs().max() <= 8  # JPEG is lossy
    assert ds.images.shape == (5, 3, 32, 32) and ds.verify() == []


def test_folder_decode_takes_only_the_given_samples(tmp_path, monkeypatch):
    ds = load_dataset("folder", "train", write_folder(tmp_path), image_size=16)
    decoded = []
    monkeypatch.setattr("alexnet.data.folder.decode_rgb", lambda path: decoded.append(Path(path).name)
                        or decode_rgb(path))
    picked = ds.decode([3, 0])
    assert decoded == ["a.png", "c.png"]  # samples 3 and 0, nothing else
    assert picked.dtype == torch.uint8 and torch.equal(picked, torch.stack([ds[3][0], ds[0][0]]))
    assert ds.decode([]).shape == (0, 3, 16, 16)
    assert torch.equal(ds.images, ds.decode(range(len(ds))))


def test_16_bit_png_decodes_to_scaled_uint8(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 257, 32896, 65535]], dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"  # a 16-bit greyscale PNG, which torchvision decodes as uint16
    image = decode_rgb(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 1, 4)
    assert image.tolist() == [[[0, 1, 128, 255]]] * 3


def test_folder_test_split_uses_val_then_test_with_train_classes(tmp_path):
    root = write_folder(tmp_path)
    val = load_dataset("folder", "test", root, image_size=16)
    assert val.classes == ["ant", "cat", "dog"] and val.labels.tolist() == [0, 1]  # no dog in val: still index 2
    (root / "val").rename(root / "test")
    assert [Path(p).name for p, _ in load_dataset("folder", "test", root).samples] == ["g.png", "f.png"]
    (root / "test" / "zebra").mkdir()
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("folder", "test", root)
    one_line_error(excinfo, "zebra", "not in")


def test_folder_bad_image_verify_and_skip(tmp_path):
    root = write_folder(tmp_path)
    bad = root / "train" / "cat" / "x.jpg"
    bad.write_text("I am text wearing a .jpg extension")
    truncated = root / "train" / "dog" / "y.jpg"  # the usual damage from an interrupted copy
    truncated.write_bytes((root / "train" / "cat" / "d.jpg").read_bytes()[:300])
    ds = load_dataset("folder", "train", root, image_size=16)
    assert len(ds) == 7
    with pytest.raises(AlexNetError) as excinfo:
        ds.verify()
    one_line_error(excinfo, bad)
    with pytest.raises(AlexNetError, match="x.jpg"):
        ds[[Path(p).name for p, _ in ds.samples].index("x.jpg")]
    skipping = load_dataset("folder", "train", root, image_size=16, skip_bad_files=True)
    with pytest.warns(UserWarning) as caught:
        assert skipping.verify() == [str(bad), str(truncated)]
    skipped = [str(w.message) for w in caught if w.category is UserWarning]  # pytest.warns records all kinds
    assert len(skipped) == 2 and str(bad) in skipped[0] and str(truncated) in skipped[1]
    assert len(skipping) == 5 and skipping.labels.tolist() == [0, 1, 1, 2, 2]
    assert skipping.verify() == []


def test_folder_verify_shared_by_ranks_finds_what_one_process_finds(tmp_path):
    root = write_folder(tmp_path)
    for name, cls in (("x.jpg", "cat"), ("y.png", "dog"), ("z.png", "ant")):
        (root / "train" / cls / name).write_text("not an image")
    alone = load_dataset("folder", "train", root, image_size=16, skip_bad_files=True)
    with pytest.warns(UserWarning):
        dropped = alone.verify()
    assert len(dropped) == 3
    for world_size in (2, 3, 4):
        ds = load_dataset("folder", "train", root, image_size=16)
        shares = [ds.find_bad_files(rank, world_size) for rank in range(world_size)]
        assert sum(len(share) for share in shares) == 3  # each bad file is found by exactly one rank
        with pytest.raises(AlexNetError, match=str(root / "train" / "ant" / "z.png")):  # the first, sorted
            ds.drop_bad_files([bad for share in shares for bad in share], skip=False)
        with pytest.warns(UserWarning):
            assert ds.drop_bad_files([bad for share in shares[::-1] for bad in share], skip=True) == dropped
        assert ds.samples == alone.samples and torch.equal(ds.labels, alone.labels)


@pytest.mark.parametrize("make, words", [
    (lambda root: root.mkdir(), "train"),
    (lambda root: (root / "train").mkdir(parents=True), "no class folders"),
    (lambda root: (root / "train" / "cat").mkdir(parents=True), "no image files"),
])
def test_folder_empty_layouts(tmp_path, make, words):
    make(tmp_path / "root")
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("folder", "train", tmp_path / "root")
    one_line_error(excinfo, words)


def test_folder_needs_a_directory():
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("folder", "train")
    one_line_error(excinfo, "--data-dir")


# ---------------------------------------------------------------- download

def test_download_good_and_bad_checksum(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(3 << 20))  # 3 MiB: several 1 MiB chunks
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "file.bin"
    assert download([(tmp_path / "missing").as_uri(), source.as_uri()], dest, md5) == dest  # second mirror
    assert dest.read_bytes() == source.read_bytes() and os.listdir(dest.parent) == ["file.bin"]
    other = tmp_path / "out" / "other.bin"
    with pytest.raises(AlexNetError) as excinfo:
        download([source.as_uri()], other, "0" * 32)
    one_line_error(excinfo, "other.bin", "MD5", md5)
    assert os.listdir(dest.parent) == ["file.bin"]  # no other.bin, no temp file


@pytest.mark.parametrize("interruption", [ConnectionResetError, KeyboardInterrupt])
def test_download_interrupted_leaves_nothing(tmp_path, monkeypatch, interruption):
    payload = bytes(range(256)) * 8192  # 2 MiB: the connection dies after the first 1 MiB chunk
    dest = tmp_path / "out" / "data.tar.gz"
    at_death = []

    class Dying(io.BytesIO):  # stands in for the HTTP response
        def read(self, size=-1):
            if self.tell() >= download_mod.CHUNK:
                at_death.extend(dest.parent.iterdir())
                raise interruption("connection lost midway")
            return super().read(size)

    monkeypatch.setattr(download_mod, "urlopen", lambda url, timeout: Dying(payload))
    with pytest.raises(AlexNetError) as excinfo:
        download(["https://example.invalid/data.tar.gz"], dest, hashlib.md5(payload).hexdigest())
    one_line_error(excinfo, "data.tar.gz", "interrupted" if interruption is KeyboardInterrupt else "connection lost")
    assert len(at_death) == 1 and at_death[0].name.endswith(".part")  # the partial data went to a temp file...
    assert os.listdir(dest.parent) == []  # ...which is gone, and data.tar.gz never appeared


def test_download_gets_the_mode_open_would_give(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"payload")
    old = os.umask(0o027)
    try:
        dest = download([source.as_uri()], tmp_path / "out" / "file.bin", hashlib.md5(b"payload").hexdigest())
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640  # 0o666 & ~umask, not mkstemp's 0o600


def test_download_bad_http_response_tries_the_next_mirror(tmp_path, monkeypatch):
    payload = b"the real bytes"

    class Broken(io.BytesIO):  # a server that closes the connection before Content-Length bytes
        def read(self, size=-1):
            raise http.client.IncompleteRead(b"the", len(payload) - 3)

    monkeypatch.setattr(download_mod, "urlopen",
                        lambda url, timeout: Broken() if "bad" in url else io.BytesIO(payload))
    md5 = hashlib.md5(payload).hexdigest()
    dest = tmp_path / "out" / "file.bin"
    assert download(["https://bad.invalid/file.bin", "https://good.invalid/file.bin"], dest, md5) == dest
    assert dest.read_bytes() == payload
    with pytest.raises(AlexNetError) as excinfo:
        download(["https://bad.invalid/other.bin"], tmp_path / "out" / "other.bin", md5)
    one_line_error(excinfo, "other.bin", "https://bad.invalid/other.bin", "IncompleteRead(3 bytes read, 11 more")
    assert os.listdir(dest.parent) == ["file.bin"]  # no other.bin, no temp file


def test_download_unreachable_is_one_line():
    with pytest.raises(AlexNetError) as excinfo:
        download(["file:///nonexistent/a.gz", "notascheme://x"], Path(os.environ["ALEXNET_CACHE"]) / "a.gz", "0")
    one_line_error(excinfo, "a.gz", "file:///nonexistent/a.gz", "notascheme://x")


@pytest.mark.parametrize("kind", ["fashion-mnist", "folder"])
def test_augment_command_draws_a_grid(tmp_path, cli, kind):
    if kind == "folder":
        root = write_folder(tmp_path / "imgs")
        args = ["--dataset", "folder", "--set", "data.image_size=32", "--set", "data.input_size=24"]
    else:
        root = tmp_path / "fmnist"
        write_fmnist(root, "train", n=20)
        args = []
    out = tmp_path / "grid.png"
    code, stdout, err = cli("augment", "--data-dir", root, "--out", out, "--samples", "3", "--variants", "2", *args)
    assert code == 0, err
    assert "wrote" in stdout and "3 images and 2 augmented versions" in stdout
    assert Image.open(out).size[0] > 0 and [p.name for p in tmp_path.glob(".grid*")] == []
