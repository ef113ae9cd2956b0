"""Batched, per-sample image augmentation on the device: the AlexNet paper's (Krizhevsky et al. 2012, section 4.1)
random crops, horizontal reflections and PCA lighting, plus the usual extras (resized crops, rotation, colour
jitter, colour temperature, noise, random erasing) and the paper's 10-crop test-time view (section 4.1, "at test time").

Every op takes a float batch (B, C, H, W) in [0, 1] on any device and draws its per-sample parameters from
`generator` (which lives on that device) with ONE call per parameter: no Python loop over samples, so a batch
costs a handful of kernel launches whatever B is. This is the approach of KellerJordan's cifar10-airbench
(`batch_crop`, `batch_flip_lr`): the dataset stays on the device as uint8 and is augmented there.
Where a definition is torchvision's (colour jitter, centre crop, ten crop, RandomResizedCrop's boxes), the op
matches `torchvision.transforms.v2.functional`; the tests check it against torchvision.
`alexnet.data.pipeline` turns a list of op specs from the config into one callable.
"""

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from alexnet.base.errors import AlexNetError

# torchvision's luma weights (ITU-R 601-2; torchvision writes 0.2989, not 0.299, and we match it exactly).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def _uniform(lo: float, hi: float, n: int, generator, device) -> torch.Tensor:
    """n draws of U(lo, hi) in one kernel."""
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1), broadcast over C, H, W


# --- crops -----------------------------------------------------------------------------------------------------

