"""The baseline our throughput is compared with: Dive into Deep Learning 7.1 as the book runs it.

d2l's `load_data_fashion_mnist(batch_size, resize=224)` is `torchvision.datasets.FashionMNIST` with
`transforms.Compose([Resize(224), ToTensor()])` (PIL, per image, on the CPU) and a shuffling
`DataLoader(num_workers=4)`; `train_ch6` moves every batch with `.to(device)`, runs the default-initialised
net in fp32 eager mode, `F.cross_entropy`, plain `torch.optim.SGD(lr)`, and reads the loss and accuracy of every
batch into its `Accumulator` (`float(...)`: a host sync per step). Same architecture, batch size, device and
timing rules (`alexnet.bench.timing.time_steps`) as ours; torchvision only ever reads files already on disk.
"""

import gzip
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms

from alexnet.base.errors import AlexNetError
from alexnet.base.files import atomic_path
from alexnet.bench.throughput import (
    BenchSpec,
    flops_per_image,
    forever,
    peak_memory,
    reset_peak_memory,
    summarise,
    write_synthetic_fashion_mnist,
)
from alexnet.bench.timing import time_steps
from alexnet.data import idx
from alexnet.data.datasets import cache_dir, fashion_mnist_dirs
from alexnet.models import create_model
from alexnet.runtime.device import pick_device
from alexnet.runtime.settings import conv_tf32, matmul_precision

D2L_WORKERS = 4  # d2l's get_dataloader_workers()
BOOK_PRECISION = {False: "fp32", True: "tf32"}  # what the book's fp32 code runs in, by whether on CUDA


def torchvision_root(data_dir: str | Path | None = None) -> Path:
    """A root holding `FashionMNIST/raw/` with the four files decompressed, as torchvision reads them: the files
    `load_dataset` would find, copied (and gunzipped) once into the user cache. Never downloads."""
    source: Path | None = next((d for d in fashion_mnist_dirs(data_dir)
                                if idx.has_fashion_mnist(d, "train") and idx.has_fashion_mnist(d, "test")), None)
    if source is None:
        raise AlexNetError("Fashion-MNIST not found for the baseline (see `alexnet train --help` for where it is "
                           "looked for); use --synthetic or --data-dir DIR")
    root = cache_dir() / "torchvision"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stems in idx.FASHION_MNIST_FILES.values():
        for stem in stems:
            target, found = raw / stem, idx.find_idx_file(source, stem)
            if found is None:  # has_fashion_mnist found both files a moment ago; a race with a deletion
                raise AlexNetError(f"{source}: {stem} vanished while it was being read")
            if target.exists() and target.stat().st_mtime >= found.stat().st_mtime:
                continue
            # atomic, through a unique temp name: a half-written file is never read as data
            with atomic_path(target) as tmp, open(tmp, "wb") as dst, \
                    (gzip.open(found, "rb") if found.suffix == ".gz" else open(found, "rb")) as src:
                shutil.copyfileobj(src, dst)
    return root


def d2l_dataset(root: str | Path, input_size: int, train: bool = True):
    """d2l's `load_data_fashion_mnist(..., resize=input_size)` dataset."""
    transform = transforms.Compose([transforms.Resize(input_size), transforms.ToTensor()])
    return datasets.FashionMNIST(root=str(root), train=train, transform=transform, download=False)


def measure_baseline(spec: BenchSpec, dataset=None, workers: int = D2L_WORKERS) -> dict:
    """Training and inference images/s of the d2l recipe; `dataset` replaces Fashion-MNIST (tests)."""
    with tempfile.TemporaryDirectory(prefix="alexnet-baseline-") as scratch:
        if dataset is None:
            root = (write_synthetic_fashion_mnist(Path(scratch), spec.synthetic_images) if spec.synthetic
                    else torchvision_root(spec.data_dir))
            dataset = d2l_dataset(root, spec.input_size)
        return _measure(spec, dataset, workers)


def _measure(spec: BenchSpec, dataset, workers: int) -> dict:
    device = pick_device(spec.device)
    # torch's defaults, as the book runs: fp32 matmuls, but cuDNN's TF32 for the convolutions on CUDA (torch turns
    # it on by default), and no cuDNN autotuning (ours turns it on only inside its own measurement,
    # alexnet.runtime.settings.torch_settings). So on CUDA the book's "fp32" is TF32 for ~95 % of its FLOPs.
    with matmul_precision("highest"), conv_tf32(True), warnings.catch_warnings():
        # "4 workers on a 2-core machine": d2l's choice, kept on purpose
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        train_s, infer_s, memory, memory_kind = _time_d2l(spec, dataset, workers, device)
    # The same architecture as ours, so the same FLOPs; its MFU is against the peak of the arithmetic the device
    # runs it in: fp32 on a CPU, TF32 on CUDA (the convolutions, ~95 % of the FLOPs).
    return summarise(spec, device, train_s=train_s, infer_s=infer_s, flops=flops_per_image(spec), memory=memory,
                     memory_kind=memory_kind, precision=BOOK_PRECISION[device.type == "cuda"])


def _time_d2l(spec: BenchSpec, dataset, workers: int, device: torch.device) -> tuple[float, float, int, str]:
    options = {"init": "default", **spec.model_options}  # the same net as ours (the book keeps torch's init)
    net = create_model(spec.model, in_channels=1, input_size=spec.input_size, num_classes=10, **options).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=spec.lr)
    loader = torch.utils.data.DataLoader(dataset, spec.batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True)  # drop_last: a full batch every timed step, as ours
    batches = forever(lambda _epoch: iter(loader))
    metric = [0.0, 0.0, 0]  # d2l's Accumulator(3): loss sum, correct, images

    def train_step():  # d2l's train_ch6, one batch
        X, y = next(batches)
        X, y = X.to(device), y.to(device)
        y_hat = net(X)
        loss = F.cross_entropy(y_hat, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            metric[0] += float(loss) * X.shape[0]
            metric[1] += float((y_hat.argmax(dim=1) == y).sum())
            metric[2] += X.shape[0]

    @torch.no_grad()
    def infer_step():  # d2l's evaluate_accuracy_gpu, one batch
        X, y = next(batches)
        X, y = X.to(device), y.to(device)
        return float((net(X).argmax(dim=1) == y).sum())

    reset_peak_memory(device)
    net.train()
    train_s = time_steps(train_step, steps=spec.steps, warmup=spec.warmup, device=device)
    memory, memory_kind = peak_memory(device)
    net.eval()
    infer_s = time_steps(infer_step, steps=spec.steps, warmup=spec.warmup, device=device)
    return train_s, infer_s, memory, memory_kind
