"""Which images a run trains, validates and tests on.

The validation split chooses everything a run chooses (`best.pt`, the plateau schedule); the test split only
reports. Where it comes from:
* an image folder with both `val/` and `test/`: `val/` (the test split is `test/`);
* otherwise a seeded, stratified hold-out of the training images: `data.val_size` of them (default 5,000, as
  many per class as the class's share), at most a tenth of the training set. An ImageNet-style folder with
  `train/` and `val/` only keeps `val/` as its test split, as the field reports it, and holds out from `train/`.
`data.val_size: 0` trains on every training image (the d2l preset, as the book); the run then says that its best
checkpoint was chosen on the test set.
"""

import torch

from alexnet.base.errors import AlexNetError
from alexnet.runtime.seeding import derived_seed

VAL_FRACTION_MAX = 0.1  # never hold out more than a tenth of the training images
SPLIT_STREAM = 7        # derived_seed stream of the validation hold-out


def holdout_size(n_train: int, val_size: int) -> int:
    return min(val_size, int(n_train * VAL_FRACTION_MAX))


def stratified_holdout(labels: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), both sorted, disjoint, covering every sample: `n` samples held out,
    each class by its share (largest remainders get the rounding), chosen by a generator seeded from `seed`."""
    labels = labels.cpu()
    if not 0 <= n <= len(labels):
        raise AlexNetError(f"cannot hold out {n} of {len(labels)} images for validation")
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * n / len(labels)
    quota = exact.floor().long()
    short = n - int(quota.sum())
    quota[(exact - quota).argsort(descending=True, stable=True)[:short]] += 1
    g = torch.Generator().manual_seed(derived_seed(seed, stream=SPLIT_STREAM))
    held = []
    for c, k in zip(classes.tolist(), quota.tolist(), strict=True):
        members = (labels == c).nonzero().flatten()
        held.append(members[torch.randperm(len(members), generator=g)[:k]])
    val = torch.cat(held).sort().values if held else torch.empty(0, dtype=torch.long)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return keep.nonzero().flatten(), val
