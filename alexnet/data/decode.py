"""Batched image decoding on the training device. JPEGs go to `torchvision.io.decode_jpeg(list, device="cuda")`
(nvJPEG: one call decodes the whole batch on the GPU) when the device is CUDA, and to the same libjpeg-turbo call
on CPU threads otherwise. Anything else (PNG, BMP, GIF, WebP) and any JPEG nvJPEG refuses (CMYK, say) takes the
CPU path of `alexnet.data.folder.decode_rgb`: torchvision's decoders, then Pillow. Always uint8 RGB (3, H, W)."""

import functools
import io
import os
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


def is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() >= 3 and bytes(data[:3].tolist()) == JPEG_MAGIC


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


def decode_images(blobs: Sequence[torch.Tensor], device: torch.device | str,
                  name: Callable[[int], str]) -> list[torch.Tensor]:
    """Encoded images (uint8 (n,) CPU tensors) -> uint8 (3, H, W) RGB tensors on `device`, in order. `name(i)`
    (a file, or a shard and offset) is what an error about image i says; called only then, so it may be slow."""
    device = torch.device(device)
    out: list[torch.Tensor | None] = [None] * len(blobs)
    if device.type == "cuda":
        jpegs = [i for i, blob in enumerate(blobs) if is_jpeg(blob)]
        for i, image in zip(jpegs, _decode_nvjpeg([blobs[i] for i in jpegs], device), strict=True):
            out[i] = image
    rest = [i for i, image in enumerate(out) if image is None]
    for i, image in zip(rest, _cpu_pool().map(lambda i: decode_bytes(blobs[i], name(i)), rest), strict=True):
        out[i] = image.to(device)
    return [image for image in out if image is not None]  # every slot is filled by now


def decode_batch(blobs: Sequence[torch.Tensor], device: torch.device | str,
                 name: Callable[[int], str]) -> torch.Tensor:
    """`decode_images` stacked into one uint8 (N, 3, H, W) tensor: every image must have the same size."""
    images = decode_images(blobs, device, name)
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) > 1:
        raise AlexNetError(f"images of a batch differ in size ({', '.join(map(str, sorted(sizes)))}): "
                           f"{name(0)} ...")
    return torch.stack(images) if images else torch.empty(0, 3, 0, 0, dtype=torch.uint8, device=device)


def _decode_nvjpeg(blobs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """nvJPEG on the whole list at once; it returns nothing when any image fails, so then one at a time, with
    None for each image it refuses (the caller decodes those on the CPU)."""
    if not blobs:
        return []
    try:
        return list(decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        pass
    out: list[torch.Tensor | None] = []
    for blob in blobs:
        try:
            out.append(decode_jpeg(blob, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out.append(None)
    return out
