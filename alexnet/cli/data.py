"""`alexnet augment`: draw a preset's training augmentations on real training images. `alexnet prepare`: the paper's
preprocessing of an image folder, done once, into JPEG shards that train fast (`alexnet.data.prepare`)."""

from pathlib import Path

from alexnet.base.errors import AlexNetError
from alexnet.cli.args import choose, parse_option, positive_int, preset_names, resolve_config


def add_parsers(sub) -> None:
    p = sub.add_parser("augment", help="draw training images and their augmented versions as a grid")
    p.add_argument("--preset", default="d2l-fast", help=f"whose data section (train_augment, dataset, sizes) to "
                   f"draw: {', '.join(preset_names())} (default d2l-fast)")
    p.add_argument("--dataset", help="data.dataset: the images to draw (default: the preset's; the datasets: "
                   "`alexnet list keys`)")
    p.add_argument("--data-dir", help="where the dataset files are")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not found")
    p.add_argument("--set", type=parse_option, action="append", default=[], metavar="KEY=VALUE",
                   help="config override, as `alexnet train --set`, e.g. --set data.train_augment='[{op: hflip}]'")
    p.add_argument("--out", required=True, type=Path, help="PNG file to write the grid to")
    p.add_argument("--samples", type=positive_int, default=8, help="training images, one row each (default 8)")
    p.add_argument("--variants", type=positive_int, default=5,
                   help="augmented versions of each image, beside the original (default 5)")
    p.add_argument("--seed", type=int, default=0, help="which images and which random augmentations (default 0)")
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
    p.add_argument("--shard-size", type=positive_int,
                   help="images per shard file (default: about 300 MB of JPEG at 256 px)")
    p.add_argument("--workers", type=positive_int, help="threads that decode, crop and encode (default: the CPUs, "
                   "at most 16)")
    p.add_argument("--skip-bad-files", action="store_true", help="leave out undecodable images (with a warning)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verify", action="store_true", help="`alexnet prepare --verify DST`: check every shard of a "
                   "prepared dataset against its manifest's sha256, write nothing")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args) -> int:
    from alexnet.data.prepare import CPU_THREADS, SHARD_IMAGES, prepare
    from alexnet.data.prepared import verify

    if args.verify:
        if args.dst is not None:
            raise AlexNetError("--verify takes one folder: alexnet prepare --verify DST")
        manifest = verify(args.src)
        print(f"{args.src}: every shard matches its checksum ({_counts(manifest)})")
        return 0
    if args.dst is None:
        raise AlexNetError("give the source and the output folder: alexnet prepare SRC DST")
    manifest = prepare(args.src, args.dst, size=args.size, quality=args.quality,
                       shard_size=args.shard_size or SHARD_IMAGES, workers=args.workers or CPU_THREADS,
                       skip_bad_files=args.skip_bad_files, progress=not args.no_progress)
    print(f"wrote {args.dst}: {_counts(manifest)}, {args.size}x{args.size} JPEG quality {args.quality}")
    return 0


def _counts(manifest: dict) -> str:
    parts = []
    for entry in manifest["splits"].values():
        skipped = f", {len(entry['skipped'])} bad file(s) skipped" if entry["skipped"] else ""
        parts.append(f"{entry['folder']} {entry['images']} images in {len(entry['shards'])} shard(s){skipped}")
    return "; ".join(parts)


def cmd_augment(args) -> int:
    from alexnet.config import DATASETS
    from alexnet.report.grid import draw_augmentations

    if args.dataset is not None:
        choose(args.dataset, DATASETS, "dataset")
    overrides = dict(args.set)
    for key, value in (("data.dataset", args.dataset), ("data.data_dir", args.data_dir)):
        if value:
            overrides[key] = value
    cfg = resolve_config(args.preset, overrides)
    cfg.data.download = cfg.data.download or args.download
    pipeline = draw_augmentations(cfg, args.out, samples=args.samples, variants=args.variants, seed=args.seed)
    print(f"wrote {args.out}: {args.samples} images and {args.variants} augmented versions each ({pipeline!r})")
    return 0
