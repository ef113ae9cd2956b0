"""From config to the per-step augmentation: training-set statistics (`Stats`, `compute_stats`: the per-channel
mean/std used to normalise and the RGB PCA behind the AlexNet paper's lighting noise, section 4.1) and
`build_pipeline`, which validates a list of op specs before training starts and returns the `Pipeline` the
trainer calls on every uint8 batch, on the batch's device. The ops themselves are in `alexnet.data.augment`.

    specs = [{"op": "random_crop", "padding": 2}, {"op": "hflip"}, {"op": "pca_lighting", "std": 0.1}]
    pipeline = build_pipeline(specs, input_size=224, stats=compute_stats(train_images))
    x = pipeline(batch_uint8, generator)   # float32 (B, C, 224, 224), normalised
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from alexnet.base.errors import AlexNetError
from alexnet.config import NORMALIZATIONS
from alexnet.data import augment as A

# --- statistics ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stats:
    """Per-channel statistics of a training set, pixel values scaled to [0, 1], and its mean image."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eigval: tuple[float, ...] | None = None  # RGB covariance eigenvalues, descending (3 channels only)
    eigvec: tuple[tuple[float, ...], ...] | None = None  # 3x3, column j is the eigenvector of eigval[j]
    mean_image: torch.Tensor | None = field(default=None, compare=False)  # float32 (C, H, W), 0-255 scale

    @property
    def channels(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict:
        """Plain lists and floats, safe for JSON and for `torch.load(weights_only=True)` checkpoints."""
        return {"mean": list(self.mean), "std": list(self.std),
                "eigval": None if self.eigval is None else list(self.eigval),
                "eigvec": None if self.eigvec is None else [list(row) for row in self.eigvec],
                "mean_image": self.mean_image}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Stats":
        try:
            mean, std = tuple(map(float, d["mean"])), tuple(map(float, d["std"]))
            eigval = None if d.get("eigval") is None else tuple(map(float, d["eigval"]))
            eigvec = None if d.get("eigvec") is None else tuple(tuple(map(float, r)) for r in d["eigvec"])
            mean_image = d.get("mean_image")
            if mean_image is not None and not (isinstance(mean_image, torch.Tensor) and mean_image.dim() == 3):
                raise TypeError("mean_image must be a (C, H, W) tensor")
        except (KeyError, TypeError, ValueError) as exc:
            raise AlexNetError(f"invalid dataset statistics {dict(d)!r}: {exc}") from None
        if len(mean) != len(std) or (eigval is not None and (len(eigval) != 3 or len(eigvec or ()) != 3)):
            raise AlexNetError(f"invalid dataset statistics: mean/std/eigval lengths {len(mean)}/{len(std)}/"
                               f"{None if eigval is None else len(eigval)}")
        return cls(mean, std, eigval, eigvec, None if mean_image is None else mean_image.float())


def compute_stats(images: torch.Tensor, max_images: int = 20000, seed: int = 0) -> Stats:
    """Mean, std and (for RGB) the covariance PCA of the pixels of `images` (uint8 (N, C, H, W)).

    Above `max_images` images, a seeded random subset of that many is used. Sums are accumulated in float64
    chunk by chunk on the images' device, so 20k ImageNet-sized images never need a 24 GB float copy.
    std is the unbiased one (torch.std's default) and equals sqrt(diag(covariance)).
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] == 0:
        raise AlexNetError(f"compute_stats needs a non-empty uint8 (N, C, H, W) tensor, got "
                           f"{images.dtype} {tuple(images.shape)}")
    n, c = images.shape[:2]
    if n > max_images:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_images]
        images = images[order.to(images.device)]
    total = torch.zeros(c, dtype=torch.float64, device=images.device)
    outer = torch.zeros(c, c, dtype=torch.float64, device=images.device)
    image_sum = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
    pixels = 0
    for chunk in images.split(256):
        image_sum += chunk.sum(dim=0, dtype=torch.float64)
        x = chunk.to(torch.float64).div_(255).transpose(0, 1).reshape(c, -1)  # (C, pixels)
        total += x.sum(dim=1)
        outer += x @ x.T
        pixels += x.shape[1]
    mean = total / pixels
    cov = (outer - pixels * torch.outer(mean, mean)) / max(pixels - 1, 1)
    # A channel that never varies would divide by zero when normalising; one grey level (1/255) is the
    # smallest spread 8-bit data can have.
    std = cov.diagonal().clamp(min=0).sqrt().clamp(min=1 / 255)
    eigval = eigvec = None
    if c == 3:
        val, vec = torch.linalg.eigh(cov)  # ascending
        # Descending, like the paper's lambda_1..3; rounding can leave a zero eigenvalue slightly negative.
        val, vec = val.flip(0).clamp(min=0), vec.flip(1)
        # eigh's eigenvector signs are arbitrary; fix them (largest component positive) so the same data always
        # gives the same checkpointed numbers. The lighting noise is symmetric, so the sign changes nothing.
        signs = vec.gather(0, vec.abs().argmax(dim=0, keepdim=True)).sign()
        vec = vec * signs
        eigval, eigvec = tuple(val.tolist()), tuple(map(tuple, vec.tolist()))
    mean_image = (image_sum / len(images)).float().cpu()  # the paper's "mean activity over the training set"
    return Stats(tuple(mean.tolist()), tuple(std.tolist()), eigval, eigvec, mean_image)


# --- op registry -----------------------------------------------------------------------------------------------

INPUT_SIZE = object()  # default filled in with build_pipeline's input_size


@dataclass(frozen=True)
class _Param:
    kind: str  # "int", "float" or "pair" (two floats)
    default: Any  # None: the op picks (random_crop's size = the image height it sees)
    check: Callable[[Any], str | None] = lambda v: None  # why a value is out of range, or None


@dataclass(frozen=True)
class _Op:
    fn: Callable
    params: dict[str, _Param]
    random: bool


def _positive(v):
    return None if v > 0 else "must be > 0"


def _non_negative(v):
    return None if v >= 0 else "must be >= 0"


def _unit(v):
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def _degrees(v):
    return None if 0 <= v <= 180 else "must be in [0, 180] degrees"


def _scale(v):
    return None if 0 < v[0] <= v[1] <= 1 else "must be (lo, hi) with 0 < lo <= hi <= 1"


def _ratio(v):
    return None if 0 < v[0] <= v[1] else "must be (lo, hi) with 0 < lo <= hi"


OPS: dict[str, _Op] = {
    "random_crop": _Op(A.random_crop, {"size": _Param("int", None, _positive),
                                       "padding": _Param("int", 0, _non_negative),
                                       "fill": _Param("float", 0.0, _unit)}, random=True),
    "random_resized_crop": _Op(A.random_resized_crop, {"size": _Param("int", INPUT_SIZE, _positive),
                                                       "scale": _Param("pair", (0.08, 1.0), _scale),
                                                       "ratio": _Param("pair", (3 / 4, 4 / 3), _ratio)}, True),
    "hflip": _Op(A.hflip, {"p": _Param("float", 0.5, _unit)}, random=True),
    "vflip": _Op(A.vflip, {"p": _Param("float", 0.5, _unit)}, random=True),
    "rotate": _Op(A.rotate, {"degrees": _Param("float", 15.0, _degrees)}, random=True),
    "color_jitter": _Op(A.color_jitter, {"brightness": _Param("float", 0.0, _non_negative),
                                         "contrast": _Param("float", 0.0, _non_negative),
                                         "saturation": _Param("float", 0.0, _non_negative)}, random=True),
    "color_temperature": _Op(A.color_temperature, {"strength": _Param("float", 0.1, _unit)}, random=True),
    "pca_lighting": _Op(A.pca_lighting, {"std": _Param("float", 0.1, _non_negative)}, random=True),
    "gaussian_noise": _Op(A.gaussian_noise, {"std": _Param("float", 0.05, _non_negative)}, random=True),
    "random_erasing": _Op(A.random_erasing, {"p": _Param("float", 0.5, _unit),
                                             "scale": _Param("pair", (0.02, 0.33), _scale),
                                             "ratio": _Param("pair", (0.3, 3.3), _ratio),
                                             "value": _Param("float", 0.0, _unit)}, random=True),
    "resize": _Op(A.resize, {"size": _Param("int", INPUT_SIZE, _positive)}, random=False),
    "center_crop": _Op(A.center_crop, {"size": _Param("int", INPUT_SIZE, _positive)}, random=False),
}


def list_ops() -> list[str]:
    return sorted(OPS)


def _typed(where: str, name: str, param: _Param, value):
    """value converted to the param's type, or an AlexNetError; bools are rejected (True is an int in Python)."""
    def is_number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if param.kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if param.kind == "float" and is_number(value):
        return float(value)
    if param.kind == "pair" and isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_number, value)):
        return (float(value[0]), float(value[1]))
    wanted = {"int": "an integer", "float": "a number", "pair": "a pair of numbers [lo, hi]"}[param.kind]
    raise AlexNetError(f"{where}: '{name}' must be {wanted}, got {value!r}")


