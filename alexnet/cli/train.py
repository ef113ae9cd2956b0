"""`alexnet train`: a preset (or a run folder's own config) plus overrides -> `alexnet.training.train`."""

import argparse
import os
import sys
from pathlib import Path

from alexnet.cli.args import parse_option, preset_names, resolve_config

EPILOG = """\
--set keys: `alexnet list keys` prints every key with its type, default and meaning
(data.*, optim.*, train.*, and model.<option> for each model), e.g.
  --set optim.schedule=cosine --set optim.warmup_epochs=1 --set train.precision=fp32
  --set data.train_subset=5000 --set model.dropout=0.3 --set model.name=d2l
Values are YAML: numbers, true / false, lists such as data.train_augment='[{op: hflip}]'."""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a preset into a run folder (metrics, checkpoints, curves, report)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help=f"named recipe: {', '.join(preset_names())} (needed, except with --resume, "
                   "which reads OUT/config.yaml)")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--epochs", type=int, help="train.epochs: epochs to train (with --resume: in all)")
    p.add_argument("--lr", type=float, help="optim.lr: the peak learning rate of the schedule")
    p.add_argument("--batch-size", type=int, help="global batch size (split across torchrun ranks)")
    p.add_argument("--seed", type=int, help="train.seed: the weights, data order, augmentation and hold-out")
    p.add_argument("--set", type=parse_option, action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (value read as YAML); the keys: `alexnet list keys`, below")
    p.add_argument("--data-dir", help="where the dataset files are")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    p.add_argument("--init-from", metavar="FILE", help="start from these weights: a run's best.pt / checkpoint.pt "
                   "or a torchvision AlexNet state_dict; the last layer is replaced if the classes differ")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files to OUT/tensorboard")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors (no banner, progress or epochs)")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from alexnet.training.guards import Interrupted
    from alexnet.training.run import train

    overrides = dict(args.set)
    for key, value in (("train.epochs", args.epochs), ("optim.lr", args.lr), ("train.batch_size", args.batch_size),
                       ("train.seed", args.seed), ("data.data_dir", args.data_dir), ("train.device", args.device),
                       ("train.init_from", args.init_from)):
        if value is not None:
            overrides[key] = value
    for key, flag in (("data.download", args.download), ("train.tensorboard", args.tensorboard)):
        if flag:
            overrides[key] = True
    cfg = resolve_config(args.preset, overrides, args.out, args.resume)
    try:
        history = train(cfg, args.out, resume=args.resume, quiet=args.quiet)
    except Interrupted as stop:
        print(f"alexnet train: {stop}", file=sys.stderr)
        return 128 + stop.signum
    if history and not args.quiet and int(os.environ.get("RANK", 0)) == 0:
        last = history[-1]
        val = f"val acc {last['val_acc']:.4f}, " if last.get("val_acc") is not None else ""
        print(f"done: {val}test acc {last['test_acc']:.4f} after {last['epoch']} epochs, {last['wall_s']:.1f} s\n"
              f"  curves  {args.out}/curves.png\n  metrics {args.out}/metrics.jsonl, {args.out}/steps.jsonl\n"
              f"  report  {args.out}/report.md\n  weights {args.out}/best.pt, {args.out}/checkpoint.pt")
    return 0
