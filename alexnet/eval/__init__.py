"""Evaluation: top-k metrics and the confusion matrix reduced across ranks (`metrics`), centre and the paper's
ten-crop evaluation (`evaluate`), and evaluation / prediction from a run's checkpoint (`checkpoint`). Imports
`run`, `data`, `models`, `config`, `runtime` and `base`; never `training`."""
