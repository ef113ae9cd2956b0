"""The captured training step (alexnet.training.graphs) and the fast-path choices (alexnet.training.fast).

On a CPU: everything of `CapturedStep` but the graph itself (`capture=False`): its warm-up steps are undone
exactly (parameters and momentum buffers, a buffer that did not exist set to zero), and replays with the tensor
learning rate give bit-for-bit the weights of the eager steps. On CUDA (marker gpu): the captured graph against
the eager step, and the trainer's own choice."""

import pytest
import torch
from synthetic import write_fashion_mnist

from alexnet.base.errors import AlexNetError
from alexnet.config import apply_overrides, check, load_preset
from alexnet.runtime.distributed import DistEnv
from alexnet.runtime.settings import torch_settings
from alexnet.training.graphs import CapturedStep
from alexnet.training.trainer import Trainer

SMALL = {"model.width": 8, "model.hidden": 32, "train.batch_size": 32, "model.dropout": 0.2,
         "data.train_augment": [{"op": "hflip"}], "train.estimate_steps": 0, "train.precision": "fp32"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=256, n_test=64)


def trainer(data_dir, tmp_path, device="cpu", **overrides) -> Trainer:
    cfg = apply_overrides(load_preset("quick"), {**SMALL, "data.data_dir": str(data_dir), "train.device": device,
                                                 **overrides})
    torch.manual_seed(0)  # the same initial weights for every trainer of a test
    return Trainer(cfg, tmp_path / f"run{len(list(tmp_path.iterdir()))}", DistEnv(), torch.device(device),
                   quiet=True)


def steps(t: Trainer, n: int, captured: CapturedStep | None = None) -> list[float]:
    """n steps on the epoch's first batches at the schedule's rates, each with its own dropout seed."""
    losses = []
    for i, batch in zip(range(n), t.data.train.batches(0), strict=False):
        x = t.data.train_pipeline(batch.images, t.aug_generator.manual_seed(i))
        torch.manual_seed(100 + i)
        lr = t.schedule.lr(i)
        if captured is None:
            t.schedule.apply(t.optimizer, i)
            stats = t.compute_step(x, batch.labels, batch.global_size)
        else:
            stats = captured.replay(x, batch.labels, lr)
        losses.append(stats[0].item())
    return losses


@pytest.mark.parametrize("clip", [0.0, 0.5])  # 0.5: below the first steps' gradient norm, so it clips
def test_a_replayed_step_equals_the_eager_step_and_the_warm_up_leaves_no_trace(tmp_path, data_dir, clip):
    eager, replayed = (trainer(data_dir, tmp_path, **{"optim.grad_clip": clip}) for _ in range(2))
    assert eager.cfg.optim.momentum == 0.9  # momentum buffers, absent before the first step
    first = next(replayed.data.train.batches(0))
    x = replayed.data.train_pipeline(first.images, replayed.aug_generator)
    before = {k: v.clone() for k, v in replayed.model.state_dict().items()}
    captured = CapturedStep(lambda x, y: replayed.compute_step(x, y, first.global_size), replayed.optimizer, x,
                            first.labels, capture=False)
    for key, value in replayed.model.state_dict().items():  # three warm-up steps, undone in place
        assert torch.equal(value, before[key]), key
    buffers = [replayed.optimizer.state[p]["momentum_buffer"] for p in replayed.model.parameters()]
    assert all(b is not None and not b.any() for b in buffers)  # zero: the next step is a first step
    assert all(isinstance(group["lr"], float) for group in replayed.optimizer.param_groups)
    assert steps(replayed, 4, captured) == steps(eager, 4)
    for key, value in eager.model.state_dict().items():
        assert torch.equal(replayed.model.state_dict()[key], value), key
    for p, q in zip(eager.model.parameters(), replayed.model.parameters(), strict=True):
        assert torch.equal(eager.optimizer.state[p]["momentum_buffer"], replayed.optimizer.state[q]["momentum_buffer"])


