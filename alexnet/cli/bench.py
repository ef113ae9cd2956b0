"""`alexnet bench`: parse, call `alexnet.bench`, print. Four modes:

    alexnet bench --model d2l --batch-size 32 --steps 5 --warmup 2 --baseline   # images/s, MFU, vs d2l
    alexnet bench --time-to-accuracy 0.90 --preset quick                          # seconds to a test accuracy
    alexnet bench --max-batch --model d2l --device cuda                           # largest batch that fits
    alexnet bench --loader --batch-size 128                                       # data delivery alone
    alexnet bench --profile --model d2l --batch-size 256                          # where a step's time goes
"""

import argparse
import contextlib
import json
import re
import sys
import time
from pathlib import Path

from alexnet.base.errors import AlexNetError
from alexnet.cli.args import choose_model, parse_option, preset_names, resolve_config


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="throughput and MFU vs the d2l baseline, time to accuracy, largest batch")
    p.add_argument("--model", help="registered model (default d2l; `alexnet list models`)")
    p.add_argument("--input-size", type=int, help="side of the model's input, px (default: the model's own)")
    p.add_argument("--batch-size", type=int, help="default 128")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", help="auto (default: the device's fastest, as the trainer) or a precision of "
                   "`alexnet list precisions`")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help="NHWC model and inputs (default: with bf16 / fp16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compiled during warm-up)")
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction,
                   help="capture the training step as one CUDA graph (default: where it applies, as the trainer)")
    p.add_argument("--space-to-depth", action=argparse.BooleanOptionalAction,
                   help="conv1 as a 3x3 convolution over a 4x4-folded input (default: on CUDA, as the trainer)")
    p.add_argument("--pool-first", action=argparse.BooleanOptionalAction,
                   help="run each ReLU -> max-pool as max-pool -> ReLU, exact (default: on, as the trainer)")
    p.add_argument("--fused-lrn", action=argparse.BooleanOptionalAction,
                   help="the paper's LRN as one Function with its analytic backward (default: on unless --compile, "
                        "as the trainer)")
    p.add_argument("--fused-pool", action=argparse.BooleanOptionalAction,
                   help="each max-pool + ReLU as one pair of Triton kernels with int8 arg-max codes (CUDA; default: "
                        "off until measured, as the trainer)")
    p.add_argument("--triton-lrn", action=argparse.BooleanOptionalAction,
                   help="each ReLU -> LRN (or LRN alone) of a net with the paper's LRN as one pair of Triton "
                        "kernels (CUDA; default: off until measured, as the trainer)")
    p.add_argument("--bias-after-pool", action=argparse.BooleanOptionalAction,
                   help="a convolution's bias added after its ReLU's max-pool, on the pooled tensor (default: off "
                        "until measured, as the trainer)")
    p.add_argument("--steps", type=int, help="timed steps (default 10)")
    p.add_argument("--warmup", type=int, help="untimed steps before them (default 3)")
    p.add_argument("--threads", type=int, help="CPU intra-op threads (0, the default: torch's default)")
    p.add_argument("--synthetic", action="store_true", help="random images of Fashion-MNIST's shape")
    p.add_argument("--data-dir", help="where the Fashion-MNIST files are")
    p.add_argument("--baseline", action="store_true", help="also measure the d2l DataLoader recipe, same process")
    p.add_argument("--remeasure-peak", action="store_true",
                   help="measure the device's peak FLOP/s (the MFU's denominator) again and replace the cached one "
                        "(kept in ~/.cache/alexnet/peaks.json, or $ALEXNET_CACHE)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--time-to-accuracy", type=float, metavar="ACC",
                      help="train --preset and report the seconds until the test accuracy first reaches ACC")
    mode.add_argument("--max-batch", action="store_true", help="largest training batch that fits (CUDA only)")
    mode.add_argument("--loader", action="store_true",
                      help="data delivery only: our on-device loader + augmentation vs the d2l DataLoader")
    mode.add_argument("--profile", action="store_true",
                      help="where the training step's time goes: forward / backward time, FLOP/s and tensor-core "
                           "share per layer; GPU vs host time per step and the top kernels")
    p.add_argument("--preset", help=f"time to accuracy: the recipe to train: {', '.join(preset_names())} "
                   "(default quick)")
    p.add_argument("--set", type=parse_option, action="append", metavar="KEY=VALUE",
                   help="time to accuracy: config override, as `alexnet train --set`; otherwise a model option "
                        "(model.KEY=VALUE, e.g. model.two_column=true; `alexnet list keys`)")
    p.add_argument("--out", type=Path, help="time to accuracy: run folder (default runs/tta-PRESET-TIME)")
    p.set_defaults(func=cmd_bench)


