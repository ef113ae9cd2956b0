"""`alexnet bench --profile` on a CPU: the net cut into the units the table shows, every unit's forward FLOPs
adding up to the net's (counted independently by the layer formulas), and the CLI's table."""

import json

from alexnet.bench.profile import TENSOR_CORE, profile_step, units
from alexnet.bench.throughput import BenchSpec
from alexnet.models import create_model


def conv_flops(c_in, c_out, k, side_out):
    return 2 * c_in * k * k * c_out * side_out * side_out


def test_units_cut_at_each_weighted_or_pooling_layer():
    got = [(name, [type(m).__name__ for m in layers]) for name, layers in units(create_model("d2l"))]
    assert got == [("features.0", ["Conv2d", "ReLU"]), ("features.2", ["MaxPool2d"]),
                   ("features.3", ["Conv2d", "ReLU"]), ("features.5", ["MaxPool2d"]),
                   ("features.6", ["Conv2d", "ReLU"]), ("features.8", ["Conv2d", "ReLU"]),
                   ("features.10", ["Conv2d", "ReLU"]), ("features.12", ["MaxPool2d"]), ("flatten", ["Flatten"]),
                   ("classifier.0", ["Linear", "ReLU", "Dropout"]), ("classifier.3", ["Linear", "ReLU", "Dropout"]),
                   ("classifier.6", ["Linear"])]
    fast = [(name, len(layers)) for name, layers in units(create_model("d2l"), pool_first=True)][:5]
    assert fast == [("features.0", 3), ("features.3", 3), ("features.6", 2), ("features.8", 2), ("features.10", 3)]
    paper = [layers for _, layers in units(create_model("paper"))]
    assert [type(m).__name__ for m in paper[0]] == ["Conv2d", "ReLU", "LocalResponseNorm"]


def test_profile_of_the_small_net_on_a_cpu():
    spec = BenchSpec(model="small", batch_size=8, device="cpu", precision="fp32", steps=3, warmup=1,
                     synthetic=True, synthetic_images=1000)
    result = profile_step(spec)
    rows = result["layers"]
    # pool_first (on by default): each max-pool runs in its ReLU's unit
    assert [r["layer"] for r in rows][:2] == ["features.0", "features.3"] and len(rows) == 9
    assert rows[0]["types"] == "Conv2d+ReLU+MaxPool2d"
    assert result["fast_paths"]["pool_first"].startswith("pool_first on")
    # small, width 32 at 28x28: convs 1->32 @28, 32->64 @14, 64->128 @7, 128->128 @7, 128->64 @7 (3x3);
    # FC 1024->256->256->10
    forward = (conv_flops(1, 32, 3, 28) + conv_flops(32, 64, 3, 14) + conv_flops(64, 128, 3, 7)
               + conv_flops(128, 128, 3, 7) + conv_flops(128, 64, 3, 7) + 2 * (1024 * 256 + 256 * 256 + 256 * 10))
    assert sum(r["forward_flops"] for r in rows) == 8 * forward
    assert rows[0]["output"] == [32, 14, 14] and all(r["forward_ms"] > 0 for r in rows)
    assert result["step"]["wall_ms"] > 0 and "gpu_ms" not in result["step"]  # no CUDA: no kernels to count
    json.dumps(result)


def test_tensor_core_kernel_names():
    assert TENSOR_CORE.search("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc")
    assert TENSOR_CORE.search("cutlass3x_sm90_tensorop_gemm_bf16_bf16_f32_bf16")
    assert not TENSOR_CORE.search("cutlass_80_simt_sgemm_128x32_8x5_nn_align1")
    assert not TENSOR_CORE.search("void at::native::vectorized_elementwise_kernel<4, at::native::(anonymous)")
    assert not TENSOR_CORE.search("implicit_convolve_sgemm")
    assert not TENSOR_CORE.search("sm80_xmma_fprop_implicit_gemm_f32f32_f32f32_f32_nhwckrsc_nchw")  # IEEE fp32
    # cuBLAS's Hopper GEMMs (the Linear layers on an H100 / H200): half, bf16 and tf32 inputs; not all-single
    assert TENSOR_CORE.search("nvjet_hsh_192x192_64x3_2x1_v_bz_coopB_NTN")
    assert TENSOR_CORE.search("nvjet_sm90_hss_320x128_64x4_2x1_v_bz_coopA_NNN")
    assert TENSOR_CORE.search("nvjet_tst_128x256_64x4_1x2_h_bz_coopB_TNT")
    assert not TENSOR_CORE.search("nvjet_sss_128x64_64x6_2x1_v_bz_NNN")


def test_profile_from_the_command_line(cli):
    code, out, err = cli("bench", "--profile", "--model", "small", "--synthetic", "--device", "cpu",
                         "--batch-size", "4", "--steps", "3", "--warmup", "1", "--precision", "fp32")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("profile: small @28, batch 4, fp32") and "features.0" in out
    assert lines[-1].startswith("step (3 profiled): wall ")
    code, _, err = cli("bench", "--profile", "--baseline")
    assert code == 2 and "--baseline" in err