def test_the_fast_paths_are_chosen_and_named(tmp_path, data_dir):
    t = trainer(data_dir, tmp_path)
    assert not t.fast["cuda_graphs"].on and "not a CUDA device" in t.fast["cuda_graphs"].reason
    assert not t.fast["space_to_depth"].on and "not a strided convolution" in t.fast["space_to_depth"].reason
    assert t.run_info["fast_paths"]["cuda_graphs"].startswith("cuda_graphs off (")
    with pytest.raises(AlexNetError, match="train.cuda_graphs: true does not apply: not a CUDA device"):
        trainer(data_dir, tmp_path, **{"train.cuda_graphs": True})
    d2l = trainer(data_dir, tmp_path, **{"model.name": "d2l", "data.input_size": 67, "train.space_to_depth": True})
    assert d2l.fast["space_to_depth"].on and type(d2l.net).__name__ == "FastForward"
    assert list(d2l.state_dict()["model"]) == list(d2l.model.state_dict())  # saved as the plain net
    plain = trainer(data_dir, tmp_path, **{"model.name": "d2l", "data.input_size": 67})
    assert not plain.fast["space_to_depth"].on and "off on a CPU" in plain.fast["space_to_depth"].reason
    plain.model.load_state_dict(d2l.model.state_dict())
    batch = next(d2l.data.train.batches(0))
    folded, unfolded = d2l.train_step(batch), plain.train_step(batch)  # the same seeds: step 0, rank 0
    # the correct counts: equal but for an argmax near-tie, which two fp32 kernel paths may break differently
    assert folded[0].item() == pytest.approx(unfolded[0].item(), rel=1e-5) and abs(folded[1] - unfolded[1]) <= 1


def test_pool_first_is_chosen_where_the_net_has_relu_then_pool(tmp_path, data_dir):
    t = trainer(data_dir, tmp_path)  # small: conv relu pool
    assert t.fast["pool_first"].on and t.fast["pool_first"].reason.startswith("auto: max-pool before ReLU")
    assert type(t.net).__name__ == "FastForward" and ("pool_relu", 1) in t.net.steps
    off = trainer(data_dir, tmp_path, **{"train.pool_first": False})
    assert off.net is off.model
    assert off.run_info["fast_paths"]["pool_first"] == "pool_first off (train.pool_first: false)"
    tanh = trainer(data_dir, tmp_path, **{"model.activation": "tanh"})
    assert not tanh.fast["pool_first"].on and "no ReLU followed by a max-pool" in tanh.fast["pool_first"].reason
    with pytest.raises(AlexNetError, match="train.pool_first: true does not apply: .*no ReLU followed by a max-pool"):
        trainer(data_dir, tmp_path, **{"model.activation": "tanh", "train.pool_first": True})
    # one training step each way, from the same weights and seeds: bit-identical (the ReLU only moved)
    off.model.load_state_dict(t.model.state_dict())
    batch = next(t.data.train.batches(0))
    for fast_out, plain_out in zip(t.train_step(batch), off.train_step(batch), strict=True):
        assert torch.equal(torch.as_tensor(fast_out), torch.as_tensor(plain_out))
    for key, value in t.model.state_dict().items():
        assert torch.equal(off.model.state_dict()[key], value), key


def test_accumulation_needs_an_image_per_micro_batch(tmp_path, data_dir):
    with pytest.raises(AlexNetError, match="train.batch_size 2 is smaller than train.accum_steps 4"):
        check(apply_overrides(load_preset("quick"), {"train.batch_size": 2, "train.accum_steps": 4}))


@pytest.mark.gpu
@pytest.mark.parametrize("clip", [0.0, 0.5])  # the fast preset clips: clip_grad_norm_ is captured too
def test_the_cuda_graph_step_equals_the_eager_step_on_cuda(tmp_path, data_dir, clip):
    """The trainer's own path (graphs auto vs off), dropout and augmentation on, fp32 (TF32 off): the same
    arithmetic, so the same weights to fp32 rounding (cuBLAS may pick another kernel while capturing)."""
    cuda = torch.device("cuda")
    net = {"model.name": "d2l", "data.input_size": 67, "optim.grad_clip": clip}
    with torch_settings(cuda, precision="fp32"):
        graphed = trainer(data_dir, tmp_path, "cuda", **net)
        eager = trainer(data_dir, tmp_path, "cuda", **net, **{"train.cuda_graphs": False})
        assert graphed.fast["cuda_graphs"].on and graphed.fast["space_to_depth"].on
        assert_five_steps_agree(graphed, eager)
        assert graphed.captured is not None and eager.captured is None


