"""d2l 7.1, exercise 4: "Analyze the computational performance of AlexNet. What is the dominant part for the memory
footprint? What is the dominant part for computation? How about memory bandwidth when computing the results?"

No training: `alexnet.analysis.summarize` runs one image through each variant and accounts for every leaf layer.
Each weight layer (conv1..5, fc6..8) is a stage together with the activation, LRN, pooling and dropout layers
after it. Per stage and per block (convolutions vs fully connected): parameters, forward FLOPs for one image (a
multiply-add = 2), activation memory (the sum of the layer outputs for one image in float32, as `summarize`
counts it: in-place ReLUs and the Flatten view included) and FLOPs per byte of weights, the arithmetic
intensity at batch 1: the fully connected layers do 2 FLOPs per 4-byte weight they read, so at small batches
they are bound by memory bandwidth, not by compute.
"""

import time
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from alexnet.analysis.summary import Summary, summarize
from alexnet.experiments.common import (
    check_budget,
    finish,
    machine,
    markdown_table,
    provenance,
    start_study,
    study_results,
)
from alexnet.models import create_model, model_info
from alexnet.report.plots import save_figure

NAME = "complexity"
TITLE = "Where AlexNet's parameters, FLOPs and activation memory go (d2l 7.1, exercise 4)"
CLAIM = ("d2l 7.1, exercise 4: which part of AlexNet dominates memory, which computation, and what of memory "
         "bandwidth? The book's own figure (the English edition's AlexNet discussion): the last two hidden layers "
         "need 6400x4096 and 4096x4096 matrices, 164 MB of memory and 81 MFLOPs of computation.")
MODELS = ("d2l", "paper", "torchvision", "small")
BUDGETS = {"tiny": {"models": ("d2l", "small")}, "small": {"models": MODELS}, "full": {"models": MODELS}}
METRICS = ("params", "flops", "activation_bytes")


def stages(summary: Summary) -> list[dict]:
    """Group the layers into weight-layer stages: conv1 (+ ReLU, LRN, pool), ..., fc6 (+ ReLU, dropout), ..."""
    out: list[dict] = []
    convs = fcs = 0
    for layer in summary.layers:
        if layer.type in ("Conv2d", "Linear"):
            convs, fcs = convs + (layer.type == "Conv2d"), fcs + (layer.type == "Linear")
            name = f"conv{convs}" if layer.type == "Conv2d" else f"fc{convs + fcs}"
            block = "conv" if layer.type == "Conv2d" else "fc"
            out.append({"stage": name, "block": block, "layers": [], "params": 0, "flops": 0,
                        "activation_bytes": 0})
        if not out:  # a parameter-free layer before any weight layer (none in these nets)
            out.append({"stage": "input", "block": "conv", "layers": [], "params": 0, "flops": 0,
                        "activation_bytes": 0})
        stage = out[-1]
        stage["layers"].append(layer.name)
        for key in METRICS:
            stage[key] += getattr(layer, key)
    return out


def blocks(summary: Summary) -> dict[str, dict]:
    """Convolutional block (features, pooling, flatten) vs fully connected block (classifier)."""
    out: dict[str, dict[str, Any]] = {b: dict.fromkeys(METRICS, 0) for b in ("conv", "fc")}
    for layer in summary.layers:
        block = out["fc" if layer.name.startswith("classifier") else "conv"]
        for key in METRICS:
            block[key] += getattr(layer, key)
    for block in out.values():
        block["flops_per_weight_byte"] = round(block["flops"] / (4 * block["params"]), 2) if block["params"] else None
    return out


def analyse(name: str) -> dict:
    c, h, w = model_info(name).input_shape
    model = create_model(name, in_channels=c, input_size=(h, w))
    summary = summarize(model, (c, h, w), name=name)
    return {"model": name, "input_shape": [c, h, w], "total_params": summary.total_params,
            "total_flops": summary.total_flops, "train_flops": summary.train_flops,
            "activation_bytes": summary.activation_bytes, "layer_params_sum": sum(r.params for r in summary.layers),
            "stages": stages(summary), "blocks": blocks(summary), "layers": summary.to_dict()["layers"]}


def _share(part: int, total: int) -> str:
    return f"{100 * part / total:.1f}%" if total else "-"


def stage_tables(models: list[dict]) -> str:
    parts = []
    for m in models:
        rows = [[s["stage"], f"{s['params']:,}", _share(s["params"], m["total_params"]), f"{s['flops'] / 1e6:,.1f}",
                 _share(s["flops"], m["total_flops"]), f"{s['activation_bytes'] / 1024:,.1f}",
                 _share(s["activation_bytes"], m["activation_bytes"])] for s in m["stages"]]
        parts.append(f"**{m['model']}** ({'x'.join(map(str, m['input_shape']))}):\n\n" + markdown_table(
            ["stage", "params", "% params", "MFLOPs", "% FLOPs", "activations KiB", "% activations"], rows))
    return "\n\n".join(parts)


def plot(models: list[dict], path: Path) -> None:
    totals = {"params": "total_params", "flops": "total_flops", "activation_bytes": "activation_bytes"}
    titles = {"params": "% of parameters", "flops": "% of forward FLOPs", "activation_bytes": "% of activation memory"}
    names = [s["stage"] for s in models[0]["stages"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6), sharey=True)
    width = 0.8 / len(models)
    for ax, key in zip(axes, METRICS, strict=True):
        for i, m in enumerate(models):
            by_stage = {s["stage"]: 100 * s[key] / max(m[totals[key]], 1) for s in m["stages"]}
            ax.bar([j + (i - (len(models) - 1) / 2) * width for j in range(len(names))],
                   [by_stage.get(n, 0) for n in names], width, label=m["model"])
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_title(titles[key], fontsize=9)
        ax.grid(True, axis="y", alpha=0.4)
    axes[0].set_ylabel("% of the model's total")
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


def run(out: Path, budget: str = "small", device: str = "auto", data_dir: str | None = None) -> dict:
    spec = check_budget(budget, BUDGETS)
    out, t0 = start_study(out, NAME, budget), time.perf_counter()
    info = {**provenance(NAME, out, budget, device, data_dir), "machine": machine("cpu")}  # one image, CPU
    models = [analyse(name) for name in spec["models"]]
    plot(models, out / "plot.png")
    rows = []
    for m in models:
        for block, b in m["blocks"].items():
            rows.append([m["model"], block, b["params"], _share(b["params"], m["total_params"]),
                         round(b["flops"] / 1e6, 1), _share(b["flops"], m["total_flops"]),
                         round(b["activation_bytes"] / 1024, 1), _share(b["activation_bytes"], m["activation_bytes"]),
                         b["flops_per_weight_byte"]])
    notes = ["forward FLOPs for one image, a multiply-add counted as 2 (torch.utils.flop_counter: convolutions "
             "and matrix products only)",
             "FLOPs / weight byte at batch 1: each weight (4 bytes) is read once per image; at batch B the fully "
             "connected layers' figure is B times larger, the convolutions' already is high"]
    results = study_results(info, CLAIM, TITLE, t0, notes, {"models": models}, out=out)
    columns = ["model", "block", "params", "% params", "MFLOPs", "% FLOPs", "activations KiB", "% activations",
               "FLOPs / weight byte"]
    return finish(out, results, columns, rows, extra_md="Per stage:\n\n" + stage_tables(models))
