"""Command line: parse arguments, build a config, call the library. No logic of its own.

Every user error (`AlexNetError`, bad arguments) is one line on stderr and exit code 2.
"""

import argparse
import json
import sys

from alexnet.errors import AlexNetError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2, as argparse)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W as three positive integers, got {text!r}")
    return shape


def _parse_option(text: str) -> tuple[str, object]:
    import yaml
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def cmd_summary(args) -> int:
    from alexnet.analysis import format_summary, summarize
    from alexnet.models import create_model, model_info

    info = model_info(args.model)
    shape = args.input or info.input_shape
    options = dict(args.option)
    options.update(in_channels=shape[0], input_size=(shape[1], shape[2]))
    if args.classes is not None:
        options["num_classes"] = args.classes
    summary = summarize(create_model(args.model, **options), shape, name=args.model)
    if args.json:
        data = summary.to_dict()
        print(json.dumps(data))
    else:
        print(format_summary(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from alexnet.models import list_models

    parser = _Parser(prog="alexnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="per-layer output shapes, parameters, FLOPs and activation memory")
    p.add_argument("--model", default="d2l", choices=list_models())
    p.add_argument("--input", type=_parse_shape, metavar="C,H,W", help="input shape (default: the model's own)")
    p.add_argument("--classes", type=int, help="number of output classes")
    p.add_argument("--option", type=_parse_option, action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. --option lrn=true --option two_column=true")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AlexNetError as error:
        print(f"alexnet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alexnet {args.command}: interrupted", file=sys.stderr)
        return 130
