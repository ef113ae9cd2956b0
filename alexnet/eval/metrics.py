"""Top-k accuracy and the confusion matrix, accumulated as device tensors (no host sync per batch) and reduced
across ranks as sums, so the figures are exact whatever the number of ranks."""

from dataclasses import asdict, dataclass, field

import torch

from alexnet.runtime.distributed import all_sum


class Tally:
    def __init__(self, num_classes: int, device):
        self.k = min(5, num_classes)
        self.num_classes = num_classes
        self.count = 0  # known on the host: no device round trip for it
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # top1 hits, top-k hits, loss sum
        self.confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)

    def update(self, logits: torch.Tensor, labels: torch.Tensor, loss_sum: torch.Tensor) -> None:
        topk = logits.topk(self.k, dim=1).indices          # (b, k)
        hit = topk == labels[:, None]
        self.count += len(labels)
        self.sums += torch.stack([hit[:, 0].sum().double(), hit.any(1).sum().double(), loss_sum.double()])
        # index_add_, not bincount: on CUDA bincount reads min and max back to the host every call
        self.confusion.index_add_(0, labels * self.num_classes + topk[:, 0], torch.ones_like(labels))

    def result(self) -> "EvalResult":
        totals = all_sum(torch.cat([self.sums, torch.tensor([float(self.count)], dtype=torch.float64,
                                                             device=self.sums.device)]))
        all_sum(self.confusion)
        top1, topk, loss, count = totals.tolist()
        confusion = self.confusion.view(self.num_classes, self.num_classes).cpu()
        hits, counts = confusion.diag().tolist(), confusion.sum(1).tolist()
        per_class = [h / n if n else None for h, n in zip(hits, counts, strict=True)]
        return EvalResult(count=int(count), top1=top1 / max(count, 1), top5=topk / max(count, 1),
                          loss=loss / max(count, 1), per_class=per_class, confusion=confusion.tolist())


@dataclass
class EvalResult:
    count: int                    # samples evaluated (all ranks): equals the test-set size
    top1: float
    top5: float                   # top-min(5, classes)
    loss: float                   # mean cross-entropy
    per_class: list[float | None]  # accuracy of each true class, in class-index order; None: no test images
    confusion: list[list[int]]    # [true][predicted]
    classes: list[str] = field(default_factory=list)  # the class names, in the same order (empty: not known)

    def to_dict(self) -> dict:
        return asdict(self)

    def accuracy_by_class(self) -> dict[str, float | None]:
        """{class name: accuracy}, as `alexnet eval` prints it (the class index where the names are not known)."""
        names = self.classes or [str(i) for i in range(len(self.per_class))]
        return dict(zip(names, self.per_class, strict=True))
