"""`alexnet export`: a run's weights as ONNX (checked against onnxruntime before it is reported written) or
safetensors (tensors only; the config, classes and normalisation statistics go in the metadata). The metadata's
`input` says what the file takes, as the run's `data.normalize` decides:

* `standardize`: (image / 255 - mean) / std per channel, with `mean` and `std` in the metadata (both formats);
* `mean_image`: safetensors holds the bare net and the run's mean image as the tensor `mean_image` (subtract it
  from the 0-255 image at `data.image_size`, before the crop); the ONNX graph subtracts the mean image itself,
  so it takes the 0-255 pixels of the view the run evaluates (centre crop, `data.input_size`).

`--out` must end in the format's suffix and may not be the checkpoint it reads."""

import json
from pathlib import Path

import numpy as np
import torch

from alexnet.base.errors import AlexNetError
from alexnet.base.files import atomic_path, output_file
from alexnet.run.trained import Trained, load_trained

FORMATS = ("onnx", "safetensors")


def export(checkpoint: Path, out: Path, fmt: str) -> dict:
    if fmt not in FORMATS:
        raise AlexNetError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = output_file(out, (f".{fmt}",))
    if Path(checkpoint).exists() and out.exists() and out.samefile(checkpoint):
        raise AlexNetError(f"--out {out} is the checkpoint being exported; choose another file")
    trained = load_trained(checkpoint, device="cpu")
    with atomic_path(out) as tmp:
        info = (_onnx if fmt == "onnx" else _safetensors)(trained, tmp)
    return {"path": str(out), "format": fmt, **info}


class MeanImageInput(torch.nn.Module):
    """The net behind the paper's input scaling: 0-255 pixels of the evaluated view, minus that view of the mean
    image. The eval pipeline only crops and resizes (linear) around the subtraction, so the view of the mean image
    is what the pipeline makes of an all-zero image, negated."""

    mean_view: torch.Tensor

    def __init__(self, trained: Trained):
        super().__init__()
        mean_image = trained.stats.mean_image
        if mean_image is None:
            raise AlexNetError("this run has no mean image (data.normalize: mean_image without statistics)")
        zeros = torch.zeros(1, *mean_image.shape, dtype=torch.uint8)
        self.register_buffer("mean_view", -trained.pipeline(zeros)[0])
        self.net = trained.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - self.mean_view)


def _metadata(trained: Trained, fmt: str) -> dict[str, str]:
    size, normalize = trained.cfg.data.input_size, trained.cfg.data.normalize
    meta = {"config": json.dumps(trained.cfg.to_dict()), "classes": json.dumps(trained.classes),
            "normalize": normalize}
    if normalize == "mean_image":
        meta["input"] = (f"0-255 pixels, {size}x{size} centre view; the graph subtracts the mean image" if fmt == "onnx"
                         else "0-255 pixels minus the tensor mean_image, at data.image_size, before the crop")
    else:
        meta["input"] = f"(pixels / 255 - mean) / std per channel, {size}x{size}"
        meta |= {"mean": json.dumps(list(trained.stats.mean)), "std": json.dumps(list(trained.stats.std))}
    return meta


def _safetensors(trained: Trained, path: Path) -> dict:
    try:
        from safetensors.torch import save
    except ImportError:
        raise AlexNetError("safetensors export needs safetensors: pip install 'alexnet[export]'") from None

    state = {k: v.contiguous() for k, v in trained.model.state_dict().items()}
    if trained.cfg.data.normalize == "mean_image" and trained.stats.mean_image is not None:
        state["mean_image"] = trained.stats.mean_image.contiguous()
    path.write_bytes(save(state, metadata=_metadata(trained, "safetensors")))  # a full disk: atomic_path's error
    return {"tensors": len(state)}


def _onnx(trained: Trained, path: Path) -> dict:
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (needed by torch.onnx.export(dynamo=True))
    except ImportError:
        raise AlexNetError("ONNX export needs onnx and onnxruntime: pip install 'alexnet[export]'") from None
    c, s = trained.stats.channels, trained.cfg.data.input_size
    model, pixels = trained.model.cpu().eval(), trained.cfg.data.normalize == "mean_image"
    if pixels:
        model = MeanImageInput(trained).eval()

    def batch(n: int) -> torch.Tensor:  # pixels (about 0-255) for a mean-image graph, else normalised values
        x = torch.randn(n, c, s, s)
        return x * 60 + 120 if pixels else x
    example = batch(2)
    torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True, external_data=False,
                      verbose=False)
    proto = onnx.load(str(path))
    for key, value in _metadata(trained, "onnx").items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    # The check: onnxruntime on a fresh batch of another size must agree with PyTorch.
    check = batch(3)
    with torch.no_grad():
        expected = model(check).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: check.numpy()})[0]
    error = float(np.abs(got - expected).max())
    if not np.allclose(got, expected, rtol=1e-3, atol=1e-4):
        raise AlexNetError(f"ONNX check failed: onnxruntime differs from PyTorch by {error:.3g}; nothing written")
    return {"onnxruntime_max_abs_diff": error}
