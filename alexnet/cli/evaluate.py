"""`alexnet eval`, `alexnet predict` and `alexnet export`: what can be done with a run's checkpoint."""

import json
import sys
from pathlib import Path

from alexnet.base.errors import AlexNetError
from alexnet.base.files import output_dir, output_file
from alexnet.cli.args import choose_precision, positive_int

CHECKPOINT_HELP = "a run's best.pt or checkpoint.pt"
PRECISION_HELP = ("auto (default: the fastest this device runs well, resolved here, not where the run trained) or a "
                  "precision of `alexnet list precisions`; printed with its reason")


def add_parsers(sub) -> None:
    p = sub.add_parser("eval", help="top-1, top-5, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("--checkpoint", required=True, type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--ten-crop", action="store_true", help="average the softmax of the paper's ten views")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's eval batch size, "
                   "a tenth of it with --ten-crop)")
    p.add_argument("--data-dir", help="where the test data is (default: the run's own data folder)")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", help=PRECISION_HELP)
    p.add_argument("--out", type=Path, help="folder for confusion.png (default: the checkpoint's)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the text report")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes of image files (a folder: the images below it)",
                       description="Top-k classes of each image. A file that cannot be read goes on stderr as one "
                       "line and the others are still predicted; the exit code is then 2.")
    p.add_argument("--checkpoint", required=True, type=Path, help=CHECKPOINT_HELP)
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE",
                   help="image file (JPEG, PNG ...), or a folder: every image below it, sorted by path")
    p.add_argument("--topk", type=positive_int, default=5, help="classes per image (default 5)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", help=PRECISION_HELP)
    p.add_argument("--json", action="store_true", help="one JSON object (precision, predictions, failed files) "
                   "instead of a line per image")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="weights as ONNX (checked with onnxruntime) or safetensors")
    p.add_argument("--checkpoint", required=True, type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--format", required=True, help="onnx (checked against onnxruntime before it is reported "
                   "written) or safetensors (the config in its metadata)")
    p.add_argument("--out", required=True, type=Path, help="file to write, ending in .onnx or .safetensors")
    p.set_defaults(func=cmd_export)


def cmd_eval(args) -> int:
    from alexnet.eval.checkpoint import eval_precision, evaluate_trained
    from alexnet.report.plots import plot_confusion
    from alexnet.run.trained import load_trained

    if args.batch_size is not None and args.batch_size < 1:
        raise AlexNetError(f"--batch-size must be >= 1, got {args.batch_size}")
    choose_precision(args.precision)
    trained = load_trained(args.checkpoint, args.device)
    precision = eval_precision(trained, args.precision)
    figure = output_file(output_dir(args.out or Path(args.checkpoint).parent) / "confusion.png", (".png",))
    result = evaluate_trained(trained, data_dir=args.data_dir, ten_crops=args.ten_crop, batch_size=args.batch_size,
                              download=args.download, precision=precision)
    plot_confusion(result.confusion, trained.classes, figure)
    if args.json:
        record = {**result.to_dict(), "classes": trained.classes, "ten_crop": args.ten_crop,
                  **_precision_record(precision)}
        if len(trained.classes) <= 5:
            record["top5"] = None  # top-5 of 5 classes or fewer is always 1
        print(json.dumps(record))
        return 0
    view = "10-crop" if args.ten_crop else "centre"
    print(f"{args.checkpoint}: {result.count} test images ({view}) on {trained.device}, "
          f"{_precision_text(precision)}\n"
          f"top-1 {result.top1:.4f}  {_top_k(result, trained.classes)}loss {result.loss:.4f}\nper class:")
    width = max(map(len, trained.classes))
    for name, acc in zip(trained.classes, result.per_class, strict=True):
        print(f"  {name:<{width}}  " + ("no test images" if acc is None else f"{acc:.4f}"))
    print("confusion matrix (rows: true, columns: predicted):")
    print("\n".join(confusion_lines(result.confusion, trained.classes)))
    print(f"confusion plot: {figure}")
    return 0


def confusion_lines(confusion: list[list[int]], classes: list[str]) -> list[str]:
    """The matrix as text, rows and columns headed by the class names (columns: the first letters that fit)."""
    width = max(map(len, classes))
    cell = max(6, len(str(max(max(row) for row in confusion))) + 1)  # "T-shi" over 5-digit counts
    head = " " * (width + 2) + "".join(f"{name[:cell - 1]:>{cell}}" for name in classes)
    return [head] + [f"  {name:<{width}}" + "".join(f"{v:>{cell}d}" for v in row)
                     for name, row in zip(classes, confusion, strict=True)]


def _precision_text(precision) -> str:
    return f"precision {precision.describe()}"


def _precision_record(precision) -> dict:
    return {"precision": precision.name, "channels_last": precision.channels_last,
            "precision_reason": precision.reason}


def _top_k(result, classes: list[str]) -> str:
    """top-5, where it says something: with 5 classes or fewer it is always 1."""
    return f"top-5 {result.top5:.4f}  " if len(classes) > 5 else ""


def cmd_predict(args) -> int:
    from alexnet.eval.checkpoint import eval_precision, image_files, predict_each
    from alexnet.run.trained import load_trained

    choose_precision(args.precision)
    trained = load_trained(args.checkpoint, args.device)
    precision = eval_precision(trained, args.precision)
    files = image_files(args.images)
    if not args.json:
        print(f"{args.checkpoint} on {trained.device}, {_precision_text(precision)}")
    predictions, failed = [], []
    for path, top in predict_each(trained, files, topk=args.topk, precision=precision):
        if isinstance(top, AlexNetError):  # said at once, and the other files go on
            failed.append({"image": str(path), "error": str(top)})
            print(f"alexnet predict: error: {top}", file=sys.stderr, flush=True)
        elif args.json:
            predictions.append({"image": str(path), "top": [{"class": c, "prob": v} for c, v in top]})
        else:
            print(f"{path}: " + ", ".join(f"{c} {v:.3f}" for c, v in top))
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), **_precision_record(precision),
                          "predictions": predictions, "failed": failed}))
    return 2 if failed else 0


def cmd_export(args) -> int:
    from alexnet.export import export

    info = export(args.checkpoint, args.out, args.format)
    extra = (f" (onnxruntime agrees with PyTorch to {info['onnxruntime_max_abs_diff']:.2g})"
             if "onnxruntime_max_abs_diff" in info else "")
    print(f"wrote {info['path']}{extra}")
    return 0
