"""`alexnet prepare` (alexnet.data.prepare) and reading its output (alexnet.data.prepared): the same samples, labels
and order as the source folder, images equal to the folder's paper crop within JPEG tolerance, the same augmented
training batches, resume after a kill, checksums, bad source files, and the command line."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from helpers import one_line_error
from PIL import Image
from torchvision.io import encode_jpeg, write_png

import alexnet.data.prepare as prepare_module
from alexnet.base.errors import AlexNetError
from alexnet.bench.decode import decode_throughput
from alexnet.config import resolve
from alexnet.data.datasets import load_dataset
from alexnet.data.folder import FolderDataset
from alexnet.data.loader import FolderLoader
from alexnet.data.pipeline import build_pipeline, compute_stats
from alexnet.data.prepare import prepare
from alexnet.data.prepared import PreparedDataset, PreparedLoader, read_manifest
from alexnet.data.run import load_split, make_loader

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

SIZE = 32  # the paper's 256, scaled down: the crop, re-encode and decode are the same code at any size
CLASSES = ("ant", "bee", "cat")
SHAPES = [(40, 30), (25, 50), (64, 48), (33, 33)]  # (H, W): portrait, landscape, upscaled, square
# JPEG tolerance at quality 90 on these smooth images, in 8-bit levels. Measured (libjpeg-turbo via torchvision
# 0.29): mean 0.7, max 7; two different images of the source differ by a mean of 7.9 or more, so a sample out of
# order cannot pass.
MEAN_TOL, MAX_TOL = 2.0, 40


def smooth(height: int, width: int, seed: int) -> torch.Tensor:
    """uint8 (3, H, W): a per-image random blend of vertical, horizontal and diagonal ramps, so every image
    differs from every other by far more than JPEG's error, yet JPEG keeps each within a few levels."""
    a = torch.rand(3, 4, generator=torch.Generator().manual_seed(seed)) + 0.1
    y, x = torch.linspace(0, 1, height)[:, None], torch.linspace(0, 1, width)[None]
    ramps = a[:, 0, None, None] * y + a[:, 1, None, None] * x + a[:, 2, None, None] * (1 - x) * y
    return (100 * a[:, 3, None, None] + 140 * ramps / a[:, :3].sum(1)[:, None, None]).round().to(torch.uint8)


def write_source(root: Path) -> Path:
    """train: 4 JPEGs per class, a greyscale JPEG and a PNG; val: 2 JPEGs per class. 20 images in all."""
    seed = 0
    for split, per_class in (("train", 4), ("val", 2)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                h, w = SHAPES[(seed + i) % len(SHAPES)]
                path = root / split / cls / f"{i:02d}.jpg"
                path.write_bytes(encode_jpeg(smooth(h, w, seed), quality=95).numpy().tobytes())
                seed += 1
    Image.fromarray(smooth(36, 52, 100)[0].numpy(), mode="L").save(root / "train" / "bee" / "grey.jpg", quality=95)
    write_png(smooth(30, 45, 101), str(root / "train" / "cat" / "z.png"))
    return root


@pytest.fixture
def source(tmp_path) -> Path:
    return write_source(tmp_path / "src")


def run_prepare(src, dst, **kwargs) -> dict:
    return prepare(src, dst, size=SIZE, shard_size=5, workers=2, progress=False, **kwargs)


def assert_close_images(a: torch.Tensor, b: torch.Tensor) -> None:
    diff = (a.to(torch.int16) - b.to(torch.int16)).abs()
    assert a.shape == b.shape and diff.float().mean() < MEAN_TOL and diff.max() < MAX_TOL, \
        (diff.float().mean().item(), diff.max().item())


def shard_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".verified.json"}