def crop_at(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """The size x size window at (top[b], left[b]) of each sample b, by advanced indexing (one gather)."""
    b, c = x.shape[:2]
    steps = torch.arange(size, device=x.device)
    rows = (top.view(b, 1) + steps).view(b, 1, size, 1)
    cols = (left.view(b, 1) + steps).view(b, 1, 1, size)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return x[batch, chans, rows, cols]  # (B, C, size, size)


def random_crop(x: torch.Tensor, size: int | None = None, padding: int = 0, generator=None,
                fill: float = 0.0) -> torch.Tensor:
    """Pad by `padding` px of `fill`, then crop a size x size window at a random offset per sample.

    padding=0, size=224 on 256 x 256 images is the paper's "random 224 x 224 patches"; padding=4 at the input
    size is the CIFAR-style translation of up to 4 px. size None means the input height.
    """
    size = x.shape[-2] if size is None else size
    if padding:
        x = F.pad(x, (padding,) * 4, value=fill)
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise AlexNetError(f"augmentation 'random_crop': crop {size} is larger than the {h}x{w} (padded) image")
    b = x.shape[0]
    top = torch.randint(0, h - size + 1, (b,), generator=generator, device=x.device)
    left = torch.randint(0, w - size + 1, (b,), generator=generator, device=x.device)
    return crop_at(x, top, left, size)


def resized_crop_boxes(b: int, h: int, w: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), generator=None,
                       device=None, attempts: int = 10) -> torch.Tensor:
    """(b, 4) integer boxes (x1, y1, x2, y2) in pixels, sampled as torchvision's RandomResizedCrop does.

    torchvision tries up to 10 (area fraction, log-uniform aspect) pairs and keeps the first that fits, else
    falls back to the centre crop clamped to `ratio`. We draw all 10 attempts for every sample at once and keep
    the first that fits per sample (argmax over the fit mask), so the box distribution is torchvision's.
    """
    area = _uniform(scale[0], scale[1], b * attempts, generator, device).view(b, attempts) * (h * w)
    log_ratio = _uniform(math.log(ratio[0]), math.log(ratio[1]), b * attempts, generator, device)
    aspect = log_ratio.view(b, attempts).exp()
    bw = torch.sqrt(area * aspect).round()  # round half to even, like Python's round in torchvision
    bh = torch.sqrt(area / aspect).round()
    fits = (bw > 0) & (bw <= w) & (bh > 0) & (bh <= h)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first fitting attempt (0 when none fits)
    bw, bh = bw.gather(1, first).squeeze(1), bh.gather(1, first).squeeze(1)

    # torchvision's fallback: the whole image, cut down to the nearest allowed aspect ratio.
    in_ratio = w / h
    if in_ratio < min(ratio):
        fw, fh = w, round(w / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(h * max(ratio)), h
    else:
        fw, fh = w, h
    any_fit = fits.any(dim=1)
    bw = torch.where(any_fit, bw, torch.full_like(bw, fw))
    bh = torch.where(any_fit, bh, torch.full_like(bh, fh))

    # Uniform integer offset in [0, h - bh], drawn as floor(u * (h - bh + 1)): one draw serves every box size.
    u = torch.rand(2, b, generator=generator, device=device)
    top = torch.where(any_fit, (u[0] * (h - bh + 1)).floor().clamp(max=h - bh), (h - bh).div(2).floor())
    left = torch.where(any_fit, (u[1] * (w - bw + 1)).floor().clamp(max=w - bw), (w - bw).div(2).floor())
    return torch.stack([left, top, left + bw, top + bh], dim=1)


def random_resized_crop(x: torch.Tensor, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        generator=None) -> torch.Tensor:
    """A random box per sample (torchvision's RandomResizedCrop sampling), resized to size x size.

    All boxes go through ONE `roi_align` call. aligned=True puts pixel centres at +0.5, so a box's edges are
    pixel edges and each output sample sits where bilinear `interpolate(align_corners=False)` would put it.
    sampling_ratio=-1 averages ceil(box / size) bilinear samples per output pixel: exactly bilinear when the
    box is enlarged, a box-filter antialias when it is shrunk (torchvision uses antialias=True there).
    """
    b, _, h, w = x.shape
    boxes = resized_crop_boxes(b, h, w, scale, ratio, generator=generator, device=x.device)
    rois = torch.cat([torch.arange(b, device=x.device, dtype=x.dtype).view(b, 1), boxes.to(x.dtype)], dim=1)
    return roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size window, with torchvision's rounding of the offset."""
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise AlexNetError(f"augmentation 'center_crop': crop {size} is larger than the {h}x{w} image")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def ten_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (10, B, C, size, size): the paper's test-time views (section 4.1), in torchvision's order:
    top-left, top-right, bottom-left, bottom-right, centre, then the same five of the mirrored image."""
    h, w = images.shape[-2:]
    if size > h or size > w:
        raise AlexNetError(f"ten_crop: crop {size} is larger than the {h}x{w} image")

    def five(x):
        return [x[..., :size, :size], x[..., :size, w - size:], x[..., h - size:, :size],
                x[..., h - size:, w - size:], center_crop(x, size)]
    return torch.stack(five(images) + five(images.flip(-1)))


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to size x size (align_corners=False), antialiased only when shrinking: the d2l recipe
    turns 28 x 28 Fashion-MNIST into 224 x 224 this way, on the device instead of per image in the loader."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < h or size < w)


# --- flips and rotation ----------------------------------------------------------------------------------------

def flip_lr(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror left-right exactly the samples where mask (B,) is True."""
    return torch.where(_per_sample(mask), x.flip(-1), x)


def flip_ud(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror top-bottom exactly the samples where mask (B,) is True."""
    return torch.where(_per_sample(mask), x.flip(-2), x)


def hflip(x: torch.Tensor, p: float = 0.5, generator=None) -> torch.Tensor:
    """The paper's horizontal reflections: each sample mirrored with probability p."""
    return flip_lr(x, torch.rand(x.shape[0], generator=generator, device=x.device) < p)


def vflip(x: torch.Tensor, p: float = 0.5, generator=None) -> torch.Tensor:
    return flip_ud(x, torch.rand(x.shape[0], generator=generator, device=x.device) < p)


def rotate_by(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate sample b by degrees[b] counter-clockwise (torchvision's sign) about the image centre; corners
    that come from outside the image are 0. One affine_grid + grid_sample for the whole batch."""
    b, _, h, w = x.shape
    rad = torch.deg2rad(degrees.to(x.dtype))
    cos, sin = rad.cos(), rad.sin()
    zero = torch.zeros_like(cos)
    # theta maps output to input coordinates in [-1, 1] units, which stretch x by W/2 and y by H/2 pixels;
    # the H/W and W/H factors undo that so a non-square image rotates rigidly instead of shearing.
    theta = torch.stack([torch.stack([cos, -sin * (h / w), zero], dim=1),
                         torch.stack([sin * (w / h), cos, zero], dim=1)], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotate(x: torch.Tensor, degrees: float = 15.0, generator=None) -> torch.Tensor:
    """Rotate each sample by an angle drawn from U(-degrees, degrees)."""
    return rotate_by(x, _uniform(-degrees, degrees, x.shape[0], generator, x.device))


# --- colour ----------------------------------------------------------------------------------------------------

def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma with torchvision's weights; a 1-channel batch is its own grey."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = _per_sample(factor.to(x.dtype))
    return (f * x + (1 - f) * other).clamp(0, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-sample factor (B,): torchvision's adjust_brightness (blend with black)."""
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-sample factor (B,): torchvision's adjust_contrast (blend with the image's mean grey level)."""
    return _blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-sample factor (B,): torchvision's adjust_saturation (blend with the grey image; none for 1 channel)."""
    if x.shape[1] == 1:
        return x
    return _blend(x, grayscale(x), factor)


def color_jitter(x: torch.Tensor, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 generator=None) -> torch.Tensor:
    """Per-sample factors from U(max(0, 1 - v), 1 + v) for each non-zero v, as torchvision's ColorJitter.

    torchvision shuffles the order of the three per call; we apply brightness, contrast, saturation in that
    fixed order so the whole batch goes through the same three kernels.
    """
    b = x.shape[0]
    for amount, adjust in ((brightness, adjust_brightness), (contrast, adjust_contrast),
                           (saturation, adjust_saturation)):
        if amount > 0:
            x = adjust(x, _uniform(max(0.0, 1 - amount), 1 + amount, b, generator, x.device))
    return x


def color_temperature(x: torch.Tensor, strength: float = 0.1, generator=None) -> torch.Tensor:
    """Warm or cool each sample: t ~ U(-strength, strength), red scaled by 1 + t and blue by 1 - t
    (the seeds' "色温" augmentation). Needs RGB; a 1-channel batch is returned unchanged."""
    if x.shape[1] != 3:
        return x
    t = _uniform(-strength, strength, x.shape[0], generator, x.device)
    gains = torch.stack([1 + t, torch.ones_like(t), 1 - t], dim=1)  # (B, 3): R, G, B
    return (x * gains.view(-1, 3, 1, 1)).clamp(0, 1)


def pca_lighting(x: torch.Tensor, eigval, eigvec, std: float = 0.1, generator=None) -> torch.Tensor:
    """The paper's PCA colour augmentation (section 4.1): add [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T to every pixel,
    with a_i ~ N(0, std) drawn once per image, l_i / p_i the eigenvalues / eigenvectors (columns) of the RGB
    covariance (`Stats`, [0, 1] pixel scale, so the shift is in that scale too).

    No clamp, as in the paper: the shift is one RGB offset per image (with eigenvalues of a [0, 1]-scaled
    covariance, a few hundredths at most), and clamping would bend a zero-mean shift into a biased one near
    black and white. Normalisation follows, so values slightly outside [0, 1] are harmless.
    """
    if x.shape[1] != 3:
        raise AlexNetError(f"augmentation 'pca_lighting' needs RGB images, got {x.shape[1]} channel(s)")
    eigval = torch.as_tensor(eigval, dtype=x.dtype, device=x.device)  # (3,)
    eigvec = torch.as_tensor(eigvec, dtype=x.dtype, device=x.device)  # (3, 3), columns are eigenvectors
    alpha = std * torch.randn(x.shape[0], 3, generator=generator, device=x.device)  # (B, 3)
    shift = (alpha * eigval) @ eigvec.T  # (B, 3): row b is eigvec @ (alpha_b * eigval)
    return x + shift.view(-1, 3, 1, 1)


def gaussian_noise(x: torch.Tensor, std: float = 0.05, generator=None) -> torch.Tensor:
    """Add independent N(0, std) noise to every pixel, std in [0, 1] pixel units; clamped to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + std * noise).clamp(0, 1)


# --- occlusion -------------------------------------------------------------------------------------------------

def erasing_boxes(b: int, h: int, w: int, scale=(0.02, 0.33), ratio=(0.3, 3.3), generator=None, device=None,
                  attempts: int = 10) -> tuple[torch.Tensor, ...]:
    """torchvision's `RandomErasing.get_params` for b samples at once: per sample, the first of `attempts` draws
    (area U(scale) x h x w, aspect ratio exp(U(log ratio)), sides rounded half to even) whose box fits strictly
    inside, at a uniform position. Returns (top, left, height, width, found), each (b,); a sample with no fitting
    draw has found False (torchvision then leaves the image as it is)."""
    # torchvision draws in fp32 and computes the sides in Python floats (fp64): so do these, rounding alike
    area = h * w * _uniform(scale[0], scale[1], b * attempts, generator, device).view(b, attempts).double()
    aspect = torch.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), b * attempts, generator, device)
                       ).view(b, attempts).double()
    heights, widths = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    fits = (heights < h) & (widths < w)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first fitting draw (argmax: first maximum)
    height, width = heights.gather(1, first).squeeze(1).long(), widths.gather(1, first).squeeze(1).long()
    top = (torch.rand(b, generator=generator, device=device) * (h - height + 1)).floor().long()
    left = (torch.rand(b, generator=generator, device=device) * (w - width + 1)).floor().long()
    return top, left, height, width, fits.any(dim=1)


def random_erasing(x: torch.Tensor, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value: float = 0.0,
                   generator=None) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017; torchvision's `RandomErasing`, its defaults): with probability p per
    sample, a box of `erasing_boxes` set to `value` in every channel. Like every op here it runs before the
    normalisation (torchvision's usually runs after it), so `value` is in the units the ops see: [0, 1] pixels
    under `data.normalize: standardize` (0: black, Fashion-MNIST's background), the mean-centred image under
    `mean_image` (0: the mean image). In a pipeline that resizes afterwards (28 -> 224 px), the box is drawn at
    the small size and its edges are resampled with the image."""
    b, _, h, w = x.shape
    apply = torch.rand(b, generator=generator, device=x.device) < p
    top, left, height, width, found = erasing_boxes(b, h, w, scale, ratio, generator, x.device)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])  # (B, W)
    box = in_rows[:, :, None] & in_cols[:, None, :] & (apply & found)[:, None, None]
    return x.masked_fill(box.unsqueeze(1), value)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel; mean/std are per-channel sequences in [0, 1] pixel units."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std
