"""PreparedLoader's overlap (alexnet.data.prepared): reads in background threads and the next batch decoded while
the caller holds the current one give exactly the batches of the plain sequential decode, in the same order,
whatever the threads' timing; an early stop leaves no thread behind; a bad image stops the epoch at its step; the
loader says where its images were decoded; and the decode benchmark's per-backend table (alexnet.bench.decode).
On CUDA (gpu tests): the decoding stream and events give the plain decode's batches bit for bit, and nvJPEG (or
nvImageCodec) is what decoded them."""

import random
import threading
import time

import pytest
import torch
from helpers import one_line_error
from test_prepare import SIZE, run_prepare, write_source

from alexnet.base.errors import AlexNetError
from alexnet.bench.decode import BASELINE, decode_backends
from alexnet.data.decode import DECODER_ENV
from alexnet.data.loader import Order
from alexnet.data.prepared import OVERLAP_ENV, PreparedDataset, PreparedLoader

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

THREADS = ("alexnet-read", "alexnet-next")  # the loader's own threads (the CPU decode pool is shared, and stays)


@pytest.fixture
def prepared(tmp_path) -> PreparedDataset:
    run_prepare(write_source(tmp_path / "src"), tmp_path / "dst")
    return PreparedDataset(tmp_path / "dst", "train", SIZE)


def sequential(ds: PreparedDataset, order: Order, epoch: int, start: int = 0):
    """The reference: each step's samples decoded one batch at a time, in the caller's thread."""
    return [(ds.decode(idx), ds.labels[idx], size) for idx, size in order.steps(epoch, start)]


def assert_same(batches, expected, device="cpu"):
    assert len(batches) == len(expected)
    for batch, (images, labels, size) in zip(batches, expected, strict=True):
        assert batch.images.device.type == batch.labels.device.type == torch.device(device).type
        assert torch.equal(batch.labels.cpu(), labels) and batch.global_size == size
        assert torch.equal(batch.images.cpu(), images)


def jitter(monkeypatch, ds: PreparedDataset, seed: int, most_s: float = 0.02) -> None:
    """Random sleeps in the reader threads: batches' bytes arrive in any order and at any time."""
    rng, read = random.Random(seed), ds.read
    monkeypatch.setattr(ds, "read", lambda indices: (time.sleep(rng.uniform(0, most_s)), read(indices))[1])


@pytest.mark.parametrize("world,rank,batch_size,epoch,start", [(1, 0, 4, 0, 0), (1, 0, 3, 1, 2), (2, 1, 4, 3, 0),
                                                               (3, 2, 5, 2, 1), (4, 0, 4, 0, 0)])
def test_overlapped_batches_are_the_sequential_decode_whatever_the_timing(prepared, monkeypatch, world, rank,
                                                                          batch_size, epoch, start):
    options = dict(batch_size=batch_size, device="cpu", shuffle=True, seed=7, rank=rank, world_size=world)
    expected = sequential(prepared, Order(len(prepared), drop_last=False, **{k: v for k, v in options.items()
                                                                            if k != "device"}), epoch, start)
    plain = PreparedLoader(prepared, overlap=False, **options)
    assert_same(list(plain.batches(epoch, start)), expected)
    for seed in range(3):
        jitter(monkeypatch, prepared, seed)
        loader = PreparedLoader(prepared, overlap=True, **options)
        got, rng = [], random.Random(100 + seed)
        for batch in loader.batches(epoch, start):
            time.sleep(rng.uniform(0, 0.01))  # ... and a consumer that takes its time too
            got.append(batch)
        assert_same(got, expected)
        monkeypatch.undo()