@pytest.mark.parametrize("split", ["train", "test"])
def test_prepared_split_is_the_folder_split(source, tmp_path, split):
    manifest = run_prepare(source, tmp_path / "dst")
    folder = FolderDataset(source, split, image_size=SIZE)
    ds = load_dataset("folder", split, tmp_path / "dst", image_size=SIZE)
    assert isinstance(ds, PreparedDataset) and ds.name == "folder" and ds.image_size == SIZE
    assert ds.classes == folder.classes == list(CLASSES)
    assert ds.samples == folder.samples and len(ds) == len(folder) == (14 if split == "train" else 6)
    assert ds.labels.dtype == torch.int64 and torch.equal(ds.labels, folder.labels)
    images = ds.images
    assert images.dtype == torch.uint8 and images.shape == (len(folder), 3, SIZE, SIZE)
    assert_close_images(images, folder.images)
    image, label = ds[3]
    assert torch.equal(image, images[3]) and label == folder.samples[3][1]
    assert torch.equal(ds.decode([4, 1]), images[[4, 1]]) and ds.decode([]).shape == (0, 3, SIZE, SIZE)
    assert ds.find_bad_files() == [] and ds.drop_bad_files([], skip=False) == []
    # the manifest: what was made from what, and the sha256 of every file it lists
    entry = manifest["splits"]["train" if split == "train" else "val"]  # ImageNet's test split is its val/
    assert (manifest["image_size"], manifest["quality"], manifest["source"]) == (SIZE, 90, str(source))
    assert manifest["complete"] and set(manifest["splits"]) == {"train", "val"}
    assert entry["images"] == len(folder) and len(entry["shards"]) == -(-len(folder) // 5)
    for shard in entry["shards"]:
        data = (tmp_path / "dst" / shard["data"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
    assert read_manifest(tmp_path / "dst") == manifest


def test_a_source_with_val_and_test_keeps_both(source, tmp_path):
    """Each split reads the folder FolderDataset reads: `test/` for test, `val/` for validation."""
    (source / "test").mkdir()
    (source / "val" / "cat").rename(source / "test" / "cat")
    manifest = run_prepare(source, tmp_path / "dst")
    assert list(manifest["splits"]) == ["train", "val", "test"]
    for split in ("val", "test"):
        ds = PreparedDataset(tmp_path / "dst", split, SIZE)
        assert ds.samples == FolderDataset(source, split).samples and ds.directory.name == split


def test_prepared_crop_is_the_folder_crop_reencoded(source, tmp_path):
    """Not only close: the stored bytes are exactly encode_jpeg(resize_center_crop(decode_rgb(path)))."""
    run_prepare(source, tmp_path / "dst")
    ds, folder = load_dataset("folder", "train", tmp_path / "dst", image_size=SIZE), FolderDataset(source)
    for i in (0, 5, 13):
        folder_crop = FolderDataset(source, image_size=SIZE)[i][0]
        assert ds.read([i])[0].numpy().tobytes() == encode_jpeg(folder_crop, quality=90).numpy().tobytes()
    assert len(folder) == len(ds)


def test_training_batches_match_the_folder(source, tmp_path):
    """Same seed and epoch: the same samples in the same order, for every rank; after the paper's crop, flip and
    PCA lighting with the same generator seed, the same augmented batches within JPEG tolerance."""
    run_prepare(source, tmp_path / "dst")
    folder = FolderDataset(source, image_size=SIZE)
    prepared = load_dataset("folder", "train", tmp_path / "dst", image_size=SIZE)
    stats = compute_stats(folder.images)
    specs = [{"op": "random_crop", "size": 28}, {"op": "hflip"}, {"op": "pca_lighting", "std": 0.1}]
    pipeline = build_pipeline(specs, input_size=28, stats=stats)
    std = torch.tensor(stats.std).view(1, 3, 1, 1) * 255  # normalised units -> 8-bit levels
    for world in (1, 2):
        for rank in range(world):
            options = dict(batch_size=4, device="cpu", shuffle=True, seed=3, drop_last=False, rank=rank,
                           world_size=world)
            a, b = FolderLoader(folder, workers=0, **options), PreparedLoader(prepared, **options)
            assert len(a) == len(b) == 4
            for epoch in (0, 1):
                ga, gb = torch.Generator().manual_seed(epoch), torch.Generator().manual_seed(epoch)
                for fa, fb in zip(a.batches(epoch), b.batches(epoch), strict=True):
                    assert torch.equal(fa.labels, fb.labels) and fa.global_size == fb.global_size
                    assert_close_images(fb.images, fa.images)  # the same samples: others differ far more
                    diff = (pipeline(fa.images, ga) - pipeline(fb.images, gb)).mul(std).abs()
                    assert diff.mean() < MEAN_TOL and diff.max() < MAX_TOL
    order = [b.labels.tolist() for b in PreparedLoader(prepared, batch_size=4, device="cpu", shuffle=True,
                                                       seed=3).batches(1, start=2)]
    assert order == [b.labels.tolist() for b in FolderLoader(folder, batch_size=4, device="cpu", shuffle=True,
                                                             seed=3, workers=0).batches(1, start=2)]


def test_a_run_reads_a_prepared_folder(source, tmp_path):
    """`--data-dir DST` of the paper preset: load_split gives the prepared dataset (a train_subset included), and
    make_loader its on-device loader."""
    run_prepare(source, tmp_path / "dst")
    cfg = resolve("paper", {"data.data_dir": str(tmp_path / "dst"), "data.image_size": SIZE, "data.input_size": 28,
                            "data.train_subset": 9, "train.batch_size": 4})
    train = load_split(cfg, "train")
    folder = FolderDataset(source, image_size=SIZE)
    keep = torch.randperm(14, generator=torch.Generator().manual_seed(0))[:9].sort().values  # load_split's subset
    assert isinstance(train, PreparedDataset) and train.samples == [folder.samples[i] for i in keep.tolist()]
    assert_close_images(train.images, folder.decode(keep.tolist()))
    loader = make_loader(cfg, train, torch.device("cpu"), train=True)
    assert isinstance(loader, PreparedLoader)
    seen = sum((b.labels.tolist() for b in loader.batches(0)), [])
    assert len(seen) == (8 if cfg.train.drop_last else 9) and set(seen) <= set(train.labels.tolist())
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("folder", "train", tmp_path / "dst", image_size=64)
    one_line_error(excinfo, "32x32", "data.image_size", "--size 64")


def test_train_on_a_prepared_dataset(source, tmp_path, cli):
    """`alexnet train --data-dir DST` end to end (the small model, for speed: the data path is the paper's)."""
    run_prepare(source, tmp_path / "dst")
    code, _, err = cli("train", "--preset", "quick", "--out", tmp_path / "run", "--data-dir", tmp_path / "dst",
                       "--set", "data.dataset=folder", "--set", f"data.image_size={SIZE}",
                       "--set", "data.input_size=28",
                       "--set", "model.width=8", "--set", "model.hidden=32", "--epochs", "1", "--batch-size", "4",
                       "--quiet")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["test_count"] == 6 and metrics["step"] == (14 - metrics.get("val_count", 0)) // 4
    # where the epoch's time went (host seconds) and where its images were decoded: all on this CPU, the
    # epoch's and the start-up estimate's
    assert metrics["input_wait_s"] >= 0 and metrics["step_s"] > 0
    decoded = metrics["decoded_on"]
    assert decoded["nvimgcodec"] == decoded["nvjpeg"] == 0 and decoded["cpu"] >= 4 * metrics["step"]


def test_killed_prepare_resumes_without_redoing_shards(source, tmp_path, monkeypatch):
    run_prepare(source, tmp_path / "straight")
    write_shard, written = prepare_module._write_shard, []

    def killed_after_two(dst, stem, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt  # what a kill at this instant leaves: two finished shards, no third
        written.append(stem)
        return write_shard(dst, stem, *args, **kwargs)

    monkeypatch.setattr(prepare_module, "_write_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(source, tmp_path / "resumed")
    assert written == ["train/00000", "train/00001"]
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("folder", "train", tmp_path / "resumed", image_size=SIZE)
    one_line_error(excinfo, "did not finish", "alexnet prepare")

    written.clear()
    monkeypatch.setattr(prepare_module, "_write_shard", lambda dst, stem, *a, **k: written.append(stem)
                        or write_shard(dst, stem, *a, **k))
    run_prepare(source, tmp_path / "resumed")
    assert written == ["train/00002", "val/00000", "val/00001"]  # the finished shards were kept
    assert shard_files(tmp_path / "resumed") == shard_files(tmp_path / "straight")  # byte for byte

    # A shard lost with its manifest entry (the other way a kill can end) is written again, alone.
    manifest = read_manifest(tmp_path / "resumed")
    (tmp_path / "resumed" / "val" / "00001.jpegs").unlink()
    del manifest["splits"]["val"]["shards"][-1]
    (tmp_path / "resumed" / "manifest.json").write_text(json.dumps(manifest))
    written.clear()
    run_prepare(source, tmp_path / "resumed")
    assert written == ["val/00001"]
    assert shard_files(tmp_path / "resumed") == shard_files(tmp_path / "straight")


def test_a_damaged_shard_is_found_by_its_checksum(source, tmp_path, cli):
    dst = tmp_path / "dst"
    run_prepare(source, dst)
    load_dataset("folder", "train", dst, image_size=SIZE)  # verified once, and remembered
    shard = dst / "train" / "00001.jpegs"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit
    shard.write_bytes(bytes(data))
    with pytest.raises(AlexNetError) as excinfo:
        load_dataset("folder", "train", dst, image_size=SIZE)
    one_line_error(excinfo, shard, "sha256", "damaged", "alexnet prepare")
    code, _, err = cli("prepare", "--verify", dst)
    assert code == 2 and str(shard) in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("prepare", source, dst, "--size", SIZE, "--shard-size", 5, "--no-progress")  # repairs it
    assert code == 0, err
    assert torch.equal(load_dataset("folder", "train", dst, image_size=SIZE).labels, FolderDataset(source).labels)
    assert cli("prepare", "--verify", dst)[0] == 0
    shard.write_bytes(shard.read_bytes()[:100])  # truncated: caught by its size before any hashing
    with pytest.raises(AlexNetError, match="100 bytes, the manifest says"):
        load_dataset("folder", "train", dst, image_size=SIZE)


def test_a_bad_source_file_is_named_or_skipped(source, tmp_path, cli):
    bad = source / "train" / "bee" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 a JPEG header, then nothing")
    with pytest.raises(AlexNetError) as excinfo:
        run_prepare(source, tmp_path / "a")
    one_line_error(excinfo, bad, "--skip-bad-files")
    code, out, err = cli("prepare", source, tmp_path / "b", "--size", SIZE, "--no-progress")
    assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1, err

    with pytest.warns(UserWarning, match="broken.jpg"):
        code, out, err = cli("prepare", source, tmp_path / "b", "--size", SIZE, "--no-progress",
                             "--skip-bad-files")
    assert code == 0 and "1 bad file(s) skipped" in out, err
    folder = FolderDataset(source, image_size=SIZE)
    with pytest.warns(UserWarning, match="broken.jpg"):
        assert folder.drop_bad_files(folder.find_bad_files(), skip=True) == [str(bad)]
    ds = load_dataset("folder", "train", tmp_path / "b", image_size=SIZE)
    assert ds.samples == folder.samples and len(ds) == 14
    assert read_manifest(tmp_path / "b")["splits"]["train"]["skipped"][0].startswith(str(bad))


def test_cli_prepare_and_its_errors(source, tmp_path, cli):
    code, out, err = cli("prepare", source, tmp_path / "dst", "--size", SIZE, "--quality", 75, "--no-progress")
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'dst'}: train 14 images in 1 shard(s)"), err
    assert "val 6 images" in out and read_manifest(tmp_path / "dst")["quality"] == 75
    code, out, _ = cli("prepare", "--verify", tmp_path / "dst")
    assert code == 0 and "every shard matches" in out
    # an interrupted run must be resumed with the options it started with
    code, _, err = cli("prepare", source, tmp_path / "dst", "--size", SIZE, "--quality", 90, "--no-progress")
    assert code == 2 and "quality 75, not 90" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = cli("prepare", source, tmp_path / "other", "--no-progress")
    assert code == 2 and "not empty" in err and (tmp_path / "other" / "notes.txt").read_text() == "mine"
    for args, message in [((source, tmp_path / "q", "--quality", 101), "quality must be an integer 1..100"),
                          ((tmp_path / "missing", tmp_path / "x"), "does not exist"),
                          ((source, source), "folder of its own"),
                          ((source, source / "train" / "ant" / "00.jpg"), "is a file"),
                          ((source,), "alexnet prepare SRC DST"),
                          (("--verify", source), "manifest.json")]:
        code, _, err = cli("prepare", *args, "--no-progress")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)


@pytest.mark.gpu
def test_prepared_loader_on_cuda_matches_the_cpu(source, tmp_path):
    run_prepare(source, tmp_path / "dst")
    ds = load_dataset("folder", "train", tmp_path / "dst", image_size=SIZE)
    options = dict(batch_size=4, shuffle=True, seed=1, rank=1, world_size=2)
    gpu_loader = PreparedLoader(ds, device="cuda", decoder="nvjpeg", **options)
    for cpu, gpu in zip(PreparedLoader(ds, device="cpu", **options).batches(2), gpu_loader.batches(2), strict=True):
        assert gpu.images.device.type == "cuda" and gpu.images.dtype == torch.uint8
        assert torch.equal(gpu.labels.cpu(), cpu.labels) and gpu.global_size == cpu.global_size
        diff = (gpu.images.cpu().int() - cpu.images.int()).abs()
        assert diff.float().mean() < 1 and diff.max() <= 16  # nvJPEG's IDCT and upsampling are not libjpeg's
    # nvJPEG decoded every one of them (rank 1 of 2: 2 images per step of 4, 3 full steps and a last 2 / 2 = 1)
    assert gpu_loader.decoded_on == {"nvimgcodec": 0, "nvjpeg": 7, "cpu": 0}, gpu_loader.describe()


def test_decode_throughput_of_a_prepared_dataset_and_its_folder(source, tmp_path):
    """The benchmark's function runs on both kinds (speed itself is measured in benchmarks/, never asserted)."""
    run_prepare(source, tmp_path / "dst")
    prepared = decode_throughput(tmp_path / "dst", "cpu", batch_size=4, steps=2, warmup=1)
    folder = decode_throughput(source, "cpu", batch_size=4, steps=2, warmup=1, image_size=SIZE, workers=0)
    assert (prepared["kind"], folder["kind"]) == ("prepared", "folder")
    assert prepared["image_size"] == folder["image_size"] == SIZE and prepared["images"] == folder["images"] == 14
    assert prepared["images_per_sec"] > 0 and folder["images_per_sec"] > 0
