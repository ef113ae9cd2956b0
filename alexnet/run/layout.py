"""The files of a run folder, by name. `alexnet train --out DIR` writes:

    DIR/config.yaml     the resolved config (preset + overrides), written before the first step
    DIR/checkpoint.pt   everything to resume bit-exactly; written last at each save: the commit point
    DIR/best.pt         weights, config, classes and statistics of the epoch with the best validation accuracy
    DIR/metrics.jsonl   one record per finished epoch, rewritten whole from the checkpoint's history
    DIR/steps.jsonl     the training loss every N steps
    DIR/curves.png      the d2l-style curves, redrawn after every epoch
    DIR/report.md       configuration, device, final figures and every epoch
    DIR/ranks.json      torchrun runs: every rank's final parameter sums, which must agree
"""

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
STEPS = "steps.jsonl"
CURVES = "curves.png"
REPORT = "report.md"
RANKS = "ranks.json"
LOCK = ".lock"