# Which flags each mode reads; giving one to a mode that would ignore it is an error, not a silent no-op.
MODES = {
    "throughput": {"model", "input_size", "batch_size", "precision", "channels_last", "compile", "cuda_graphs",
                   "space_to_depth", "pool_first", "fused_lrn", "fused_pool", "bias_after_pool", "triton_lrn", "steps",
                   "warmup", "threads", "synthetic", "baseline", "remeasure_peak", "set"},
    "max-batch": {"model", "input_size", "precision", "channels_last", "compile", "space_to_depth", "pool_first",
                  "fused_lrn", "fused_pool", "bias_after_pool", "triton_lrn", "threads", "set"},
    "loader": {"input_size", "batch_size", "steps", "warmup", "synthetic"},
    "profile": {"model", "input_size", "batch_size", "precision", "channels_last", "compile", "cuda_graphs",
                "space_to_depth", "pool_first", "fused_lrn", "fused_pool", "bias_after_pool", "triton_lrn", "steps",
                "warmup", "threads", "synthetic", "set"},
    "time-to-accuracy": {"preset", "set", "out"},
}
DEFAULTS = {"model": "d2l", "batch_size": 128, "precision": "auto", "channels_last": "auto", "cuda_graphs": "auto",
            "space_to_depth": "auto", "pool_first": "auto", "fused_lrn": "auto", "fused_pool": "auto",
            "bias_after_pool": "auto", "triton_lrn": "auto", "steps": 10,
            "warmup": 3, "threads": 0, "preset": "quick"}


def _check_mode(args) -> None:
    if args.baseline and (args.time_to_accuracy is not None or args.max_batch):
        raise AlexNetError("--baseline goes with the throughput measurement, not --time-to-accuracy or --max-batch")
    mode = ("time-to-accuracy" if args.time_to_accuracy is not None else "max-batch" if args.max_batch
            else "loader" if args.loader else "profile" if args.profile else "throughput")
    for name in sorted(set().union(*MODES.values()) - MODES[mode]):
        if getattr(args, name) not in (None, False, []):
            where = "the throughput measurement" if mode == "throughput" else f"--{mode}"
            hint = " (set the recipe with --set, e.g. --set train.batch_size=256)" if mode == "time-to-accuracy" else ""
            raise AlexNetError(f"--{name.replace('_', '-')} does not apply to {where}{hint}")
    if args.input_size is not None and args.input_size < 1:
        raise AlexNetError(f"--input-size must be >= 1, got {args.input_size}")
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if mode in ("throughput", "max-batch", "profile"):
        choose_model(args.model)  # the precision is checked by BenchSpec, with the bench's own message


