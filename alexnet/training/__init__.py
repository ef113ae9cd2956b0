"""Training: the `Trainer` (one run's state on one rank, its step and its epochs), `train()` (a config into a
run folder, resumable), SGD and the learning-rate schedules (`optim`), and the guards that stop a run cleanly
(`guards`: signals, NaN). Imports `eval`, `report`, `run`, `data`, `models`, `config`, `runtime`, `base`."""
