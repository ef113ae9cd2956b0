"""Batched decoding (alexnet.data.decode): on the CPU it is `decode_rgb` exactly, every kind of image ends as RGB
uint8, bad data is a one-line error naming it, and on CUDA nvJPEG agrees with libjpeg within a tolerance."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg, read_file, write_png

from alexnet.base.errors import AlexNetError
from alexnet.data.decode import decode_batch, decode_images, is_jpeg
from alexnet.data.folder import decode_rgb

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def smooth(height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3) colour ramps: JPEG's error on them is a few levels, whichever decoder."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([40 + 150 * y / height, 30 + 180 * x / width, 200 - 120 * (x + y) / (height + width)],
                    axis=-1).astype(np.uint8)


def write_images(folder: Path) -> list[Path]:
    """One file of every kind the readers meet in ImageNet-style folders."""
    folder.mkdir()
    rgb = smooth(40, 30)
    Image.fromarray(rgb).save(folder / "rgb.jpg", quality=90)                     # baseline, 4:2:0
    Image.fromarray(smooth(25, 50)).save(folder / "prog.jpg", quality=90, progressive=True)
    Image.fromarray(rgb).save(folder / "full.jpg", quality=90, subsampling=0)     # 4:4:4
    Image.fromarray(rgb[..., 0]).save(folder / "grey.jpg", quality=90)            # one channel
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=90)    # four channels (Adobe)
    write_png(torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), str(folder / "rgb.png"))
    Image.fromarray(np.dstack([rgb, np.full((40, 30), 128, np.uint8)])).save(folder / "alpha.png")
    Image.fromarray(rgb).save(folder / "rgb.bmp")                                 # Pillow's fallback
    return sorted(folder.iterdir())


def test_cpu_decode_is_decode_rgb_exactly(tmp_path):
    paths = write_images(tmp_path / "imgs")
    blobs = [read_file(str(p)) for p in paths]
    images = decode_images(blobs, "cpu", lambda i: str(paths[i]))
    for path, blob, image in zip(paths, blobs, images, strict=True):
        assert image.dtype == torch.uint8 and image.device.type == "cpu" and image.shape[0] == 3, path.name
        assert torch.equal(image, decode_rgb(path)), path.name  # both libjpeg-turbo (or libpng, Pillow) via the
        assert is_jpeg(blob) == (path.suffix == ".jpg")         # same torchvision call: bit for bit
    # ... and the batched call the brief names decodes a list on the CPU into the very same tensors
    jpegs = [(b, i) for b, i, p in zip(blobs, images, paths, strict=True) if p.suffix == ".jpg"]
    for (_, expected), got in zip(jpegs, decode_jpeg([b for b, _ in jpegs], mode=ImageReadMode.RGB), strict=True):
        assert torch.equal(got, expected)


def test_bad_data_is_a_one_line_error_naming_it(tmp_path):
    good = encode_jpeg(torch.from_numpy(smooth(16, 16)).permute(2, 0, 1).contiguous(), quality=90)
    for bad in (good[:200], torch.frombuffer(bytearray(b"plain text"), dtype=torch.uint8), good[:3]):
        with pytest.raises(AlexNetError) as excinfo:
            decode_images([good, bad], "cpu", ["ok.jpg", "shard 7 at byte 1234"].__getitem__)
        one_line_error(excinfo, "shard 7 at byte 1234", "cannot decode image")


def test_decode_batch_stacks_one_size_only():
    image = torch.from_numpy(smooth(16, 24)).permute(2, 0, 1).contiguous()
    blobs = [encode_jpeg(image, quality=90), encode_jpeg(image.flip(-1), quality=90)]
    batch = decode_batch(blobs, "cpu", str)
    assert batch.shape == (2, 3, 16, 24) and batch.dtype == torch.uint8
    with pytest.raises(AlexNetError, match="differ in size"):
        decode_batch([blobs[0], encode_jpeg(image[:, :8], quality=90)], "cpu", str)


@pytest.mark.gpu
def test_nvjpeg_agrees_with_libjpeg(tmp_path):
    """JPEGs decode on the GPU (nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's: a few levels
    apart on smooth images); PNG, BMP and CMYK fall back to the CPU decoder, bit-exact; all land on the GPU."""
    paths = write_images(tmp_path / "imgs")
    blobs = [read_file(str(p)) for p in paths]
    cpu = decode_images(blobs, "cpu", lambda i: str(paths[i]))
    gpu = decode_images(blobs, "cuda", lambda i: str(paths[i]))
    for path, c, g in zip(paths, cpu, gpu, strict=True):
        assert g.device.type == "cuda" and g.dtype == torch.uint8 and g.shape == c.shape, path.name
        diff = (g.cpu().int() - c.int()).abs()
        assert diff.float().mean() < 2 and diff.max() < 40, (path.name, diff.float().mean(), diff.max())
        if path.suffix != ".jpg":
            assert torch.equal(g.cpu(), c), path.name
    header_only = torch.frombuffer(bytearray(b"\xff\xd8\xff\xe0 then no JPEG at all"), dtype=torch.uint8)
    with pytest.raises(AlexNetError, match="broken.jpg"):  # nvJPEG refuses it, then so does the CPU: one line
        decode_images([blobs[0], header_only], "cuda", ["a.jpg", "broken.jpg"].__getitem__)