def cmd_bench(args) -> int:
    from alexnet.bench import BenchSpec, format_bench, max_batch, run_bench
    from alexnet.bench.loader import format_loader, measure_loader
    from alexnet.bench.throughput import options_label

    _check_mode(args)
    if args.time_to_accuracy is not None:
        return _time_to_accuracy(args)
    if args.loader:
        if args.steps < 1 or args.batch_size < 1:
            raise AlexNetError("--steps and --batch-size must be >= 1")
        size = 224 if args.input_size is None else args.input_size
        result = measure_loader(batch_size=args.batch_size, input_size=size,
                                device=args.device or "auto", steps=args.steps, warmup=args.warmup,
                                data_dir=args.data_dir, synthetic=args.synthetic)
        print(json.dumps(result) if args.json else format_loader(result))
        return 0
    spec = BenchSpec(model=args.model, input_size=args.input_size or 0, batch_size=args.batch_size,
                     device=args.device or "auto", precision=args.precision, channels_last=args.channels_last,
                     compile=args.compile, cuda_graphs=args.cuda_graphs, space_to_depth=args.space_to_depth,
                     pool_first=args.pool_first, fused_lrn=args.fused_lrn, fused_pool=args.fused_pool,
                     bias_after_pool=args.bias_after_pool, triton_lrn=args.triton_lrn,
                     steps=args.steps, warmup=args.warmup, synthetic=args.synthetic,
                     data_dir=args.data_dir, threads=args.threads, remeasure_peak=args.remeasure_peak,
                     model_options=_model_options(args.set or []))
    with _named_as_flags():
        if args.profile:
            from alexnet.bench.profile import format_profile, profile_step

            result = profile_step(spec)
            result["fast_paths"] = _as_typed(result["fast_paths"])
            print(json.dumps(result) if args.json else format_profile(result))
            return 0
        if args.max_batch:
            from alexnet.bench.memory import format_max_batch

            result = max_batch(spec)  # the JSON's stopped_early says what the text's ">=" does
            print(json.dumps(result) if args.json else
                  f"{spec.model}{options_label(spec.model_options)} @{spec.input_size}, {spec.precision}: "
                  f"{format_max_batch(result)} on {result['device']} (tried {result['tried']})")
            return 0
        result = run_bench(spec, baseline=args.baseline)
        if "fast_paths" in result.get("ours", {}):
            result["ours"]["fast_paths"] = _as_typed(result["ours"]["fast_paths"])
        print(json.dumps(result) if args.json else format_bench(result))
        return 0


@contextlib.contextmanager
def _named_as_flags():
    """A fast path forced on where it cannot apply, named as the user typed it: the flag (--fused-pool), not the
    trainer's config key (train.fused_pool), which `alexnet train --set` and --time-to-accuracy keep naming."""
    from alexnet.training.fast import NotApplicable

    try:
        yield
    except NotApplicable as error:
        raise AlexNetError(f"--{error.name.replace('_', '-')} does not apply: {error.blocker}") from None


def _as_typed(fast_paths: dict[str, str]) -> dict[str, str]:
    """Each fast path's reason as the bench's user set it: "--bias-after-pool", not the trainer's
    "train.bias_after_pool: true" (its flags are the only way bench sets them)."""
    def flag(m: re.Match) -> str:
        name = m.group(1).replace("_", "-")
        return f"--{name}" if m.group(2) == "true" else f"--no-{name}"
    return {name: re.sub(r"\btrain\.(\w+): (true|false)\b", flag, text) for name, text in fast_paths.items()}


def _model_options(pairs: list[tuple[str, object]]) -> dict:
    """--set model.KEY=VALUE outside time to accuracy: the model's options (the rest has its own flags)."""
    options = {}
    for key, value in pairs:
        section, _, option = key.partition(".")
        if section != "model" or not option or option == "name":
            raise AlexNetError(f"--set {key}: outside --time-to-accuracy, --set takes model options only "
                               f"(model.KEY=VALUE; the model is --model, the rest have their own flags)")
        options[option] = value
    return options


def _time_to_accuracy(args) -> int:
    from alexnet.bench import format_tta, time_to_accuracy

    overrides = dict(args.set or [])
    for key, value in (("data.data_dir", args.data_dir), ("train.device", args.device)):
        if value is not None:
            overrides[key] = value
    cfg = resolve_config(args.preset, overrides)
    out = args.out or Path("runs") / f"tta-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.json:  # stdout must be the JSON alone: anything a library prints on the way goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            result = time_to_accuracy(cfg, args.time_to_accuracy, out, quiet=True)
        print(json.dumps(result))
    else:
        print(format_tta(time_to_accuracy(cfg, args.time_to_accuracy, out, quiet=False)))
    return 0
