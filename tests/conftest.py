import importlib
import os
from pathlib import Path

import pytest
import torch

from alexnet.data.idx import has_fashion_mnist

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Where the real data may be, read before `_no_user_data` hides the user's places from the library: Debian's
# package, then $ALEXNET_DATA, then the cache that `make demo` downloads into.
REAL_DATA_DIRS = [FMNIST_DIR] + [Path(root).expanduser() / sub
                                 for root in (os.environ.get("ALEXNET_DATA"),
                                              os.environ.get("ALEXNET_CACHE") or "~/.cache/alexnet") if root
                                 for sub in ("", "fashion-mnist")]


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def real_fashion_mnist(places: list[Path], *, slow: bool) -> Path:
    """The first of `places` holding both splits. Without one, a slow test fails (`make test-slow` exists to run
    on the real data: skipping every test would pass having checked nothing); a default-suite test skips."""
    found = next((d for d in places if has_fashion_mnist(d, "train") and has_fashion_mnist(d, "test")), None)
    if found is not None:
        return found
    message = (f"Fashion-MNIST not found (looked in {', '.join(map(str, places))}): install Debian's "
               f"`dataset-fashion-mnist` (apt-get install dataset-fashion-mnist), or run `make demo` to download it")
    if slow:
        pytest.fail(f"{message}; the slow tests need the real data", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def fmnist_dir(request) -> Path:
    return real_fashion_mnist(REAL_DATA_DIRS, slow=request.node.get_closest_marker("slow") is not None)


@pytest.fixture(autouse=True)
def _no_user_data(monkeypatch, tmp_path):
    # Tests never see the user's cache or $ALEXNET_DATA, and nothing may download.
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ALEXNET_DATA", raising=False)
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def interpret(monkeypatch):
    """`interpret(module)`: that alexnet.kernels module reloaded with TRITON_INTERPRET=1, so its Triton kernels run
    on CPU tensors through Triton's interpreter for this test (the module object stays the same: whoever imported it
    sees the interpreted kernels); reloaded compiled again after."""
    reloaded = []

    def switch(module):
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        reloaded.append(module)
        return importlib.reload(module)
    yield switch
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for module in reloaded:
        importlib.reload(module)


@pytest.fixture
def fast_peak(monkeypatch):
    """The bench's MFU peak from two small matmul sizes and a few short samples: the same code as the real
    measurement (whose sizes and seconds per precision are a benchmark's concern) in milliseconds. Each test has
    its own cache (`_no_user_data`) and process memory of what was measured."""
    from alexnet.bench import peak as peak_mod

    monkeypatch.setattr(peak_mod, "SIZES", {"cpu": (64, 128), "cuda": (64, 128)})
    monkeypatch.setattr(peak_mod, "SAMPLE_S", {"cpu": 0.0005, "cuda": 0.0005})
    monkeypatch.setattr(peak_mod, "SIZE_BUDGET_S", {"cpu": 0.005, "cuda": 0.005})
    monkeypatch.setattr(peak_mod, "_MEASURED", {})


@pytest.fixture
def cli(capsys):
    """Run `alexnet ARGV...` in-process: returns (exit code, stdout, stderr); argparse's exits included."""
    from alexnet.cli import main

    def run(*argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: without it they are skipped (and say so), never failed."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
