"""Which fast paths a run takes (issue #21): each is an execution form of the same arithmetic, chosen here from
the device and the config, named with its reason in the banner and `config.yaml`, and off with one setting.

* `train.cuda_graphs` (auto | true | false): the training step captured as one CUDA graph
  (`alexnet.training.graphs`). It applies on CUDA to a single process (DDP's collectives are not captured here)
  with one micro-batch per step and no loss scaling (fp16's GradScaler decides on the host whether to step).
* `train.space_to_depth` (auto | true | false): conv1 in its space-to-depth form (`alexnet.kernels.conv1`),
  exact; auto takes it on CUDA, where it moves conv1 onto tensor cores (in bf16, fp16, tf32; measured on an H200:
  1.39x the d2l step in bf16, docs/performance.md). It composes with torch.compile and DDP.
* `train.pool_first` (auto | true | false): each ReLU followed by a max-pool runs as the max-pool, then the ReLU
  (`alexnet.kernels.forward`), exact in values and gradients; auto takes it wherever the net has the pair: the
  ReLU's forward and backward then touch ~4x fewer elements, on every device.
* `train.fused_pool` (auto | true | false): each max-pool as one pair of Triton kernels (`alexnet.kernels.pool`):
  the arg-max kept as one int8 per output instead of torch's int64 index, and with pool_first the ReLU inside;
  bit-equal in fp32. It applies on CUDA with Triton, outside torch.compile (inductor generates its own pool). auto
  leaves it off until an H200 run has measured it against the eager kernels (`benchmarks/run_gpu.sh`, bench variant
  `fused_pool`): a default follows a measurement.
* `train.bias_after_pool` (auto | true | false): a biased convolution followed by ReLU -> max-pool runs without its
  bias, added to the pooled tensor before the ReLU (`alexnet.kernels.forward`): the same values as torch's CUDA
  convolution (which adds its bias in a separate kernel), the gradients to rounding of the bias's sum. auto leaves
  it off until measured on a GPU (`benchmarks/run_gpu.sh`, bench variant `bias_after_pool`); on a CPU oneDNN adds
  the bias inside the convolution, so there is nothing to gain.
* `train.fused_lrn` (auto | true | false): the paper's LRN as one autograd Function with its analytic backward
  (`alexnet.kernels.lrn`), equal to the plain module within a few ulp; auto takes it when the step is not compiled
  (torch.compile fuses the plain module's ops itself, about as fast on a CPU): 11 kernels for ~33, 1.9-4.7x the
  plain module's forward + backward on a 2-core AVX512 CPU (benchmarks/lrn.py, docs/performance.md).
* `train.triton_lrn` (auto | true | false): each ReLU -> LRN (or LRN alone) as one pair of Triton kernels
  (`alexnet.kernels.relu_lrn`), x the only tensor saved; it takes the place of fused_lrn. It applies on CUDA with
  Triton, outside torch.compile. auto leaves it off until an H200 run has measured it against fused_lrn
  (`benchmarks/run_gpu.sh`: the `folder` stage's paper-net step candidates `triton_lrn`, and stage
  `paper_profile`).
"""

from dataclasses import dataclass

import torch

from alexnet.base.errors import AlexNetError
from alexnet.config import Config
from alexnet.kernels import pool, relu_lrn
from alexnet.kernels.conv1 import first_conv
from alexnet.kernels.forward import has_bias_before_pool, has_fusable_pool, has_lrn, has_pool_after_relu
from alexnet.runtime.distributed import DistEnv
from alexnet.runtime.precision import Precision


@dataclass(frozen=True)
class Choice:
    on: bool
    reason: str

    def describe(self, name: str) -> str:
        return f"{name} {'on' if self.on else 'off'} ({self.reason})"


class NotApplicable(AlexNetError):
    """`train.NAME: true` where the path cannot apply. It names the config key; `name` and `blocker` let an entry
    point whose user spelled the setting otherwise (`alexnet bench --fused-pool`) name what was typed instead."""

    def __init__(self, name: str, blocker: str):
        super().__init__(name, blocker)  # its args rebuild it (copy, pickle)
        self.name, self.blocker = name, blocker

    def __str__(self) -> str:
        return f"train.{self.name}: true does not apply: {self.blocker}"


def decide(setting: bool | str, name: str, blocker: str | None, auto_reason: str, auto_on: bool) -> Choice:
    """`setting` true | false | auto; `blocker` says why the path cannot apply (None: it can)."""
    if setting is False:
        return Choice(False, f"train.{name}: false")
    if blocker is not None:
        if setting is True:
            raise NotApplicable(name, blocker)
        return Choice(False, blocker)
    if setting is True:
        return Choice(True, f"train.{name}: true")
    return Choice(auto_on, auto_reason)


def cuda_graphs(cfg: Config, device: torch.device, env: DistEnv, precision: Precision) -> Choice:
    t = cfg.train
    blocker = ("not a CUDA device" if device.type != "cuda" else
               "torchrun: DDP's gradient all-reduce is not captured" if env.distributed else
               f"train.accum_steps {t.accum_steps}: one micro-batch per step only" if t.accum_steps > 1 else
               "fp16's loss scaling steps on the host" if precision.needs_scaler else None)
    return decide(t.cuda_graphs, "cuda_graphs", blocker, "auto: full batches replay one captured step", True)


