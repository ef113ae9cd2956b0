"""Command line: parse arguments, build a config, call the library. No logic of its own.

Every user error (`AlexNetError`, bad arguments) is one line on stderr and exit code 2.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from alexnet.cli_args import parse_option, parse_shape, positive_int
from alexnet.errors import AlexNetError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2, as argparse)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cmd_summary(args) -> int:
    from alexnet.analysis import format_summary, summarize
    from alexnet.models import create_model, model_info

    info = model_info(args.model)
    shape = args.input or info.input_shape
    options = dict(args.option)
    for key in ("in_channels", "input_size"):
        if key in options:
            raise AlexNetError(f"--option {key} is set by --input C,H,W")
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


def cmd_train(args) -> int:
    from alexnet.config import resolve
    from alexnet.train.guards import Interrupted
    from alexnet.train.trainer import train

    overrides = dict(args.set)
    for key, value in (("train.epochs", args.epochs), ("optim.lr", args.lr), ("train.batch_size", args.batch_size),
                       ("train.seed", args.seed), ("data.data_dir", args.data_dir), ("train.device", args.device)):
        if value is not None:
            overrides[key] = value
    if args.download:
        overrides["data.download"] = True
    cfg = resolve(args.preset, overrides, args.out, args.resume)
    try:
        history = train(cfg, args.out, resume=args.resume, quiet=args.quiet)
    except Interrupted as stop:
        print(f"alexnet train: {stop}", file=sys.stderr)
        return 128 + stop.signum
    if history and not args.quiet and int(os.environ.get("RANK", 0)) == 0:
        last = history[-1]
        print(f"done: test acc {last['test_acc']:.4f} after {last['epoch']} epochs, {last['wall_s']:.1f} s\n"
              f"  curves  {args.out}/curves.png\n  metrics {args.out}/metrics.jsonl\n"
              f"  report  {args.out}/report.md\n  weights {args.out}/best.pt, {args.out}/checkpoint.pt")
    return 0


def cmd_eval(args) -> int:
    from alexnet.eval.api import evaluate_checkpoint
    from alexnet.report.plots import plot_confusion

    if args.batch_size is not None and args.batch_size < 1:
        raise AlexNetError(f"--batch-size must be >= 1, got {args.batch_size}")
    result, trained = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, ten_crops=args.ten_crop,
                                          batch_size=args.batch_size, device=args.device)
    out = args.out or Path(args.checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(result.confusion, trained.classes, out / "confusion.png")
    if args.json:
        print(json.dumps({**result.to_dict(), "classes": trained.classes, "ten_crop": args.ten_crop}))
        return 0
    view = "10-crop" if args.ten_crop else "centre"
    print(f"{args.checkpoint}: {result.count} test images ({view})\n"
          f"top-1 {result.top1:.4f}  top-5 {result.top5:.4f}  loss {result.loss:.4f}\nper class:")
    width = max(map(len, trained.classes))
    for name, acc in zip(trained.classes, result.per_class):
        print(f"  {name:<{width}}  " + ("no test images" if acc is None else f"{acc:.4f}"))
    print("confusion matrix (rows: true, columns: predicted):")
    for name, row in zip(trained.classes, result.confusion):
        print(f"  {name:<{width}}  " + " ".join(f"{v:5d}" for v in row))
    print(f"confusion plot: {out / 'confusion.png'}")
    return 0


def cmd_predict(args) -> int:
    from alexnet.eval.api import load_trained, predict

    trained = load_trained(args.checkpoint, args.device)
    results = predict(trained, args.images, topk=args.topk)
    if args.json:
        print(json.dumps([{"image": str(p), "top": [{"class": c, "prob": v} for c, v in r]}
                          for p, r in zip(args.images, results)]))
        return 0
    for path, top in zip(args.images, results):
        print(f"{path}: " + ", ".join(f"{c} {v:.3f}" for c, v in top))
    return 0


def cmd_export(args) -> int:
    from alexnet.export import export

    info = export(args.checkpoint, args.out, args.format)
    extra = (f" (onnxruntime agrees with PyTorch to {info['onnxruntime_max_abs_diff']:.2g})"
             if "onnxruntime_max_abs_diff" in info else "")
    print(f"wrote {info['path']}{extra}")
    return 0


def cmd_augment(args) -> int:
    import torch

    from alexnet.config import resolve
    from alexnet.data.datasets import load_dataset
    from alexnet.data.pipeline import build_pipeline, compute_stats
    from alexnet.report.grid import augment_grid
    from alexnet.train.data import FOLDER_STATS_IMAGES

    cfg = resolve(args.preset, dict(args.set))
    if args.dataset:
        cfg.data.dataset = args.dataset
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    d = cfg.data
    data = load_dataset(d.dataset, "train", d.data_dir, d.download, image_size=d.image_size)
    if d.dataset == "folder":  # decode a seeded sample (statistics and drawing), not the whole folder
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[:FOLDER_STATS_IMAGES]
        images, labels = data.decode(pick.tolist()), data.labels[pick]
    else:
        images, labels = data.images, data.labels
    pipeline = build_pipeline(d.train_augment, input_size=d.input_size, stats=compute_stats(images))
    path = augment_grid(images, pipeline, args.out, samples=args.samples, variants=args.variants, seed=args.seed,
                        classes=data.classes, labels=labels)
    print(f"wrote {path}: {args.samples} images and {args.variants} augmented versions each ({pipeline!r})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from alexnet.models import list_models

    parser = _Parser(prog="alexnet", description="AlexNet (Krizhevsky et al. 2012) and d2l 7.1: models, training, "
                     "evaluation, benchmarks and experiments.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="per-layer output shapes, parameters, FLOPs and activation memory")
    p.add_argument("--model", default="d2l", choices=list_models())
    p.add_argument("--input", type=parse_shape, metavar="C,H,W", help="input shape (default: the model's own)")
    p.add_argument("--classes", type=int, help="number of output classes")
    p.add_argument("--option", type=parse_option, action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. --option lrn=true --option two_column=true")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train a preset into a run folder (metrics, checkpoints, curves, report)")
    p.add_argument("--preset", help="named recipe: quick, d2l, d2l-fast, cifar10, paper")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int, help="global batch size (split across torchrun ranks)")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", type=parse_option, action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.schedule=cosine --set model.dropout=0.3")
    p.add_argument("--data-dir", help="where the dataset files are")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="top-1, top-5, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--ten-crop", action="store_true", help="average the softmax of the paper's ten views")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's eval batch size, "
                   "a tenth of it with --ten-crop)")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, help="folder for confusion.png (default: the checkpoint's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes of image files")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--topk", type=positive_int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="weights as ONNX (checked with onnxruntime) or safetensors")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--format", required=True, choices=["onnx", "safetensors"])
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("augment", help="draw training images and their augmented versions as a grid")
    p.add_argument("--preset", default="d2l-fast", help="whose train_augment to draw (default d2l-fast)")
    p.add_argument("--dataset", choices=["fashion-mnist", "cifar10", "folder"])
    p.add_argument("--data-dir")
    p.add_argument("--set", type=parse_option, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--samples", type=positive_int, default=8)
    p.add_argument("--variants", type=positive_int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_augment)

    from alexnet.cli_bench import add_parser as add_bench_parser
    from alexnet.cli_experiments import add_parsers as add_experiment_parsers
    add_bench_parser(sub)
    add_experiment_parsers(sub)
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
    except Exception as error:
        # Under torchrun a rank whose peer died sees a backend error: one line, and torchrun restarts the job.
        if type(error).__name__ != "DistBackendError":
            raise
        print(f"alexnet {args.command}: error: lost a peer rank ({str(error).splitlines()[0]})", file=sys.stderr)
        return 1
