"""`alexnet bench`: end-to-end training / inference throughput and MFU against the d2l baseline, time to
accuracy, and the largest batch that fits. Speed goals live here and in `benchmarks/`, never in the tests.
Imports `training` (the trainer's own step is what is measured) and everything below it."""

from alexnet.bench.baseline import measure_baseline
from alexnet.bench.compare import format_bench, run_bench
from alexnet.bench.memory import largest_fitting, max_batch
from alexnet.bench.peak import datasheet_gpu, peak_flops
from alexnet.bench.throughput import BenchSpec, measure_ours
from alexnet.bench.tta import first_reaching, format_tta, time_to_accuracy

__all__ = ["BenchSpec", "datasheet_gpu", "first_reaching", "format_bench", "format_tta", "largest_fitting",
           "max_batch", "measure_baseline", "measure_ours", "peak_flops", "run_bench", "time_to_accuracy"]
