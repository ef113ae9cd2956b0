"""ImageNet-style image folders (alexnet.data.folder): layout, the paper's crop, decoding, bad files."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error, write_fmnist
from PIL import Image
from torchvision.io import encode_jpeg, write_png

from alexnet.base.errors import AlexNetError
from alexnet.data.datasets import load_dataset
from alexnet.data.folder import FolderDataset, decode_rgb

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec and warns on every call; the readers still
# use them (with Pillow as the fallback), so keep the test output readable.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


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
    assert ds.images.shape == (5, 3, 32, 32) and ds.find_bad_files() == []


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


def check_files(ds, skip: bool) -> list[str]:
    """What load_split does in one process: find the bad files, then raise on the first or drop them all."""
    return ds.drop_bad_files(ds.find_bad_files(first_only=not skip), skip)


def test_folder_bad_image_check_and_skip(tmp_path):
    root = write_folder(tmp_path)
    bad = root / "train" / "cat" / "x.jpg"
    bad.write_text("I am text wearing a .jpg extension")
    truncated = root / "train" / "dog" / "y.jpg"  # the usual damage from an interrupted copy
    truncated.write_bytes((root / "train" / "cat" / "d.jpg").read_bytes()[:300])
    ds = load_dataset("folder", "train", root, image_size=16)
    assert len(ds) == 7
    with pytest.raises(AlexNetError) as excinfo:
        check_files(ds, skip=False)
    one_line_error(excinfo, bad)
    with pytest.raises(AlexNetError, match="x.jpg"):
        ds[[Path(p).name for p, _ in ds.samples].index("x.jpg")]
    skipping = load_dataset("folder", "train", root, image_size=16)
    with pytest.warns(UserWarning) as caught:
        assert check_files(skipping, skip=True) == [str(bad), str(truncated)]
    skipped = [str(w.message) for w in caught if w.category is UserWarning]  # pytest.warns records all kinds
    assert len(skipped) == 2 and str(bad) in skipped[0] and str(truncated) in skipped[1]
    assert len(skipping) == 5 and skipping.labels.tolist() == [0, 1, 1, 2, 2]
    assert check_files(skipping, skip=True) == []


def test_folder_check_shared_by_ranks_finds_what_one_process_finds(tmp_path):
    root = write_folder(tmp_path)
    for name, cls in (("x.jpg", "cat"), ("y.png", "dog"), ("z.png", "ant")):
        (root / "train" / cls / name).write_text("not an image")
    alone = load_dataset("folder", "train", root, image_size=16)
    with pytest.warns(UserWarning):
        dropped = check_files(alone, skip=True)
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

