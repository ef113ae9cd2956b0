"""Layer-by-layer summary of a model, as d2l 7.1 prints it and as its exercise 4 asks ("which part uses the
memory, which the compute"). FLOPs come from `torch.utils.flop_counter` (a multiply-add counts as 2 FLOPs;
only matrix products and convolutions are counted, the elementwise ops being a rounding error next to them)."""

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerRow:
    name: str                # qualified module name, e.g. "features.0"
    type: str                # module class, e.g. "Conv2d"
    output_shape: list[int]  # for one image: [C, H, W] or [features]
    params: int              # parameters owned by this layer
    flops: int               # forward FLOPs for one image
    activation_bytes: int    # bytes of this layer's output for one image in float32


@dataclass(repr=False)
class Summary:
    """`str(s)` is the table `alexnet summary` prints; in Jupyter it shows as a Markdown table; `repr` is a line."""
    model: str
    input_shape: list[int]
    layers: list[LayerRow]
    total_params: int
    total_flops: int         # forward, one image
    train_flops: int         # forward + backward, one image (no gradient w.r.t. the input)
    activation_bytes: int    # sum of the layer outputs, one image, float32

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return format_summary(self)

    def __repr__(self) -> str:
        return (f"Summary(model={self.model!r}, input={'x'.join(map(str, self.input_shape))}, "
                f"{len(self.layers)} layers, {self.total_params:,} params, {_human(self.total_flops, 'FLOP')} "
                f"forward / image)")

    def _repr_markdown_(self) -> str:  # Jupyter's rich display
        return format_markdown(self)


def summarize(model: nn.Module, input_shape: tuple[int, int, int], name: str = "") -> Summary:
    """Run one image of `input_shape` (C, H, W) through `model` on the CPU and account for every leaf layer."""
    model = model.eval()
    leaves = [(n, m) for n, m in model.named_modules()
              if not list(m.children()) and not isinstance(m, nn.Identity)]
    shapes: dict[str, list[int]] = {}
    hooks = [m.register_forward_hook(_shape_hook(n, shapes)) for n, m in leaves]
    x = torch.randn(1, *input_shape)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    rows = []
    for n, m in leaves:
        if n not in shapes:  # a layer the forward pass never reached (e.g. unused head)
            continue
        shape = shapes[n]
        rows.append(LayerRow(
            name=n, type=type(m).__name__, output_shape=shape,
            params=sum(p.numel() for p in m.parameters(recurse=False)),
            flops=int(sum(per_module.get(f"{root}.{n}", {}).values())),
            activation_bytes=4 * _numel(shape)))
    return Summary(model=name or root, input_shape=list(input_shape), layers=rows,
                   total_params=sum(p.numel() for p in model.parameters()),
                   total_flops=int(counter.get_total_flops()),
                   train_flops=training_flops(model, input_shape),
                   activation_bytes=sum(r.activation_bytes for r in rows))


def training_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Forward + backward FLOPs for one image (the figure MFU is computed against). The backward pass of a
    convolution or matrix product costs its forward twice over (the gradient of its input and of its weights),
    except in the first layer, whose input needs no gradient. Counted from the forward FLOPs of each layer
    rather than by tracing the backward: torch's counter takes a grouped convolution's weight gradient for an
    ungrouped one (the two-column paper net would be over-counted by 14 %)."""
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, _o, n=n: order.append(n)) for n, m in leaves]
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    root, per_module = type(model).__name__, counter.get_flop_counts()
    forward = [int(sum(per_module.get(f"{root}.{n}", {}).values())) for n in order]
    first = next((f for f in forward if f), 0)
    return 3 * int(counter.get_total_flops()) - first


def _shape_hook(name: str, shapes: dict):
    def hook(_module, _inputs, output):
        shapes[name] = list(output.shape[1:])
    return hook


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _human(n: float, unit: str = "", base: int = 1000) -> str:
    prefixes = ["", "K", "M", "G", "T"] if base == 1000 else ["", "Ki", "Mi", "Gi", "Ti"]
    for p in prefixes:
        if abs(n) < base or p == prefixes[-1]:
            return f"{n:.1f} {p}{unit}".rstrip() if p else f"{n:.0f} {unit}".rstrip()
        n /= base
    return str(n)


def format_summary(s: Summary) -> str:
    head = ("layer", "type", "output shape", "params", "FLOPs", "activations")
    body = [(r.name, r.type, "x".join(map(str, r.output_shape)), f"{r.params:,}", _human(r.flops),
             _human(r.activation_bytes, "B", 1024)) for r in s.layers]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def line(row) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
    rule = "-" * len(line(head))
    return "\n".join([
        f"{s.model}: input {'x'.join(map(str, s.input_shape))}, one image, float32",
        rule, line(head), rule, *map(line, body), rule,
        f"total parameters          {s.total_params:,}",
        f"forward FLOPs / image     {_human(s.total_flops, 'FLOP')}  ({s.total_flops:,})",
        f"train FLOPs / image       {_human(s.train_flops, 'FLOP')}  (forward + backward)",
        f"activation memory / image {_human(s.activation_bytes, 'B', 1024)}  (sum of layer outputs)",
        "FLOPs count a multiply-add as 2 (torch.utils.flop_counter: convolutions and matrix products).",
    ])


def format_markdown(s: Summary) -> str:
    """The table of `format_summary` as Markdown (the totals under it), for Jupyter and reports."""
    rows = [f"| {r.name} | {r.type} | {'x'.join(map(str, r.output_shape))} | {r.params:,} | {_human(r.flops)} | "
            f"{_human(r.activation_bytes, 'B', 1024)} |" for r in s.layers]
    return "\n".join([
        f"**{s.model}**: input {'x'.join(map(str, s.input_shape))}, one image, float32", "",
        "| layer | type | output shape | params | FLOPs | activations |", "|---|---|---|--:|--:|--:|", *rows, "",
        f"total parameters **{s.total_params:,}**; forward {_human(s.total_flops, 'FLOP')} "
        f"({s.total_flops:,}), train {_human(s.train_flops, 'FLOP')} (forward + backward) and activations "
        f"{_human(s.activation_bytes, 'B', 1024)} per image. FLOPs count a multiply-add as 2 "
        "(torch.utils.flop_counter: convolutions and matrix products).",
    ])