def space_to_depth(cfg: Config, device: torch.device, model: torch.nn.Module) -> Choice:
    blocker = None if first_conv(model) is not None else \
        f"{cfg.model.name}'s conv1 is not a strided convolution: nothing to fold"
    on_cuda = device.type == "cuda"
    reason = ("auto: conv1 folded 4x4 into channels, a 3x3 convolution (tensor cores in bf16, fp16, tf32)"
              if on_cuda else
              "auto: off on a CPU (oneDNN runs the strided conv1 directly)")
    return decide(cfg.train.space_to_depth, "space_to_depth", blocker, reason, on_cuda)


def pool_first(cfg: Config, model: torch.nn.Module) -> Choice:
    blocker = None if has_pool_after_relu(model) else \
        f"{cfg.model.name} as configured has no ReLU followed by a max-pool"
    return decide(cfg.train.pool_first, "pool_first", blocker,
                  "auto: max-pool before ReLU, exact; the ReLU touches ~4x fewer elements", True)


def fused_pool(cfg: Config, device: torch.device, model: torch.nn.Module) -> Choice:
    blocker = ("not a CUDA device: the kernels are Triton's" if device.type != "cuda" else
               "Triton is not installed" if not pool.available() else
               "torch.compile generates its own pool" if cfg.train.compile else
               f"{cfg.model.name} has no square, unpadded, floor-mode max-pool" if not has_fusable_pool(model) else
               None)
    return decide(cfg.train.fused_pool, "fused_pool", blocker,
                  "auto: off until measured against the eager kernels on a GPU (train.fused_pool: true)", False)


def bias_after_pool(cfg: Config, device: torch.device, model: torch.nn.Module) -> Choice:
    blocker = None if has_bias_before_pool(model) else \
        f"{cfg.model.name} as configured has no biased convolution followed by ReLU and max-pool"
    reason = ("auto: off until measured against the plain order on a GPU (train.bias_after_pool: true)"
              if device.type == "cuda" else "auto: off on a CPU (oneDNN adds the bias inside the convolution)")
    return decide(cfg.train.bias_after_pool, "bias_after_pool", blocker, reason, False)


def fused_lrn(cfg: Config, device: torch.device, model: torch.nn.Module) -> Choice:
    blocker = None if has_lrn(model) else f"{cfg.model.name} as configured has no LRN"
    compiled = bool(cfg.train.compile)
    reason = ("auto: off under torch.compile (inductor fuses the plain LRN)" if compiled else
              "auto: one Function, analytic backward (11 kernels for ~33)")
    return decide(cfg.train.fused_lrn, "fused_lrn", blocker, reason, not compiled)


def triton_lrn(cfg: Config, device: torch.device, model: torch.nn.Module) -> Choice:
    blocker = ("not a CUDA device: the kernels are Triton's" if device.type != "cuda" else
               "Triton is not installed" if not relu_lrn.available() else
               "torch.compile fuses the plain LRN itself" if cfg.train.compile else
               f"{cfg.model.name} as configured has no LRN" if not has_lrn(model) else None)
    return decide(cfg.train.triton_lrn, "triton_lrn", blocker,
                  "auto: off until measured against fused_lrn on a GPU (train.triton_lrn: true)", False)


def choose(cfg: Config, device: torch.device, env: DistEnv, precision: Precision, model: torch.nn.Module) \
        -> dict[str, Choice]:
    """Every fast path's choice for this run, by name (the banner's and config.yaml's order)."""
    choices = {"space_to_depth": space_to_depth(cfg, device, model), "pool_first": pool_first(cfg, model),
               "fused_lrn": fused_lrn(cfg, device, model), "triton_lrn": triton_lrn(cfg, device, model),
               "fused_pool": fused_pool(cfg, device, model), "bias_after_pool": bias_after_pool(cfg, device, model),
               "cuda_graphs": cuda_graphs(cfg, device, env, precision)}
    if choices["triton_lrn"].on and choices["fused_lrn"].on:  # the Triton kernels run every LRN
        choices["fused_lrn"] = Choice(False, "triton_lrn runs the LRN")
    first = choices["pool_first"]
    if choices["bias_after_pool"].on and not first.on:  # its conv -> pool -> + bias -> ReLU pools first too
        choices["pool_first"] = Choice(False, f"{first.reason}, but bias_after_pool pools before the ReLUs of "
                                              "the convolutions whose bias it moves")
    return choices


def forms(choices: dict[str, Choice]) -> dict[str, bool]:
    """The execution forms among `choices`, as alexnet.kernels.forward.FastForward's arguments."""
    return {"fold_conv1": choices["space_to_depth"].on, "pool_first": choices["pool_first"].on,
            "fused_lrn": choices["fused_lrn"].on, "fused_pool": choices["fused_pool"].on,
            "bias_after_pool": choices["bias_after_pool"].on, "triton_lrn": choices["triton_lrn"].on}
