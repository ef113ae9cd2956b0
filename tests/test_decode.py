"""Batched decoding (alexnet.data.decode): on the CPU it is `decode_rgb` exactly, every kind of image ends as RGB
uint8, bad data is a one-line error naming it; the chain of GPU backends (nvImageCodec -> nvJPEG -> CPU) counts
where each image went, warns once per fallback and lets out-of-memory through (its logic run on the CPU with
fakes); on CUDA nvJPEG (and nvImageCodec, when installed) decodes, and agrees with libjpeg within a tolerance."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line_error
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg, read_file, write_png

import alexnet.data.decode as decode_module
from alexnet.base.errors import AlexNetError
from alexnet.data.decode import DECODER_ENV, Decoder, decode_batch, decode_images, decoder_choice, is_jpeg
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


def jpegs(n: int, height: int = 16, width: int = 24) -> list[torch.Tensor]:
    """n different JPEGs of one size (the ramps shifted sideways), as a batch of a prepared dataset."""
    images = [np.roll(smooth(height, width), 3 * i, axis=1) for i in range(n)]
    return [encode_jpeg(torch.from_numpy(image).permute(2, 0, 1).contiguous(), quality=90) for image in images]


def cpu_reference(blobs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [decode_jpeg(blob, mode=ImageReadMode.RGB) for blob in blobs]


def test_the_choice_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv(DECODER_ENV, raising=False)
    assert decoder_choice() == "auto" and decoder_choice("cpu") == "cpu"
    monkeypatch.setenv(DECODER_ENV, "nvjpeg")
    assert decoder_choice() == "nvjpeg" and decoder_choice("nvimgcodec-hw") == "nvimgcodec-hw"
    monkeypatch.setenv(DECODER_ENV, "turbo")
    with pytest.raises(AlexNetError) as excinfo:
        Decoder("cpu")
    one_line_error(excinfo, "ALEXNET_DECODER", "'turbo'", "nvimgcodec-hw")


def test_on_a_cpu_every_image_is_decoded_and_counted_there():
    blobs = jpegs(3)
    decoder = Decoder("cpu", "nvimgcodec")
    assert decoder.backend == "cpu" and "needs a CUDA device" in decoder.note
    batch = decoder.decode_batch(blobs, str)
    assert torch.equal(batch, torch.stack(cpu_reference(blobs)))
    assert decoder.decoded_on == {"nvimgcodec": 0, "nvjpeg": 0, "cpu": 3}
    assert decoder.describe() == {"requested": "nvimgcodec", "backend": "cpu", "device": "cpu",
                                  "note": decoder.note, "decoded_on": decoder.decoded_on, "fallbacks": {},
                                  "nvimgcodec": None}
    assert Decoder("cpu").note == ""  # auto on a CPU: nothing to say


class FakeNvJpeg:
    """torchvision's decode_jpeg as the GPU chain calls it (with `device=`), run on the CPU: it refuses the
    blobs in `refuse` (a whole list containing one fails, as nvJPEG's batched call does) or raises `error`. The
    CPU path's own calls (no `device`) go to the real function."""

    def __init__(self, refuse=(), error=None, error_on_single=None):
        self.real, self.refuse = decode_module.decode_jpeg, {blob.data_ptr() for blob in refuse}
        self.error, self.error_on_single, self.calls = error, error_on_single, []

    def __call__(self, data, mode, device=None):
        if device is None:
            return self.real(data, mode=mode)
        batch = isinstance(data, list)
        self.calls.append(len(data) if batch else 1)
        if self.error is not None and batch:
            raise self.error
        if self.error_on_single is not None and not batch:
            raise self.error_on_single
        if any(blob.data_ptr() in self.refuse for blob in (data if batch else [data])):
            raise RuntimeError("Error while decoding JPEG images: nvjpegDecode failed: 2")
        return self.real(data, mode=mode, device="cpu")


def gpu_chain(monkeypatch, nvjpeg: FakeNvJpeg, nvimgcodec=None) -> Decoder:
    """A Decoder whose GPU chain (nvimgcodec -> nvjpeg -> cpu) runs on the CPU with fakes."""
    monkeypatch.setattr(decode_module, "decode_jpeg", nvjpeg)
    decoder = Decoder("cpu")
    decoder.backend, decoder.nvimgcodec = ("nvjpeg", None) if nvimgcodec is None else ("nvimgcodec", nvimgcodec)
    return decoder


def test_images_nvjpeg_refuses_go_to_the_cpu_counted_with_one_warning(monkeypatch):
    blobs = jpegs(5)
    decoder = gpu_chain(monkeypatch, FakeNvJpeg(refuse=[blobs[3]]))
    with pytest.warns(RuntimeWarning, match=r"nvjpeg refused 1 of 5 JPEGs of a batch; cpu decodes them instead"):
        first = decoder.decode(blobs, str)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a second fallback of a kind is counted, not warned about
        second = decoder.decode(blobs, str)
    for images in (first, second):
        assert all(torch.equal(a, b) for a, b in zip(images, cpu_reference(blobs), strict=True))
    assert decoder.decoded_on == {"nvimgcodec": 0, "nvjpeg": 8, "cpu": 2}
    assert decoder.describe()["fallbacks"] == {"nvjpeg -> cpu": {"images": 2, "reason": "nvjpeg refused 1 of 5 "
                                                                 "JPEGs of a batch"}}
    assert decode_module.decode_jpeg.calls == [5, 1, 1, 1, 1, 1] * 2  # the batch, then one at a time


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   RuntimeError("Error while decoding JPEG images: CUDA error: out of memory")])
@pytest.mark.parametrize("where", ["batch", "single"])
def test_out_of_memory_is_raised_not_taken_for_a_refusal(monkeypatch, error, where):
    blobs = jpegs(3)
    fake = FakeNvJpeg(error=error) if where == "batch" else FakeNvJpeg(refuse=[blobs[0]], error_on_single=error)
    decoder = gpu_chain(monkeypatch, fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # and nothing is said about a fallback: there was none
        with pytest.raises(RuntimeError, match="out of memory"):
            decoder.decode(blobs, str)
    assert decoder.decoded_on == {"nvimgcodec": 0, "nvjpeg": 0, "cpu": 0}


class FakeNvImgCodec:
    """`NvImgCodec` as the chain uses it: (3, H, W) tensors, None where it refuses; or an exception."""

    def __init__(self, refuse=(), error=None):
        self.refuse, self.error, self.retired = {blob.data_ptr() for blob in refuse}, error, 0

    def decode(self, blobs):
        if self.error is not None:
            raise self.error
        return [None if blob.data_ptr() in self.refuse else decode_jpeg(blob, mode=ImageReadMode.RGB)
                for blob in blobs]

    def retire(self):
        self.retired += 1


def test_nvimgcodec_then_nvjpeg_then_the_cpu(monkeypatch):
    blobs = jpegs(6)
    nvimgcodec = FakeNvImgCodec(refuse=[blobs[1], blobs[4]])
    decoder = gpu_chain(monkeypatch, FakeNvJpeg(refuse=[blobs[4]]), nvimgcodec)
    with pytest.warns(RuntimeWarning) as caught:
        batch = decoder.decode_batch(blobs, str)
    assert torch.equal(batch, torch.stack(cpu_reference(blobs)))
    assert decoder.decoded_on == {"nvimgcodec": 4, "nvjpeg": 1, "cpu": 1}
    assert sorted(decoder.fallbacks) == ["nvimgcodec -> nvjpeg", "nvjpeg -> cpu"]
    assert len([w for w in caught if w.category is RuntimeWarning]) == 2  # one for each
    assert nvimgcodec.retired == 1  # its buffers are released after the batch's stack, not before


def test_an_nvimgcodec_that_fails_a_batch_is_replaced_by_nvjpeg_and_says_so(monkeypatch):
    blobs = jpegs(4)
    decoder = gpu_chain(monkeypatch, FakeNvJpeg(), FakeNvImgCodec(error=RuntimeError("CUDA driver too old")))
    with pytest.warns(RuntimeWarning, match=r"nvImageCodec failed a batch \(CUDA driver too old\)"):
        batch = decoder.decode_batch(blobs, str)
    assert torch.equal(batch, torch.stack(cpu_reference(blobs)))
    assert decoder.backend == "nvjpeg" and decoder.nvimgcodec is None
    decoder.decode_batch(blobs, str)
    assert decoder.decoded_on == {"nvimgcodec": 0, "nvjpeg": 8, "cpu": 0}
    oom = gpu_chain(monkeypatch, FakeNvJpeg(), FakeNvImgCodec(error=torch.cuda.OutOfMemoryError("out of memory")))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        oom.decode_batch(blobs, str)
    assert oom.backend == "nvimgcodec"


@pytest.mark.gpu
def test_nvjpeg_decodes_on_the_gpu_and_agrees_with_libjpeg(tmp_path):
    """JPEGs decode on the GPU (nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's: a few levels
    apart on smooth images), and the decoder's count says nvJPEG did it; PNG and BMP go to the CPU decoder,
    bit-exact; all land on the GPU."""
    paths = write_images(tmp_path / "imgs")
    blobs = [read_file(str(p)) for p in paths]
    cpu = decode_images(blobs, "cpu", lambda i: str(paths[i]))
    decoder = Decoder("cuda", "nvjpeg")
    gpu = decoder.decode(blobs, lambda i: str(paths[i]))
    for path, c, g in zip(paths, cpu, gpu, strict=True):
        assert g.device.type == "cuda" and g.dtype == torch.uint8 and g.shape == c.shape, path.name
        diff = (g.cpu().int() - c.int()).abs()
        assert diff.float().mean() < 2 and diff.max() < 40, (path.name, diff.float().mean(), diff.max())
        if path.suffix != ".jpg":
            assert torch.equal(g.cpu(), c), path.name
    counts = decoder.decoded_on
    # rgb, full (4:4:4), grey and progressive are nvJPEG's; CMYK may go either way; PNG x2 and BMP are the CPU's
    assert counts["nvjpeg"] >= 4 and counts["cpu"] >= 3 and counts["nvjpeg"] + counts["cpu"] == len(paths), counts
    baseline = [p for p in paths if p.name in ("rgb.jpg", "full.jpg", "grey.jpg", "prog.jpg")]
    only = Decoder("cuda", "nvjpeg")
    only.decode([read_file(str(p)) for p in baseline], str)
    assert only.decoded_on == {"nvimgcodec": 0, "nvjpeg": 4, "cpu": 0} and only.fallbacks == {}
    header_only = torch.frombuffer(bytearray(b"\xff\xd8\xff\xe0 then no JPEG at all"), dtype=torch.uint8)
    with pytest.raises(AlexNetError, match="broken.jpg"):  # nvJPEG refuses it, then so does the CPU: one line
        decoder.decode([blobs[0], header_only], ["a.jpg", "broken.jpg"].__getitem__)


@pytest.mark.gpu
@pytest.mark.parametrize("choice", ["nvimgcodec", "nvimgcodec-hw", "nvimgcodec-gpu"])
def test_nvimgcodec_decodes_on_the_gpu_when_installed(choice):
    """The hardware engines (what auto takes) must decode. nvImageCodec's CUDA-only backend did not start on the
    H200 of 2026-12-04 (nvImageCodec 0.9.0 from its wheel, driver 580): there it must fall back to nvJPEG and
    say so, in the record and with a warning, and still decode every image."""
    pytest.importorskip("nvidia.nvimgcodec")
    blobs = jpegs(8, 64, 48)  # baseline 4:2:0, as `alexnet prepare` writes them: the hardware engines' kind
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoder = Decoder("cuda", choice)
    if choice == "nvimgcodec-gpu" and decoder.backend != "nvimgcodec":
        assert decoder.backend == "nvjpeg" and "nvimgcodec -> nvjpeg" in decoder.fallbacks, decoder.describe()
        assert any("nvjpeg" in str(w.message) for w in caught), [str(w.message) for w in caught]
        assert decoder.decode_batch(blobs, str).shape == (8, 3, 64, 48)
        assert decoder.decoded_on == {"nvimgcodec": 0, "nvjpeg": 8, "cpu": 0}
        return
    assert decoder.backend == "nvimgcodec", decoder.describe()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # on a stream of its own, as the loader's decoding thread
        batch = decoder.decode_batch(blobs, str)
    torch.cuda.current_stream().wait_stream(stream)
    assert batch.shape == (8, 3, 64, 48) and batch.dtype == torch.uint8 and batch.device.type == "cuda"
    diff = (batch.cpu().int() - torch.stack(cpu_reference(blobs)).int()).abs()
    assert diff.float().mean() < 2 and diff.max() < 40, (diff.float().mean(), diff.max())
    assert decoder.decoded_on == {"nvimgcodec": 8, "nvjpeg": 0, "cpu": 0}, decoder.describe()
    assert decoder.describe()["nvimgcodec"]["backends"] == {"nvimgcodec": ["HW_GPU_ONLY", "GPU_ONLY"],
                                                            "nvimgcodec-hw": ["HW_GPU_ONLY"],
                                                            "nvimgcodec-gpu": ["GPU_ONLY"]}[choice]
