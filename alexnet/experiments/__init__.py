"""The paper's claims and d2l 7.1's exercises as runnable, measured studies, and the paper's figures.

Each study is a module with `run(out, budget, device, data_dir) -> dict`: a list of config deltas over a preset,
trained as ordinary run folders under `out/runs/`, summarised in `out/results.json`, `out/results.md` and
`out/plot.png` (`common`). Budgets: `small` finishes on two CPU cores in minutes, `full` is the real study for a
GPU, `tiny` is a seconds-long budget for the test suite on tiny subsets and nets, fp32 and one thread (its numbers
say nothing about the claims, but for what a test asserts and says why). Each study states the claim it tests
(its module's CLAIM) in its output.
`visualize` draws the paper's Fig. 3 and Fig. 4 from a checkpoint. Imports `training` and everything below it.
"""

from alexnet.experiments.registry import BUDGETS, STUDIES, get_study, list_studies, run_study

__all__ = ["BUDGETS", "STUDIES", "get_study", "list_studies", "run_study"]
