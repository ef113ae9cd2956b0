"""`alexnet eval`, `alexnet predict` and `alexnet export`: what can be done with a run's checkpoint."""

import json
from pathlib import Path

from alexnet.base.errors import AlexNetError
from alexnet.base.files import output_dir, output_file
from alexnet.cli.args import positive_int
from alexnet.eval.checkpoint import evaluate_trained, image_files, predict
from alexnet.export import FORMATS, export
from alexnet.report.plots import plot_confusion
from alexnet.run.trained import load_trained


def add_parsers(sub) -> None:
    p = sub.add_parser("eval", help="top-1, top-5, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--ten-crop", action="store_true", help="average the softmax of the paper's ten views")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: the run's eval batch size, "
                   "a tenth of it with --ten-crop)")
    p.add_argument("--data-dir", help="where the test data is (default: the run's own data folder)")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", type=Path, help="folder for confusion.png (default: the checkpoint's)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the text report")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes of image files (a folder: the images below it)")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--topk", type=positive_int, default=5, help="classes per image (default 5)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="a JSON list instead of a line per image")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="weights as ONNX (checked with onnxruntime) or safetensors")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_export)


def cmd_eval(args) -> int:
    if args.batch_size is not None and args.batch_size < 1:
        raise AlexNetError(f"--batch-size must be >= 1, got {args.batch_size}")
    trained = load_trained(args.checkpoint, args.device)
    figure = output_file(output_dir(args.out or Path(args.checkpoint).parent) / "confusion.png", (".png",))
    result = evaluate_trained(trained, data_dir=args.data_dir, ten_crops=args.ten_crop, batch_size=args.batch_size,
                              download=args.download)
    plot_confusion(result.confusion, trained.classes, figure)
    if args.json:
        record = {**result.to_dict(), "classes": trained.classes, "ten_crop": args.ten_crop}
        if len(trained.classes) <= 5:
            record["top5"] = None  # top-5 of 5 classes or fewer is always 1
        print(json.dumps(record))
        return 0
    view = "10-crop" if args.ten_crop else "centre"
    print(f"{args.checkpoint}: {result.count} test images ({view})\n"
          f"top-1 {result.top1:.4f}  {_top_k(result, trained.classes)}loss {result.loss:.4f}\nper class:")
    width = max(map(len, trained.classes))
    for name, acc in zip(trained.classes, result.per_class, strict=True):
        print(f"  {name:<{width}}  " + ("no test images" if acc is None else f"{acc:.4f}"))
    print("confusion matrix (rows: true, columns: predicted):")
    for name, row in zip(trained.classes, result.confusion, strict=True):
        print(f"  {name:<{width}}  " + " ".join(f"{v:5d}" for v in row))
    print(f"confusion plot: {figure}")
    return 0


def _top_k(result, classes: list[str]) -> str:
    """top-5, where it says something: with 5 classes or fewer it is always 1."""
    return f"top-5 {result.top5:.4f}  " if len(classes) > 5 else ""


def cmd_predict(args) -> int:
    trained = load_trained(args.checkpoint, args.device)
    files = image_files(args.images)
    results = predict(trained, files, topk=args.topk)
    if args.json:
        print(json.dumps([{"image": str(p), "top": [{"class": c, "prob": v} for c, v in r]}
                          for p, r in zip(files, results, strict=True)]))
        return 0
    for path, top in zip(files, results, strict=True):
        print(f"{path}: " + ", ".join(f"{c} {v:.3f}" for c, v in top))
    return 0


def cmd_export(args) -> int:
    info = export(args.checkpoint, args.out, args.format)
    extra = (f" (onnxruntime agrees with PyTorch to {info['onnxruntime_max_abs_diff']:.2g})"
             if "onnxruntime_max_abs_diff" in info else "")
    print(f"wrote {info['path']}{extra}")
    return 0