@pytest.mark.parametrize("overlap", [True, False])
def test_every_prepared_file_goes_to_exactly_one_rank(prepared, monkeypatch, overlap):
    """Issue #22 item 6, on the loader itself (tests/test_loader.py checks `Order` alone): for 1 to 4 ranks, in
    each epoch the shard records the ranks read (every `PreparedDataset.read`, in whatever thread) name every
    source file once across the ranks, none twice (with drop_last: all but the dropped tail), every rank takes the
    same number of steps, and its batches carry the labels of the records it read."""
    read, log = prepared.read, []
    monkeypatch.setattr(prepared, "read", lambda indices: (log.extend(indices), read(indices))[1])
    files = [path for path, _ in prepared.samples]
    for world in (1, 2, 3, 4):
        for drop_last in (False, True):
            for epoch in (0, 1):
                steps, seen = set(), []
                for rank in range(world):
                    log.clear()
                    loader = PreparedLoader(prepared, batch_size=4, device="cpu", shuffle=True, seed=5,
                                            drop_last=drop_last, rank=rank, world_size=world, overlap=overlap)
                    batches = list(loader.batches(epoch))
                    steps.add(len(batches))
                    labels = sorted(label for b in batches for label in b.labels.tolist())
                    assert labels == sorted(prepared.labels[log].tolist())
                    seen += [files[i] for i in log]
                assert len(steps) == 1
                assert len(seen) == len(set(seen)) == (len(files) // 4 * 4 if drop_last else len(files))
                if not drop_last:
                    assert sorted(seen) == sorted(files)


def test_stopping_early_leaves_no_thread_behind(prepared):
    loader = PreparedLoader(prepared, batch_size=2, device="cpu", shuffle=True, seed=1, overlap=True)
    batches = loader.batches(0)
    first = next(batches)
    assert [t.name for t in threading.enumerate() if t.name.startswith(THREADS)]  # reading and decoding ahead
    batches.close()  # what a `break`, an islice or an exception in the caller does
    assert not [t.name for t in threading.enumerate() if t.name.startswith(THREADS)]
    assert torch.equal(first.images, prepared.decode(loader.order.permutation(0)[:2]))


@pytest.mark.parametrize("overlap", [True, False])
def test_a_bad_image_stops_the_epoch_at_its_step_with_its_name(prepared, monkeypatch, overlap):
    loader = PreparedLoader(prepared, batch_size=4, device="cpu", shuffle=True, seed=2, overlap=overlap)
    bad_step = [idx.tolist() for idx, _ in loader.order.steps(0)][2]
    read = prepared.read

    def damaged(indices):
        blobs = read(indices)
        if indices == bad_step:
            blobs[1] = blobs[1][:40]  # a JPEG cut short
        return blobs
    monkeypatch.setattr(prepared, "read", damaged)
    seen = []
    with pytest.raises(AlexNetError) as excinfo:
        for batch in loader.batches(0):
            seen.append(batch.labels.tolist())
    assert len(seen) == 2  # the two steps before it, whole
    one_line_error(excinfo, prepared.describe(bad_step[1]), "cannot decode image")
    assert not [t.name for t in threading.enumerate() if t.name.startswith(THREADS)]


def test_the_loader_says_where_it_decoded_and_the_switches(prepared, monkeypatch):
    monkeypatch.delenv(OVERLAP_ENV, raising=False)
    monkeypatch.delenv(DECODER_ENV, raising=False)
    loader = PreparedLoader(prepared, batch_size=4, device="cpu", shuffle=True, drop_last=True)
    assert loader.decoded_on == {"nvimgcodec": 0, "nvjpeg": 0, "cpu": 0}
    for _ in loader.batches(0):
        pass
    assert loader.decoded_on == {"nvimgcodec": 0, "nvjpeg": 0, "cpu": 12}  # 3 steps of 4 of the 14 images
    described = loader.describe()
    assert described["overlap"] is True and described["backend"] == "cpu" and described["requested"] == "auto"
    monkeypatch.setenv(OVERLAP_ENV, "0")
    monkeypatch.setenv(DECODER_ENV, "nvjpeg")
    switched = PreparedLoader(prepared, batch_size=4, device="cpu", shuffle=False)
    assert switched.overlap is False and switched.describe()["note"] == "nvjpeg needs a CUDA device: decoded on the CPU"
    assert PreparedLoader(prepared, batch_size=4, device="cpu", shuffle=False, overlap=True).overlap is True
    monkeypatch.setenv(DECODER_ENV, "fast")
    with pytest.raises(AlexNetError, match="decoder must be one of"):
        PreparedLoader(prepared, batch_size=4, device="cpu", shuffle=False)


def test_decode_backends_measures_each_choice_against_torchvision(prepared):
    result = decode_backends(prepared.root, "cpu", batch_sizes=(4, 32), images=12)
    assert result["skipped"] == {"nvjpeg": "needs a CUDA device", "nvimgcodec": "needs a CUDA device",
                                 "nvimgcodec-hw": "needs a CUDA device", "nvimgcodec-gpu": "needs a CUDA device",
                                 "batch 32": "12 images are fewer than one batch"}
    baseline, cpu = result["rows"]  # at batch 4, one stream: the baseline, then the one choice a CPU has
    assert (baseline["decoder"], baseline["batch_size"], baseline["streams"]) == (BASELINE, 4, 1)
    assert baseline["ratio_to_baseline"] is None and baseline["max_abs_diff"] == 0
    assert (cpu["decoder"], cpu["backend"], cpu["batch_size"], cpu["streams"]) == ("cpu", "cpu", 4, 1)
    assert cpu["max_abs_diff"] == 0  # the same libjpeg-turbo call
    # the first batch, one warm-up batch, then the 3 timed ones: all decoded where the row says
    assert cpu["decoded_on"] == {"nvimgcodec": 0, "nvjpeg": 0, "cpu": 4 * (1 + 1 + 3)} and cpu["fallbacks"] == []
    assert cpu["images_per_sec"] > 0 and cpu["ratio_to_baseline"] > 0
    assert result["images"] == 12 and result["best"] in result["rows"]


@pytest.mark.gpu
@pytest.mark.parametrize("decoder", ["nvjpeg", "nvimgcodec"])
def test_cuda_overlap_gives_the_plain_decode_bit_for_bit(prepared, monkeypatch, decoder):
    """The decoding stream, its events and record_stream: a busy consumer stream and jittered reads change
    nothing; and the images were decoded by the backend asked for, none on the CPU."""
    if decoder == "nvimgcodec":
        pytest.importorskip("nvidia.nvimgcodec")
    options = dict(batch_size=4, device="cuda", shuffle=True, seed=5, decoder=decoder)
    expected = [(b.images.cpu(), b.labels.cpu(), b.global_size)
                for b in PreparedLoader(prepared, overlap=False, **options).batches(1)]
    jitter(monkeypatch, prepared, 0)
    busy = torch.randn(2048, 2048, device="cuda")
    for consumer in (torch.cuda.current_stream(), torch.cuda.Stream()):
        loader = PreparedLoader(prepared, overlap=True, **options)
        got = []
        with torch.cuda.stream(consumer):
            for batch in loader.batches(1):
                for _ in range(20):  # keep the consumer's stream busy while the next batch decodes
                    busy = (busy @ busy).tanh_()
                got.append(type(batch)(batch.images.clone(), batch.labels.clone(), batch.global_size))
        torch.cuda.synchronize()
        assert_same(got, expected, device="cuda")
        # all 14 images of the split: drop_last is off here, so the last step takes the 2 left (4 + 4 + 4 + 2)
        assert loader.decoded_on == {"nvimgcodec": 0, "nvjpeg": 0, "cpu": 0, decoder: 14}, loader.describe()