def _resolve(index: int, spec, input_size: int, stats: Stats) -> tuple[str, dict]:
    """One validated spec -> (op name, keyword arguments with every default filled in)."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("op"), str):
        raise AlexNetError(f"augmentation #{index + 1} must be a table with an 'op' name, got {spec!r}")
    name = spec["op"]
    if name not in OPS:
        raise AlexNetError(f"unknown augmentation op '{name}' (#{index + 1}); known: {', '.join(list_ops())}")
    where, op = f"augmentation '{name}' (#{index + 1})", OPS[name]
    unknown = sorted(set(spec) - {"op"} - set(op.params))
    if unknown:
        raise AlexNetError(f"{where}: unknown parameter '{unknown[0]}' (takes: {', '.join(op.params) or 'none'})")
    kwargs = {}
    for pname, param in op.params.items():
        value = param.default if pname not in spec else _typed(where, pname, param, spec[pname])
        value = input_size if value is INPUT_SIZE else value
        problem = None if value is None else param.check(value)
        if problem:
            raise AlexNetError(f"{where}: '{pname}' {problem}, got {spec[pname]!r}")
        kwargs[pname] = value
    if name == "pca_lighting":
        if stats.eigval is None:
            raise AlexNetError(f"{where}: needs RGB images, the dataset has {stats.channels} channel(s)")
        kwargs.update(eigval=stats.eigval, eigvec=stats.eigvec)
    return name, kwargs


# --- the pipeline ----------------------------------------------------------------------------------------------

# Ops that clamp to [0, 1]: meaningless once the mean image is subtracted (values centred on 0).
CLAMPING_OPS = ("color_jitter", "color_temperature", "gaussian_noise")


class Pipeline:
    """uint8 (B, C, H, W) -> float32 (B, C, S, S), on the images' device, then a bilinear resize to S x S if the
    ops did not already produce it. Two normalisations:

    * `standardize` (the d2l / torchvision habit): to [0, 1], the configured ops in order, (x - mean) / std per
      channel;
    * `mean_image` (the paper, section 2: "subtracting the mean activity over the training set from each
      pixel"): raw 0-255 pixels minus the training set's mean image, at the images' full size before any crop;
      the ops run on that centred image at a [0, 1] scale (so PCA lighting keeps its units), which is then
      brought back to the 0-255 scale the paper's N(0, 0.01) initialisation was chosen for.
    """

    def __init__(self, steps: list[tuple[str, dict]], input_size: int, stats: Stats, normalize: str = "standardize"):
        self.steps, self.input_size, self.stats, self.normalize = steps, input_size, stats, normalize

    @property
    def is_random(self) -> bool:
        return any(OPS[name].random for name, _ in self.steps)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None and self.is_random:
            raise ValueError("this pipeline has random ops and needs a torch.Generator on the images' device")
        x = self._start(images)
        for name, kwargs in self.steps:
            op = OPS[name]
            x = op.fn(x, **kwargs, generator=generator) if op.random else op.fn(x, **kwargs)
        return self._finish(x)

    def ten_views(self, images: torch.Tensor, crop: int) -> torch.Tensor:
        """The paper's test-time views (section 4.1): the four corner `crop` x `crop` patches and the centre
        one of the full image, and their reflections, each normalised as in training and resized to the input
        size: (10, B, C, S, S)."""
        views = A.ten_crop(self._start(images), crop)
        return self._finish(views.flatten(0, 1)).view(10, len(images), *views.shape[2:3],
                                                      self.input_size, self.input_size)

    def _start(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(f"Pipeline takes uint8 (B, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] != self.stats.channels:
            raise AlexNetError(f"images have {images.shape[1]} channel(s) but the dataset statistics have "
                               f"{self.stats.channels}")
        x = images.to(torch.float32)
        if self.normalize == "mean_image":
            mean = self.stats.mean_image
            if mean is None or tuple(mean.shape) != tuple(images.shape[1:]):
                raise AlexNetError(f"the mean image is {None if mean is None else tuple(mean.shape)} but the "
                                   f"images are {tuple(images.shape[1:])}")
            x = x - mean.to(x.device)
        return x.div_(255)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise before the resize: bilinear weights sum to 1, so the result is the same, and for the d2l
        # recipe (28 -> 224) it touches 64x fewer pixels.
        x = x * 255 if self.normalize == "mean_image" else A.normalize(x, self.stats.mean, self.stats.std)
        return A.resize(x, self.input_size)

    def __repr__(self) -> str:
        ops = [f"{name}({', '.join(f'{k}={v}' for k, v in kw.items() if k not in ('eigval', 'eigvec'))})"
               for name, kw in self.steps]
        return f"Pipeline([{', '.join(ops)}], input_size={self.input_size}, normalize={self.normalize})"


def build_pipeline(specs: list[dict], *, input_size: int, stats: Stats, normalize: str = "standardize") -> Pipeline:
    """Validate `specs` (unknown op or parameter, wrong type, out-of-range value -> one-line AlexNetError naming
    the op) and return the Pipeline. Crop sizes against image sizes are checked when the images arrive."""
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0:
        raise AlexNetError(f"input size must be a positive integer, got {input_size!r}")
    if specs is None or isinstance(specs, (str, Mapping)):
        raise AlexNetError(f"augmentations must be a list of tables, got {specs!r}")
    if normalize not in NORMALIZATIONS:
        raise AlexNetError(f"data.normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    steps = [_resolve(i, spec, input_size, stats) for i, spec in enumerate(specs)]
    clamping = [name for name, _ in steps if name in CLAMPING_OPS]
    if normalize == "mean_image" and clamping:
        raise AlexNetError(f"augmentation '{clamping[0]}' clamps to [0, 1] and cannot follow the mean-image "
                           f"subtraction (data.normalize: mean_image); use data.normalize: standardize")
    return Pipeline(steps, input_size, stats, normalize)
