"""Command line: parse arguments, build a config, call the library. No logic of its own; one module per
command group (`summary`, `train`, `evaluate`: eval / predict / export, `data`: augment / prepare, `bench`,
`experiments`: experiment / visualize).

Every user error (`AlexNetError`, bad arguments) is one line on stderr and exit code 2. Imports any layer of the
package below it, but the parser is built from torch-free modules alone: `--help`, `--version` and usage errors
answer before torch loads; each command imports what it runs inside its function (`list`: what can be named).
"""

import argparse
import importlib.util
import os
import re
import select
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from alexnet.base.errors import AlexNetError
from alexnet.base.files import WRITE_ERRNOS
from alexnet.base.version import __version__
from alexnet.cli import bench, data, evaluate, experiments, listing, summary, train


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2, as argparse)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """`--version`: ours and torch's, without importing torch (which takes seconds)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"alexnet {__version__} (torch {torch_version()})")  # on stdout, as argparse's own version action
        parser.exit()


def torch_version() -> str:
    """`torch.__version__` (with its build tag, e.g. +cu130) read from torch/version.py, else the installed
    distribution's version: torch itself is not imported."""
    spec = importlib.util.find_spec("torch")  # finds the package without running it
    if spec is not None and spec.origin:
        try:
            text = (Path(spec.origin).parent / "version.py").read_text()
            found = re.search(r"""__version__\s*=\s*['"]([^'"]+)""", text)
        except OSError:
            found = None
        if found:
            return found.group(1)
    try:
        return version("torch")
    except PackageNotFoundError:
        return "not installed"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="alexnet", description="AlexNet (Krizhevsky et al. 2012) and d2l 7.1: models, training, "
                     "evaluation, benchmarks and experiments.")
    parser.add_argument("--version", action=_Version, help="print the versions of alexnet and torch and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    summary.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parsers(sub)
    data.add_parsers(sub)
    bench.add_parser(sub)
    experiments.add_parsers(sub)
    listing.add_parser(sub)
    return parser


PACKAGE = str(Path(__file__).resolve().parent.parent)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    formatted = warnings.formatwarning

    def format_(message, category, filename, lineno, line=None):
        """The package's own warnings as `alexnet CMD: warning: ...` lines, as its errors; others as Python shows
        them. Only the text changes (formatwarning, not showwarning), so whoever records warnings still gets them."""
        if str(filename).startswith(PACKAGE):
            return f"alexnet {args.command}: warning: {message}\n"
        return formatted(message, category, filename, lineno, line)

    warnings.formatwarning = format_
    try:
        return _run(args)
    finally:
        warnings.formatwarning = formatted


def _run(args: argparse.Namespace) -> int:
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away is found here, not at exit
        return code
    except AlexNetError as error:
        print(f"alexnet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        # the reader went away (`alexnet eval ... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141  # 128 + SIGPIPE
    except OSError as error:  # a file the library did not wrap: still one line when the system refused it
        if error.errno not in WRITE_ERRNOS or error.filename is None:
            raise
        print(f"alexnet {args.command}: error: {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alexnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        # Under torchrun a rank whose peer died sees a backend error: one line, and torchrun restarts the job.
        if type(error).__name__ != "DistBackendError":
            raise
        print(f"alexnet {args.command}: error: lost a peer rank ({str(error).splitlines()[0]})", file=sys.stderr)
        return 1


def _stdout_gone() -> bool:
    """True when stdout is a pipe whose reader has closed it (poll reports an error on its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False
