"""The training step captured as one CUDA graph (issue #21): forward, backward and the SGD update replayed with
one launch instead of ~150, so that a step costs the GPU's time and not Python's.

What is captured is exactly the eager step's arithmetic (`Trainer.compute_step`), with static buffers for its
inputs (the augmented batch, labels) and for the learning rate (a 1-element fp32 tensor the fused SGD kernel reads,
set with `fill_` before each replay). The fused kernel takes a Python-float rate as a double and the tensor's as
fp32, so a replayed update and an eager one can differ in their last bit: deterministic either way (resume stays
exact), and the GPU test compares the two to fp32 rounding, not bit for bit.
Dropout's random numbers: the graph reads the default CUDA generator's seed and offset at every replay (torch's
graph-safe RNG), so the trainer's per-step `torch.manual_seed(derived_seed(...))` gives each replay the numbers
the eager step would draw; the augmentation runs before the graph, on its own generator, unchanged.

Capture needs warm-up steps (cuDNN's autotuning, cuBLAS's workspace, the optimizer's momentum buffers); they run
on the real batch and are then undone in place: parameters, the model's buffers (BatchNorm statistics, in a net
of the user's own) and momentum buffers copied back, and a momentum buffer that did not exist yet set to zero,
which the fused SGD kernel then treats exactly as a first step (m * 0 + g = g). The capture is thread-local: the
loaders' own threads (decoding the next batch on their CUDA stream) may go on while it runs.

Only full batches replay (their shapes are static); a last partial batch takes the eager step. The graph holds
pointers to the parameters and to the optimizer's state: anything that replaces those tensors (loading an
optimizer state_dict) must drop the graph (`Trainer` does), and it is captured again at the next step.
"""

from collections.abc import Callable

import torch

WARMUP_STEPS = 3  # eager steps on a side stream before capture (torch's whole-network capture example uses 3)

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CapturedStep:
    """`step(x, labels) -> (2,) float64 stats` (zero_grad, forward, backward, update) captured for inputs shaped
    as `x` and `labels`. `replay(x, labels, lr)` copies the inputs in and replays; returns the stats (a copy).
    `capture=False` keeps everything but the graph (the step then runs eagerly at each replay): the warm-up, its
    undoing and the tensor learning rate, testable on a CPU."""

    def __init__(self, step: StepFn, optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor, *,
                 buffers: list[torch.Tensor] | None = None, capture: bool = True):
        self.optimizer = optimizer
        self.x, self.labels = torch.empty_like(x), torch.empty_like(labels)  # empty_like keeps channels_last
        self.x.copy_(x)
        self.labels.copy_(labels)
        # the warm-up runs at the current rate (its updates are undone anyway); a replay sets its own
        self.lr = torch.full((), float(optimizer.param_groups[0]["lr"]), dtype=torch.float32, device=x.device)
        self.step: StepFn | None = step
        self.graph = torch.cuda.CUDAGraph() if capture else None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        kept = params + list(buffers or [])
        saved = [t.detach().clone() for t in kept]
        buffers = [optimizer.state.get(p, {}).get("momentum_buffer") for p in params]
        saved_buffers = [None if b is None else b.clone() for b in buffers]
        try:
            self._with_tensor_lr(self._warm_up_and_capture)
        finally:  # undo the warm-up, also after a failed capture: the run continues as if it had not happened
            with torch.no_grad():
                for t, value in zip(kept, saved, strict=True):
                    t.copy_(value)
                for p, value in zip(params, saved_buffers, strict=True):
                    buffer = optimizer.state.get(p, {}).get("momentum_buffer")
                    if buffer is not None:
                        buffer.zero_() if value is None else buffer.copy_(value)

    def _warm_up_and_capture(self) -> None:
        step = self.step
        assert step is not None
        if self.graph is None:
            for _ in range(WARMUP_STEPS):
                self.stats = step(self.x, self.labels)
            return
        caller = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(caller)
        try:
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    step(self.x, self.labels)
        finally:  # the undo in __init__ must come after the warm-up's work, also when it failed
            caller.wait_stream(side)
        try:
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.stats = step(self.x, self.labels)
        except BaseException:
            torch.cuda.set_stream(caller)  # a failed capture_end can leave the capture stream current
            raise
        self.step = None  # the graph holds what it needs; a bound method here would keep the Trainer alive

    def _with_tensor_lr(self, fn: Callable[[], None]) -> None:
        """Run `fn` with every param group's lr the static lr tensor (the captured kernel reads it from there),
        the Python floats put back after."""
        saved = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        try:
            fn()
        finally:
            for group, lr in zip(self.optimizer.param_groups, saved, strict=True):
                group["lr"] = lr

    def matches(self, x: torch.Tensor, labels: torch.Tensor) -> bool:
        return x.shape == self.x.shape and x.stride() == self.x.stride() and labels.shape == self.labels.shape

    def replay(self, x: torch.Tensor, labels: torch.Tensor, lr: float) -> torch.Tensor:
        self.x.copy_(x)
        self.labels.copy_(labels)
        self.lr.fill_(lr)
        if self.graph is not None:
            self.graph.replay()
        else:
            self._with_tensor_lr(self._eager)
        return self.stats.clone()

    def _eager(self) -> None:
        assert self.step is not None  # capture=False keeps it
        self.stats = self.step(self.x, self.labels)
