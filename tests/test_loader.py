"""Device-resident loader: deterministic epoch order, a partition across ranks, exact mid-epoch restart. The image
folder loader: the same partition, empty shares included."""

import pytest
import torch
from torchvision.io import write_png

import alexnet.data.loader as loader_module
from alexnet.base.errors import AlexNetError
from alexnet.data.folder import FolderDataset
from alexnet.data.loader import DeviceLoader, FolderLoader, Order, Timed

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec and warns on every call.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def dataset(n=103):
    images = torch.arange(n, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2)
    return images.contiguous(), torch.arange(n)  # label i marks sample i


def indices(loader, epoch, start=0):
    return [b.labels.tolist() for b in loader.batches(epoch, start)]


def test_epoch_order_is_a_function_of_seed_and_epoch():
    images, labels = dataset()
    make = lambda seed: DeviceLoader(images, labels, batch_size=10, device="cpu", shuffle=True, seed=seed)
    a, b = make(0), make(0)
    assert indices(a, 3) == indices(b, 3)
    assert indices(a, 3) != indices(a, 4)
    assert indices(a, 3) != indices(make(1), 3)
    flat = sum(indices(a, 3), [])
    assert sorted(flat) == list(range(103))  # a permutation: every sample once


def test_batches_hold_the_right_images():
    images, labels = dataset()
    loader = DeviceLoader(images, labels, batch_size=16, device="cpu", shuffle=True, seed=5)
    for batch in loader.batches(0):
        assert torch.equal(batch.images, images[batch.labels])
        assert batch.images.dtype == torch.uint8


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_partition_each_global_batch(world, drop_last):
    images, labels = dataset(103)
    loaders = [DeviceLoader(images, labels, batch_size=12, device="cpu", shuffle=True, seed=2, drop_last=drop_last,
                            rank=r, world_size=world) for r in range(world)]
    single = DeviceLoader(images, labels, batch_size=12, device="cpu", shuffle=True, seed=2, drop_last=drop_last)
    assert len({len(loader) for loader in loaders}) == 1  # every rank takes the same number of steps
    assert len(single) == (103 // 12 if drop_last else 9)
    per_rank = [list(loader.batches(7)) for loader in loaders]
    for step, global_batch in enumerate(single.batches(7)):
        shares = [per_rank[r][step] for r in range(world)]
        union = sorted(sum((s.labels.tolist() for s in shares), []))
        assert union == sorted(global_batch.labels.tolist())  # together: exactly the global batch
        assert all(s.global_size == len(global_batch.labels) for s in shares)
    seen = sum((b.labels.tolist() for rank in per_rank for b in rank), [])
    assert len(seen) == len(set(seen)) == (103 // 12 * 12 if drop_last else 103)


def test_evaluation_sees_every_sample_once_over_ranks():
    images, labels = dataset(199)
    seen = []
    for rank in range(2):
        loader = DeviceLoader(images, labels, batch_size=64, device="cpu", shuffle=False, rank=rank, world_size=2)
        seen += sum(indices(loader, 0), [])
    assert sorted(seen) == list(range(199))


def test_restart_mid_epoch_continues_the_same_order():
    images, labels = dataset()
    loader = DeviceLoader(images, labels, batch_size=10, device="cpu", shuffle=True, seed=9)
    assert indices(loader, 2, start=4) == indices(loader, 2)[4:]


def test_fewer_images_per_step_than_ranks_is_a_one_line_error():
    images, labels = dataset()
    with pytest.raises(AlexNetError, match=r"^train.batch_size 3 is smaller than the 4 ranks[^\n]*$"):
        DeviceLoader(images, labels, batch_size=3, device="cpu", shuffle=True, drop_last=True, world_size=4)


def test_folder_loader_yields_empty_shares_of_a_short_last_batch(tmp_path):
    # 9 images, global batch 4, 4 ranks: the last global batch holds one image, so ranks 1-3 get none of it.
    for i in range(9):
        path = tmp_path / "train" / f"class{i % 2}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(torch.full((3, 6, 6), 10 * i, dtype=torch.uint8), str(path))  # image i is all 10 * i
    data = FolderDataset(tmp_path, image_size=4)
    ranks = [list(FolderLoader(data, batch_size=4, device="cpu", shuffle=True, seed=3, rank=r, world_size=4,
                               workers=0).batches(0)) for r in range(4)]
    assert [[len(b.labels) for b in rank] for rank in ranks] == [[1, 1, 1], [1, 1, 0], [1, 1, 0], [1, 1, 0]]
    assert all([b.global_size for b in rank] == [4, 4, 1] for rank in ranks)
    for empty in (rank[-1] for rank in ranks[1:]):
        assert empty.images.shape == (0, 3, 4, 4) and empty.images.dtype == torch.uint8
        assert empty.labels.shape == (0,) and empty.labels.dtype == torch.int64
    seen = [int(image[0, 0, 0]) // 10 for rank in ranks for b in rank for image in b.images]
    assert sorted(seen) == list(range(9))  # every sample exactly once across the ranks
    for b in (b for rank in ranks for b in rank):
        assert b.labels.tolist() == [int(image[0, 0, 0]) // 10 % 2 for image in b.images]


@pytest.mark.parametrize("world", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("n,batch_size", [(1, 8), (7, 8), (103, 12), (200, 16), (64, 64)])
def test_every_sample_goes_to_exactly_one_rank_each_epoch(world, n, batch_size):
    """Issue #22 item 6: the split across ranks of `Order` (every loader's, prepared shards included)."""
    for drop_last in (False, True):
        if drop_last and batch_size < world:
            continue  # refused (test above): every rank needs an image per step
        orders = [Order(n, batch_size, shuffle=True, seed=4, drop_last=drop_last, rank=r, world_size=world)
                  for r in range(world)]
        for epoch in (0, 1, 5):
            shares = [list(order.steps(epoch)) for order in orders]
            assert len({len(s) for s in shares}) == 1  # the same number of steps on every rank
            seen = [int(i) for rank in shares for idx, _ in rank for i in idx]
            kept = n // batch_size * batch_size if drop_last else n
            assert len(seen) == len(set(seen)) == kept  # no sample twice, none lost (but a dropped tail)
            assert set(seen) <= set(range(n))
            if not drop_last:
                assert sorted(seen) == list(range(n))


def test_timed_sums_the_seconds_blocked_in_next(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(loader_module.time, "perf_counter", lambda: clock[0])

    def slow_items():
        for delay in (0.5, 0.25, 2.0):
            clock[0] += delay  # the producer takes `delay` seconds to make an item
            yield delay
        clock[0] += 0.125      # ... and a while to find that it has none left

    timed = Timed(slow_items())
    for _ in timed:
        clock[0] += 10.0       # the consumer's own time is not waiting
    assert timed.waited == 0.5 + 0.25 + 2.0 + 0.125
