"""The largest training batch that fits in GPU memory: the trainer's own step on random uint8 batches of
growing size (doubling, then bisection between the last size that fit and the first that did not)."""

import gc
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from alexnet.base.errors import AlexNetError
from alexnet.bench.throughput import BenchSpec, build_trainer, write_synthetic_fashion_mnist
from alexnet.data.loader import Batch
from alexnet.runtime.device import pick_device
from alexnet.runtime.settings import torch_settings

MAX_BATCH_LIMIT = 1 << 16  # stop searching here: 65,536 images per step is past any AlexNet recipe


def largest_fitting(fits: Callable[[int], bool], start: int = 64, limit: int = MAX_BATCH_LIMIT) -> int:
    """The largest b in [1, limit] with fits(b), assuming fits is monotone (true up to a size, false above);
    0 when not even 1 fits. Doubles from `start` (halving first if `start` does not fit), then bisects."""
    good, bad = 0, None
    b = min(start, limit)
    while b >= 1:  # find a size that fits
        if fits(b):
            good = b
            break
        bad, b = b, b // 2
    if good == 0:
        return 0
    while bad is None and good < limit:  # double until one does not fit
        b = min(2 * good, limit)
        if fits(b):
            good = b
        else:
            bad = b
    if bad is None:
        return good
    while bad - good > 1:  # invariant: fits(good), not fits(bad)
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def max_batch(spec: BenchSpec, start: int = 64) -> dict:
    """Largest training batch of `spec`'s model, precision and memory format on a CUDA device."""
    device = pick_device(spec.device)
    if device.type != "cuda":
        raise AlexNetError("--max-batch measures GPU memory and needs a CUDA device (--device cuda)")
    with tempfile.TemporaryDirectory(prefix="alexnet-maxbatch-") as scratch, \
            torch_settings(device, threads=spec.threads, precision=spec.precision):
        data = write_synthetic_fashion_mnist(Path(scratch) / "data", max(spec.batch_size, 1000), n_test=100)
        trainer = build_trainer(spec, str(data), Path(scratch) / "run")
        tried: dict[int, bool] = {}

        def fits(b: int) -> bool:
            images = labels = None
            try:
                images = torch.randint(0, 256, (b, 1, 28, 28), dtype=torch.uint8, device=device)
                labels = torch.randint(0, 10, (b,), device=device)
                for _ in range(2):  # the second step holds the optimizer's state too
                    trainer.train_step(Batch(images, labels, b))
                torch.cuda.synchronize(device)
                tried[b] = True
            except torch.cuda.OutOfMemoryError:
                tried[b] = False
            finally:
                del images, labels
                trainer.optimizer.zero_grad(set_to_none=True)  # an OOM mid-backward leaves some gradients
                gc.collect()
                torch.cuda.empty_cache()
            return tried[b]

        best = largest_fitting(fits, start=start)
        precision = trainer.precision
    return {"max_batch": best, "tried": dict(sorted(tried.items())), "model": spec.model,
            "input_size": spec.input_size, "precision": precision.name, "channels_last": precision.channels_last,
            "device": torch.cuda.get_device_name(device),
            "total_memory_bytes": torch.cuda.get_device_properties(device).total_memory}