def test_the_warm_up_undo_covers_the_models_buffers():
    """A net of the user's own (`alexnet.fit`) may hold buffers the warm-up steps change: BatchNorm's statistics."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), y, reduction="sum")
        loss.backward()
        optimizer.step()
        return torch.stack([loss.detach().double(), torch.zeros((), dtype=torch.float64)])

    before = {k: v.clone() for k, v in net.state_dict().items()}
    CapturedStep(step, optimizer, x, y, buffers=list(net.buffers()), capture=False)
    for key, value in net.state_dict().items():  # running_mean, running_var, num_batches_tracked included
        assert torch.equal(value, before[key]), key


def assert_five_steps_agree(fast: Trainer, plain: Trainer, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Five training steps each, on the same batches: fast's weights equal plain's to rtol, atol."""
    for t in (fast, plain):
        t.net.train()
        for _, batch in zip(range(5), t.data.train.batches(0), strict=False):
            t.train_step(batch)
            t.progress.global_step += 1
    for key, value in plain.model.state_dict().items():
        torch.testing.assert_close(fast.model.state_dict()[key].float(), value.float(), rtol=rtol, atol=atol, msg=key)


def assert_one_step_agrees(fast: Trainer, plain: Trainer) -> None:
    """One training step each way from the same weights and seeds: the same loss, and weights to fp32 rounding."""
    plain.model.load_state_dict(fast.model.state_dict())
    batch = next(fast.data.train.batches(0))
    fast_loss, plain_loss = fast.train_step(batch)[0], plain.train_step(batch)[0]
    assert float(fast_loss) == pytest.approx(float(plain_loss), rel=1e-6)
    for key, value in fast.model.state_dict().items():
        torch.testing.assert_close(value, plain.model.state_dict()[key], rtol=1e-5, atol=1e-7, msg=key)


def test_fused_lrn_is_chosen_where_the_net_has_lrn(tmp_path, data_dir):
    lrn = {"model.lrn": True}
    t = trainer(data_dir, tmp_path, **lrn)
    assert t.fast["fused_lrn"].on and t.fast["fused_lrn"].reason.startswith("auto: one Function")
    assert t.run_info["fast_paths"]["triton_lrn"] == "triton_lrn off (not a CUDA device: the kernels are Triton's)"
    with pytest.raises(AlexNetError, match="train.triton_lrn: true does not apply: not a CUDA device"):
        trainer(data_dir, tmp_path, **lrn, **{"train.triton_lrn": True})
    on = trainer(data_dir, tmp_path, **lrn, **{"train.fused_lrn": True})
    assert on.fast["fused_lrn"].on and ("lrn", 2) in on.net.steps
    assert list(on.state_dict()["model"]) == list(on.model.state_dict())  # saved as the plain net
    plain = trainer(data_dir, tmp_path, **{**lrn, "train.fused_lrn": False, "train.pool_first": False})
    assert plain.net is plain.model
    assert plain.run_info["fast_paths"]["fused_lrn"] == "fused_lrn off (train.fused_lrn: false)"
    none = trainer(data_dir, tmp_path)
    assert not none.fast["fused_lrn"].on and "has no LRN" in none.fast["fused_lrn"].reason
    with pytest.raises(AlexNetError, match="train.fused_lrn: true does not apply: .*has no LRN"):
        trainer(data_dir, tmp_path, **{"train.fused_lrn": True})
    compiled = trainer(data_dir, tmp_path, **lrn, **{"train.compile": True})
    assert not compiled.fast["fused_lrn"].on and "torch.compile" in compiled.fast["fused_lrn"].reason
    assert_one_step_agrees(on, plain)


def test_fused_pool_waits_for_cuda_and_a_measurement(tmp_path, data_dir):
    """The Triton pool (alexnet.kernels.pool) is off on a CPU, and off by default on CUDA until measured; asking
    for it where it cannot run is a one-line error."""
    t = trainer(data_dir, tmp_path)
    assert not t.fast["fused_pool"].on and t.fast["fused_pool"].reason.startswith("not a CUDA device")
    assert t.run_info["fast_paths"]["fused_pool"].startswith("fused_pool off (not a CUDA device")
    with pytest.raises(AlexNetError, match="train.fused_pool: true does not apply: not a CUDA device"):
        trainer(data_dir, tmp_path, **{"train.fused_pool": True})
    assert trainer(data_dir, tmp_path, **{"train.fused_pool": False}).fast["fused_pool"].reason == \
        "train.fused_pool: false"


