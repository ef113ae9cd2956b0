"""Batched image decoding on the training device, and a record of where each image was decoded.

A `Decoder` sends a batch of JPEGs, on a CUDA device, to one GPU backend, and what a backend refuses to the next:

    nvimgcodec  nvImageCodec (`nvidia.nvimgcodec`, optional: the `nvidia-nvimgcodec-cu13` and `nvidia-nvjpeg`
                wheels): the GPU's hardware JPEG engines (A100, H100, H200), then its CUDA decoder
    nvjpeg      `torchvision.io.decode_jpeg(list, device="cuda")`: one nvJPEG call for the whole batch
    cpu         libjpeg-turbo via the same torchvision call on CPU threads (`decode_rgb`'s path: torchvision's
                decoders, then Pillow), then copied to the device; anything not JPEG (PNG, BMP...) goes here

`data.decoder` is not a config field: the choice is the loader's `decoder` argument, else the environment
variable ALEXNET_DECODER: auto (nvimgcodec when importable, else nvjpeg) | nvimgcodec (hardware engines, then
CUDA) | nvimgcodec-hw | nvimgcodec-gpu | nvjpeg | cpu. On a CPU device everything is `cpu`. A fallback (a backend
that cannot start, fails, or refuses images) warns once per decoder and pair of backends, and is counted:
`Decoder.decoded_on` (images per backend) and `Decoder.describe()` are what a run and the decode benchmark
record. Running out of GPU memory is raised, never taken for a refusal. Always uint8 RGB (3, H, W).
"""

import functools
import io
import os
import threading
import warnings
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as F

from alexnet.base.errors import AlexNetError, one_line

JPEG_MAGIC = b"\xff\xd8\xff"  # SOI marker, then the first segment's marker
CPU_THREADS = min(16, os.cpu_count() or 1)  # the decoders release the GIL, so threads use every core
DECODER_ENV = "ALEXNET_DECODER"
DECODERS = ("auto", "nvimgcodec", "nvimgcodec-hw", "nvimgcodec-gpu", "nvjpeg", "cpu")
BACKENDS = ("nvimgcodec", "nvjpeg", "cpu")  # where an image can end up decoded: the keys of `decoded_on`
# nvImageCodec backends per choice, tried in order: an image the first refuses goes to the next
NVIMGCODEC_KINDS = {"auto": ("HW_GPU_ONLY", "GPU_ONLY"), "nvimgcodec": ("HW_GPU_ONLY", "GPU_ONLY"),
                    "nvimgcodec-hw": ("HW_GPU_ONLY",), "nvimgcodec-gpu": ("GPU_ONLY",)}


def is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() >= 3 and bytes(data[:3].tolist()) == JPEG_MAGIC


