"""`alexnet experiment NAME` and `alexnet visualize filters|neighbours`: parse, call alexnet.experiments, print.

`add_parsers(sub)` adds both commands to the CLI's subparsers; a study's name is checked against the study
registry once parsed (the registry imports torch; `--help` must not). User errors are `AlexNetError`s, which the
CLI prints as one line with exit code 2.
"""

import sys
from pathlib import Path

from alexnet.cli.args import choose, positive_int


def cmd_experiment(args) -> int:
    from alexnet.experiments import BUDGETS, list_studies, run_study
    from alexnet.training.guards import Interrupted

    choose(args.name, list_studies(), "study")
    choose(args.budget, BUDGETS, "budget")
    try:
        result = run_study(args.name, args.out, budget=args.budget, device=args.device, data_dir=args.data_dir)
    except Interrupted as stop:  # the arm in progress checkpointed; a re-run resumes the study where it stopped
        advice = str(stop).replace("continue with --resume", "run the same command again to continue")
        print(f"alexnet experiment: {advice}", file=sys.stderr)
        return 128 + stop.signum
    print(f"{args.name} ({args.budget} budget, {result['wall_s']:.0f} s):\n"
          f"  table   {result['results_md']}\n  data    {result['results_json']}\n  plot    {result['plot_png']}\n")
    print(result["table_md"])
    return 0


def cmd_filters(args) -> int:
    from alexnet.experiments.visualize import filters

    info = filters(args.checkpoint, args.out)
    print(f"wrote {info['path']}: {info['title']} ({info['rows']} x {info['cols']} grid, "
          f"{info['pixels'][1]}x{info['pixels'][0]} px)")
    return 0


def cmd_neighbours(args) -> int:
    from alexnet.experiments.visualize import neighbours

    info = neighbours(args.checkpoint, args.out, n_queries=args.queries, k=args.k, split=args.split,
                      data_dir=args.data_dir, train_limit=args.train_limit, seed=args.seed, device=args.device)
    print(f"wrote {info['path']}: {len(info['queries'])} {args.split} images and their {args.k} nearest "
          f"training images")
    for query, found in zip(info["queries"], info["neighbours"], strict=True):
        print(f"  {args.split}[{query}] -> train {found}")
    return 0


def add_parsers(sub) -> None:
    """Add `experiment` and `visualize` to the subparsers `sub` of the alexnet CLI."""
    p = sub.add_parser("experiment", help="run a study of the paper's claims or the book's exercises")
    p.add_argument("name", metavar="NAME", help="the study: `alexnet list studies` names them with what each "
                   "measures, e.g. relu-vs-tanh")
    p.add_argument("--out", required=True, type=Path, help="study folder (a re-run resumes it)")
    p.add_argument("--budget", default="small",
                   help="small: minutes on 2 CPU cores (default); full: the real study, for a GPU; "
                        "tiny: a seconds-long smoke test whose numbers mean nothing")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--data-dir", help="where the dataset files are")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("visualize", help="first-layer filters (paper Fig. 3) or nearest neighbours (Fig. 4)")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    f = what.add_parser("filters", help="the first conv layer's kernels as a grid")
    f.add_argument("--checkpoint", required=True, type=Path, help="a run's best.pt or checkpoint.pt")
    f.add_argument("--out", required=True, type=Path, help="PNG file")
    f.set_defaults(func=cmd_filters)
    n = what.add_parser("neighbours", help="test images and their nearest training images in feature space")
    n.add_argument("--checkpoint", required=True, type=Path, help="a run's best.pt or checkpoint.pt")
    n.add_argument("--out", required=True, type=Path, help="PNG file")
    n.add_argument("--queries", type=positive_int, default=5, help="number of query images (default 5)")
    n.add_argument("--k", type=positive_int, default=6, help="neighbours per query (default 6)")
    n.add_argument("--split", choices=["test", "train"], default="test", help="where the queries come from")
    n.add_argument("--train-limit", type=positive_int, help="search only the first N training images")
    n.add_argument("--seed", type=int, default=0, help="which query images are drawn (default 0)")
    n.add_argument("--data-dir", help="where the run's dataset files are (default: the run's own data folder)")
    n.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    n.set_defaults(func=cmd_neighbours)
