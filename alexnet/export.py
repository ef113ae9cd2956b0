"""`alexnet export`: a run's weights as ONNX (checked against onnxruntime before it is reported written) or
safetensors (tensors only; the config, classes and normalisation statistics go in the metadata). The exported
network takes normalised input, as the run's `data.normalize` says: (image / 255 - mean) / std with the
statistics written beside the weights (`standardize`), or the raw 0-255 image minus the run's mean image, which
safetensors files carry as the tensor `mean_image` (`mean_image`)."""

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
    out = output_file(out)
    trained = load_trained(checkpoint, device="cpu")
    with atomic_path(out) as tmp:
        info = (_onnx if fmt == "onnx" else _safetensors)(trained, tmp)
    return {"path": str(out), "format": fmt, **info}


def _metadata(trained: Trained) -> dict[str, str]:
    return {"config": json.dumps(trained.cfg.to_dict()), "classes": json.dumps(trained.classes),
            "normalize": trained.cfg.data.normalize,
            "mean": json.dumps(list(trained.stats.mean)), "std": json.dumps(list(trained.stats.std))}


def _safetensors(trained: Trained, path: Path) -> dict:
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise AlexNetError("safetensors export needs safetensors: pip install 'alexnet[export]'") from None

    state = {k: v.contiguous() for k, v in trained.model.state_dict().items()}
    if trained.cfg.data.normalize == "mean_image" and trained.stats.mean_image is not None:
        state["mean_image"] = trained.stats.mean_image.contiguous()
    save_file(state, str(path), metadata=_metadata(trained))
    return {"tensors": len(state)}


def _onnx(trained: Trained, path: Path) -> dict:
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (needed by torch.onnx.export(dynamo=True))
    except ImportError:
        raise AlexNetError("ONNX export needs onnx and onnxruntime: pip install 'alexnet[export]'") from None
    c, s = trained.stats.channels, trained.cfg.data.input_size
    example = torch.randn(2, c, s, s)
    model = trained.model.cpu().eval()
    torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True, external_data=False,
                      verbose=False)
    proto = onnx.load(str(path))
    for key, value in _metadata(trained).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    # The check: onnxruntime on a fresh batch of another size must agree with PyTorch.
    check = torch.randn(3, c, s, s)
    with torch.no_grad():
        expected = model(check).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: check.numpy()})[0]
    error = float(np.abs(got - expected).max())
    if not np.allclose(got, expected, rtol=1e-3, atol=1e-4):
        raise AlexNetError(f"ONNX check failed: onnxruntime differs from PyTorch by {error:.3g}; nothing written")
    return {"onnxruntime_max_abs_diff": error}