def is_out_of_memory(error: BaseException) -> bool:
    """A CUDA allocation failure, whichever library raised it: the caller must see it, not a fallback."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def decoder_choice(choice: str | None = None) -> str:
    """`choice`, else $ALEXNET_DECODER, else auto; an unknown name is a one-line AlexNetError."""
    choice = choice or os.environ.get(DECODER_ENV) or "auto"
    if choice not in DECODERS:
        raise AlexNetError(f"decoder must be one of {', '.join(DECODERS)} (argument or ${DECODER_ENV}), "
                           f"got {choice!r}")
    return choice


def decode_bytes(data: torch.Tensor, name: str) -> torch.Tensor:
    """One encoded image (uint8 (n,) CPU bytes) -> uint8 (3, H, W) RGB on the CPU, as `decode_rgb` decodes a
    file: greyscale, CMYK, palette and alpha converted, 16 bits scaled, an animated GIF's first frame. An
    undecodable image is a one-line AlexNetError naming `name`."""
    try:
        if is_jpeg(data):
            image = decode_jpeg(data, mode=ImageReadMode.RGB)  # what decode_image calls for a JPEG
        else:
            image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError:
        image = _decode_with_pil(data, name)  # torchvision decodes JPEG, PNG, GIF and WebP only; BMP needs Pillow
    image = image[0] if image.ndim == 4 else image
    return image if image.dtype == torch.uint8 else F.to_dtype(image, torch.uint8, scale=True)


def _decode_with_pil(data: torch.Tensor, name: str) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
            array = np.asarray(im.convert("RGB"))  # (H, W, 3)
    except Exception as e:  # Pillow signals bad data with OSError, ValueError, SyntaxError, DecompressionBombError
        raise AlexNetError(f"{name}: cannot decode image ({one_line(e)})") from e
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


@functools.cache
def _cpu_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=CPU_THREADS, thread_name_prefix="alexnet-decode")


class Decoder:
    """Decodes batches on `device` with the chosen backend (module docstring) and counts where each image went.
    Thread-safe counts; one decoding thread at a time (a loader's)."""

    def __init__(self, device: torch.device | str, choice: str | None = None):
        self.device = torch.device(device)
        self.requested = decoder_choice(choice)
        self.counts: Counter[str] = Counter()
        self.fallbacks: dict[str, dict] = {}  # "nvjpeg -> cpu": {"images": n, "reason": the first one}
        self.note = ""  # how the backend was chosen, when that is not plain
        self._lock = threading.Lock()
        self.nvimgcodec: NvImgCodec | None = None  # the nvImageCodec decoder in use, if any
        self.backend = self._start()

    def _start(self) -> str:
        if self.device.type != "cuda":
            if self.requested not in ("auto", "cpu"):
                self.note = f"{self.requested} needs a CUDA device: decoded on the CPU"
            return "cpu"
        if self.requested in ("nvjpeg", "cpu"):
            return self.requested
        try:
            self.nvimgcodec = NvImgCodec(self.device, NVIMGCODEC_KINDS[self.requested])
            return "nvimgcodec"
        except ImportError as e:
            reason = f"nvidia.nvimgcodec is not importable ({one_line(e)})"
            if self.requested == "auto":  # nothing was promised: say so in the record, without a warning
                self.note = f"auto: {reason}; torchvision's nvJPEG decodes"
                return "nvjpeg"
        except Exception as e:  # the library's own errors (a CUDA or driver mismatch) are RuntimeErrors or others
            if is_out_of_memory(e):
                raise
            reason = f"nvImageCodec did not start ({one_line(e)})"
        self._fell_back("nvimgcodec", "nvjpeg", 0, reason)
        return "nvjpeg"

    @property
    def decoded_on(self) -> dict[str, int]:
        """Images decoded so far per backend (every key of BACKENDS)."""
        with self._lock:
            return {backend: self.counts[backend] for backend in BACKENDS}

    def describe(self) -> dict:
        """What a run or a benchmark records: the choice, the backend it resolved to, where images went, and
        every fallback with its first reason."""
        with self._lock:
            fallbacks = {pair: dict(entry) for pair, entry in self.fallbacks.items()}
        nvimgcodec = self.nvimgcodec
        return {"requested": self.requested, "backend": self.backend, "device": str(self.device),
                "note": self.note, "decoded_on": self.decoded_on, "fallbacks": fallbacks,
                "nvimgcodec": None if nvimgcodec is None else {"version": nvimgcodec.version,
                                                               "backends": list(nvimgcodec.kinds)}}

    def decode(self, blobs: Sequence[torch.Tensor], name: Callable[[int], str]) -> list[torch.Tensor]:
        """Encoded images (uint8 (n,) CPU tensors) -> uint8 (3, H, W) RGB tensors on the device, in order.
        `name(i)` (a file, or a shard and offset) is what an error about image i says; called only then."""
        out: list[torch.Tensor | None] = [None] * len(blobs)
        jpegs = [i for i, blob in enumerate(blobs) if is_jpeg(blob)] if self.backend != "cpu" else []
        if self.nvimgcodec is not None and jpegs:
            jpegs = self._fill(out, jpegs, self._run_nvimgcodec([blobs[i] for i in jpegs]), "nvimgcodec", "nvjpeg")
        if jpegs:
            jpegs = self._fill(out, jpegs, self._run_nvjpeg([blobs[i] for i in jpegs]), "nvjpeg", "cpu")
        rest = [i for i, image in enumerate(out) if image is None]
        for i, image in zip(rest, _cpu_pool().map(lambda i: decode_bytes(blobs[i], name(i)), rest), strict=True):
            out[i] = image.to(self.device)
        self._count("cpu", len(rest))
        return [image for image in out if image is not None]  # every slot is filled by now

    def decode_batch(self, blobs: Sequence[torch.Tensor], name: Callable[[int], str]) -> torch.Tensor:
        """`decode` stacked into one uint8 (N, 3, H, W) tensor: every image must have the same size."""
        images = self.decode(blobs, name)
        sizes = {tuple(image.shape) for image in images}
        if len(sizes) > 1:
            raise AlexNetError(f"images of a batch differ in size ({', '.join(map(str, sorted(sizes)))}): "
                               f"{name(0)} ...")
        batch = torch.stack(images) if images else torch.empty(0, 3, 0, 0, dtype=torch.uint8, device=self.device)
        if self.nvimgcodec is not None:
            self.nvimgcodec.retire()  # the stack above is the last reader of its buffers
        return batch

    def _fill(self, out: list, todo: list[int], images: list[torch.Tensor | None], backend: str,
              next_backend: str) -> list[int]:
        """Put `images` (None: refused) into `out` at `todo`; count them; the refused ones go on, and say so."""
        refused = []
        for i, image in zip(todo, images, strict=True):
            if image is None:
                refused.append(i)
            else:
                out[i] = image
        self._count(backend, len(todo) - len(refused))
        if refused:
            self._fell_back(backend, next_backend, len(refused), f"{backend} refused {len(refused)} of "
                            f"{len(todo)} JPEGs of a batch")
        return refused

    def _run_nvimgcodec(self, blobs: list[torch.Tensor]) -> list[torch.Tensor | None]:
        assert self.nvimgcodec is not None
        try:
            return self.nvimgcodec.decode(blobs)
        except Exception as e:
            if is_out_of_memory(e):
                raise
            self.nvimgcodec, self.backend = None, "nvjpeg"  # a library that fails a whole batch is not retried
            self._fell_back("nvimgcodec", "nvjpeg", 0, f"nvImageCodec failed a batch ({one_line(e)}); "
                            "nvJPEG decodes from now on")
            return [None] * len(blobs)

    def _run_nvjpeg(self, blobs: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """nvJPEG on the whole list at once; it returns nothing when any image fails, so then one at a time, with
        None for each image it refuses (CMYK, say). Out of memory is raised."""
        try:
            return list(decode_jpeg(blobs, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError as e:
            if is_out_of_memory(e):
                raise
        out: list[torch.Tensor | None] = []
        for blob in blobs:
            try:
                out.append(decode_jpeg(blob, mode=ImageReadMode.RGB, device=self.device))
            except RuntimeError as e:
                if is_out_of_memory(e):
                    raise
                out.append(None)
        return out

    def _count(self, backend: str, n: int) -> None:
        with self._lock:
            self.counts[backend] += n

    def _fell_back(self, backend: str, to: str, images: int, reason: str) -> None:
        pair = f"{backend} -> {to}"
        with self._lock:
            first = pair not in self.fallbacks
            entry = self.fallbacks.setdefault(pair, {"images": 0, "reason": reason})
            entry["images"] += images
        if first:
            warnings.warn(f"decoding on {self.device}: {reason}; {to} decodes them instead (counted in the "
                          f"run's decoded_on; further ones are not warned about)", RuntimeWarning, stacklevel=3)


class NvImgCodec:
    """nvImageCodec's batched decode on one CUDA device (an optional dependency, imported here only), in
    interleaved uint8 RGB, on the caller's current stream. The decoded buffers belong to nvImageCodec; they are
    kept referenced until an event recorded after their last reader (the batch's stack) has completed, so they
    are never freed under a pending copy, whatever nvImageCodec's own freeing does."""

    def __init__(self, device: torch.device, kinds: Sequence[str]):
        from nvidia import nvimgcodec  # optional: ImportError means "not installed", and the caller says so

        index = device.index if device.index is not None else torch.cuda.current_device()
        self.nv, self.device = nvimgcodec, torch.device("cuda", index)
        self.version, self.kinds = str(getattr(nvimgcodec, "__version__", "?")), tuple(kinds)
        backends = [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, kind)) for kind in kinds]
        self.decoder = nvimgcodec.Decoder(device_id=index, backends=backends)
        self.params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.SRGB,
                                              sample_format=nvimgcodec.SampleFormat.I_RGB,
                                              apply_exif_orientation=False)  # as torchvision's decode_jpeg
        self._held: deque[tuple[torch.cuda.Event | None, list]] = deque()

    def decode(self, blobs: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """uint8 (3, H, W) device tensors (views of nvImageCodec's (H, W, 3) buffers), None where it refused an
        image."""
        self.retire()  # what earlier calls returned has been read by the work queued until now
        stream = torch.cuda.current_stream(self.device)
        arrays = [blob.numpy() for blob in blobs]  # views of the bytes, held with the code streams made of them
        codes = [self.nv.CodeStream(array) for array in arrays]
        images = self.decoder.decode(codes, params=self.params, cuda_stream=stream.cuda_stream)
        out = [None if image is None else self._tensor(image).permute(2, 0, 1) for image in images]
        self._held.append((None, [arrays, codes, images, out]))
        return out

    def _tensor(self, image) -> torch.Tensor:
        try:
            tensor = torch.from_dlpack(image)  # the protocol: ordered after the decode on the current stream
        except TypeError:
            tensor = torch.from_dlpack(image.to_dlpack())  # an older signature of __dlpack__
        if tensor.ndim != 3 or tensor.shape[2] != 3 or tensor.dtype != torch.uint8 or tensor.device != self.device:
            raise RuntimeError(f"nvImageCodec returned {tuple(tensor.shape)} {tensor.dtype} on {tensor.device}, "
                               f"not (H, W, 3) uint8 on {self.device}")
        return tensor

    def retire(self) -> None:
        """Mark what was decoded so far as read by the work queued until now; free what the GPU is done with."""
        stream = torch.cuda.current_stream(self.device)
        for k, (event, refs) in enumerate(self._held):
            if event is None:
                event = torch.cuda.Event()
                event.record(stream)
                self._held[k] = (event, refs)
        while self._held and self._held[0][0] is not None and self._held[0][0].query():  # no host sync
            self._held.popleft()


@functools.cache
def _shared(device: str, choice: str) -> Decoder:
    return Decoder(device, choice)


def decode_images(blobs: Sequence[torch.Tensor], device: torch.device | str,
                  name: Callable[[int], str]) -> list[torch.Tensor]:
    """`Decoder.decode` with the process's decoder for `device` (and $ALEXNET_DECODER)."""
    return _shared(str(torch.device(device)), decoder_choice()).decode(blobs, name)


def decode_batch(blobs: Sequence[torch.Tensor], device: torch.device | str,
                 name: Callable[[int], str]) -> torch.Tensor:
    """`Decoder.decode_batch` with the process's decoder for `device` (and $ALEXNET_DECODER)."""
    return _shared(str(torch.device(device)), decoder_choice()).decode_batch(blobs, name)
