"""`alexnet augment`: draw a preset's training augmentations on real training images."""

from pathlib import Path

from alexnet.cli.args import parse_option, positive_int
from alexnet.config import DATASETS, resolve
from alexnet.report.grid import draw_augmentations


def add_parsers(sub) -> None:
    p = sub.add_parser("augment", help="draw training images and their augmented versions as a grid")
    p.add_argument("--preset", default="d2l-fast", help="whose train_augment to draw (default d2l-fast)")
    p.add_argument("--dataset", choices=DATASETS)
    p.add_argument("--data-dir")
    p.add_argument("--set", type=parse_option, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--samples", type=positive_int, default=8)
    p.add_argument("--variants", type=positive_int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_augment)


def cmd_augment(args) -> int:
    cfg = resolve(args.preset, dict(args.set))
    if args.dataset:
        cfg.data.dataset = args.dataset
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    pipeline = draw_augmentations(cfg, args.out, samples=args.samples, variants=args.variants, seed=args.seed)
    print(f"wrote {args.out}: {args.samples} images and {args.variants} augmented versions each ({pipeline!r})")
    return 0
