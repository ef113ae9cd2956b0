"""`alexnet summary`: per-layer output shapes, parameters, FLOPs and activation memory of a registered model."""

import json

from alexnet.base.errors import AlexNetError
from alexnet.cli.args import choose_model, parse_option, parse_shape


def add_parser(sub) -> None:
    p = sub.add_parser("summary", help="per-layer output shapes, parameters, FLOPs and activation memory")
    p.add_argument("--model", default="d2l", help="registered model (default d2l; `alexnet list models`)")
    p.add_argument("--input", type=parse_shape, metavar="C,H,W", help="input shape (default: the model's own)")
    p.add_argument("--classes", type=int, help="number of output classes")
    p.add_argument("--option", type=parse_option, action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. --option lrn=true --option two_column=true")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_summary)


def cmd_summary(args) -> int:
    from alexnet.analysis import format_summary, summarize
    from alexnet.models import create_model, model_info

    info = model_info(choose_model(args.model))
    shape = args.input or info.input_shape
    options = dict(args.option)
    for key in ("in_channels", "input_size"):
        if key in options:
            raise AlexNetError(f"--option {key} is set by --input C,H,W")
    options.update(in_channels=shape[0], input_size=(shape[1], shape[2]))
    if args.classes is not None:
        options["num_classes"] = args.classes
    summary = summarize(create_model(args.model, **options), shape, name=args.model)
    print(json.dumps(summary.to_dict()) if args.json else format_summary(summary))
    return 0