def test_bias_after_pool_waits_for_a_measurement_and_trains_as_the_plain_order(tmp_path, data_dir):
    """Off by default (on a CPU oneDNN adds the bias inside the convolution); asked for, the convolutions before a
    ReLU and a max-pool run without their bias, the checkpoint is the plain net's, and one training step from the
    same weights gives the plain step's loss and weights to fp32 rounding."""
    t = trainer(data_dir, tmp_path)
    assert not t.fast["bias_after_pool"].on and "off on a CPU" in t.fast["bias_after_pool"].reason
    on = trainer(data_dir, tmp_path, **{"train.bias_after_pool": True})
    assert on.run_info["fast_paths"]["bias_after_pool"] == "bias_after_pool on (train.bias_after_pool: true)"
    assert [s for s in on.net.steps if "bias" in s[0]] == [("conv_nobias", 0), ("pool_bias_relu", 1),
                                                           ("conv_nobias", 3), ("pool_bias_relu", 4),
                                                           ("conv_nobias", 10), ("pool_bias_relu", 11)]
    assert list(on.state_dict()["model"]) == list(on.model.state_dict())  # saved as the plain net
    assert_one_step_agrees(on, t)
    with pytest.raises(AlexNetError, match="train.bias_after_pool: true does not apply: .*no biased convolution"):
        trainer(data_dir, tmp_path, **{"train.bias_after_pool": True, "model.activation": "tanh"})


@pytest.mark.gpu
def test_the_fused_pool_trains_as_the_eager_pool_on_cuda(tmp_path, data_dir):
    """The captured d2l step with the Triton pool against the same step with torch's pool, fp32 (TF32 off): the
    pool's values and gradients are bit-equal, so the weights agree to the other kernels' rounding."""
    cuda = torch.device("cuda")
    net = {"model.name": "d2l", "data.input_size": 67}
    with torch_settings(cuda, precision="fp32"):
        fused = trainer(data_dir, tmp_path, "cuda", **net, **{"train.fused_pool": True})
        eager = trainer(data_dir, tmp_path, "cuda", **net)
        assert fused.fast["fused_pool"].on and not eager.fast["fused_pool"].on
        assert ("pool_relu_fused", 1) in fused.net.steps
        assert_five_steps_agree(fused, eager)
        assert fused.captured is not None


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_triton_lrn_trains_as_the_fused_function_on_cuda(tmp_path, data_dir, precision):
    """The captured step of the small net with LRN, its ReLU + LRN as the Triton kernels against the analytic
    Function: after 5 steps the weights agree to rounding (fp32, TF32 off) or to bf16's."""
    cuda = torch.device("cuda")
    net = {"model.lrn": True, "train.precision": precision}
    tol = {"rtol": 1e-5, "atol": 1e-6} if precision == "fp32" else {"rtol": 2e-2, "atol": 2e-3}
    with torch_settings(cuda, precision=precision):
        triton = trainer(data_dir, tmp_path, "cuda", **net, **{"train.triton_lrn": True})
        function = trainer(data_dir, tmp_path, "cuda", **net)
        assert triton.fast["triton_lrn"].on and not triton.fast["fused_lrn"].on and function.fast["fused_lrn"].on
        assert any(what == "relu_lrn_triton" for what, _ in triton.net.steps)
        assert_five_steps_agree(triton, function, **tol)
        assert triton.captured is not None


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bias_after_pool_trains_as_the_plain_order_on_cuda(tmp_path, data_dir, precision):
    """The captured d2l step with the biases after the pools against the plain order, on CUDA: the first step's
    logits are equal (torch adds a CUDA convolution's bias in a kernel of its own, so moving it past the pool
    changes no value), and after 5 steps the weights agree to rounding (fp32, TF32 off) or to bf16's."""
    cuda = torch.device("cuda")
    net = {"model.name": "d2l", "data.input_size": 67, "train.precision": precision}
    tol = {"rtol": 1e-5, "atol": 1e-6} if precision == "fp32" else {"rtol": 2e-2, "atol": 2e-3}
    with torch_settings(cuda, precision=precision):
        moved = trainer(data_dir, tmp_path, "cuda", **net, **{"train.bias_after_pool": True})
        plain = trainer(data_dir, tmp_path, "cuda", **net)
        assert moved.fast["bias_after_pool"].on and ("fold_nobias", 0) in moved.net.steps  # conv1 folded on CUDA
        assert ("fold", 0) in plain.net.steps
        images = next(moved.data.train.batches(0)).images
        with torch.no_grad():
            moved.eval_net.eval(), plain.eval_net.eval()
            assert torch.equal(moved.eval_logits(images), plain.eval_logits(images))
        assert_five_steps_agree(moved, plain, **tol)
