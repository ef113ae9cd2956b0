"""`alexnet augment`: draw a preset's training augmentations on real training images. `alexnet prepare`: the paper's
preprocessing of an image folder, done once, into JPEG shards that train fast (`alexnet.data.prepare`)."""

from pathlib import Path

from alexnet.base.errors import AlexNetError
from alexnet.cli.args import parse_option, positive_int
from alexnet.config import DATASETS, resolve
from alexnet.data.prepare import CPU_THREADS, SHARD_IMAGES, prepare
from alexnet.data.prepared import verify
from alexnet.report.grid import draw_augmentations


def add_parsers(sub) -> None:
    p = sub.add_parser("augment", help="draw training images and their augmented versions as a grid")
    p.add_argument("--preset", default="d2l-fast", help="whose train_augment to draw (default d2l-fast)")
    p.add_argument("--dataset", choices=DATASETS)
    p.add_argument("--data-dir")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    p.add_argument("--set", type=parse_option, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--samples", type=positive_int, default=8)
    p.add_argument("--variants", type=positive_int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_augment)
    add_prepare_parser(sub)


def add_prepare_parser(sub) -> None:
    p = sub.add_parser("prepare", help="rescale and centre-crop an image folder once into JPEG shards (resumable)",
                       description="The paper's preprocessing (shorter side to --size, central square) of "
                       "SRC/train/<class>/* and SRC/val/<class>/* (or test/), written to DST as JPEG shards with a "
                       "checksummed manifest; `alexnet train --data-dir DST` then decodes whole batches on the "
                       "device. Run it again after an interruption: finished shards are kept.")
    p.add_argument("src", metavar="SRC", help="image folder (train/<class>/..., val/<class>/...)")
    p.add_argument("dst", metavar="DST", nargs="?", help="output folder: new, empty, or an interrupted run's")
    p.add_argument("--size", type=positive_int, default=256, help="output side in pixels (default 256, the paper)")
    p.add_argument("--quality", type=positive_int, default=90, help="JPEG quality 1..100 (default 90)")
    p.add_argument("--shard-size", type=positive_int, default=SHARD_IMAGES,
                   help=f"images per shard file (default {SHARD_IMAGES}: ~300 MB at 256 px)")
    p.add_argument("--workers", type=positive_int, default=CPU_THREADS,
                   help=f"threads that decode, crop and encode (default {CPU_THREADS}: the CPUs, at most 16)")
    p.add_argument("--skip-bad-files", action="store_true", help="leave out undecodable images (with a warning)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verify", action="store_true", help="`alexnet prepare --verify DST`: check every shard of a "
                   "prepared dataset against its manifest's sha256, write nothing")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args) -> int:
    if args.verify:
        if args.dst is not None:
            raise AlexNetError("--verify takes one folder: alexnet prepare --verify DST")
        manifest = verify(args.src)
        print(f"{args.src}: every shard matches its checksum ({_counts(manifest)})")
        return 0
    if args.dst is None:
        raise AlexNetError("give the source and the output folder: alexnet prepare SRC DST")
    manifest = prepare(args.src, args.dst, size=args.size, quality=args.quality, shard_size=args.shard_size,
                       workers=args.workers, skip_bad_files=args.skip_bad_files, progress=not args.no_progress)
    print(f"wrote {args.dst}: {_counts(manifest)}, {args.size}x{args.size} JPEG quality {args.quality}")
    return 0


def _counts(manifest: dict) -> str:
    parts = []
    for entry in manifest["splits"].values():
        skipped = f", {len(entry['skipped'])} bad file(s) skipped" if entry["skipped"] else ""
        parts.append(f"{entry['folder']} {entry['images']} images in {len(entry['shards'])} shard(s){skipped}")
    return "; ".join(parts)


def cmd_augment(args) -> int:
    cfg = resolve(args.preset, dict(args.set))
    if args.dataset:
        cfg.data.dataset = args.dataset
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    cfg.data.download = cfg.data.download or args.download
    pipeline = draw_augmentations(cfg, args.out, samples=args.samples, variants=args.variants, seed=args.seed)
    print(f"wrote {args.out}: {args.samples} images and {args.variants} augmented versions each ({pipeline!r})")
    return 0
