"""ConvTranspose on both targets: the sub-pixel conv it is described as, the emulator, a real export."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwopt.backends.scalesim import LayerSpec, ScaleSimBackend, layer_for, measure_model_npu32
from hwopt.backends.scalesim_env import is_ready
from hwopt.canonical.canonicalize import canonicalize, load_canonical
from hwopt.estimator import load_estimator
from hwopt.analysis.kernels import schedule
from hwopt.targets import load_target

EXPORT = Path(__file__).parent.parent / "data" / "torch_unet_db_head_convtranspose.onnx"


def conv_transpose_model(cin: int, cout: int, size: int, k: int, s: int, p: int, out_pad: int = 0, group: int = 1):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((cin, cout // group, k, k)).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[k, k], strides=[s, s],
                            pads=[p] * 4, output_padding=[out_pad] * 2, group=group)
    out = (size - 1) * s - 2 * p + k + out_pad
    graph = helper.make_graph([node], "ct", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, out, out])],
                              [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), weight


def phase_decomposition(x: np.ndarray, weight: np.ndarray, s: int, p: int, out: int, group: int) -> tuple:
    """The transposed conv as s x s stride-1 convs over the input, one per output phase (numpy).

    Output row o = m*s + phase reads input rows q - j with taps w[r + s*j], r = (phase + p) mod s,
    q = m + (phase + p) // s: a correlation of ceil((k - r) / s) taps. Returns (output, MACs, taps per dim).
    """
    cin, cout_g, k, _ = weight.shape
    cin_g = cin // group
    y = np.zeros((cout_g * group, out, out), np.float64)
    macs, taps = 0, []
    for py in range(s):
        ry, oy_q = (py + p) % s, (py + p) // s
        ty = [ry + s * j for j in range(math.ceil((k - ry) / s))]
        taps.append(len(ty))
        for px in range(s):
            rx, ox_q = (px + p) % s, (px + p) // s
            tx = [rx + s * j for j in range(math.ceil((k - rx) / s))]
            rows, cols = range(py, out, s), range(px, out, s)
            macs += len(rows) * len(cols) * len(ty) * len(tx) * cin_g * cout_g * group
            for g in range(group):
                xs = x[g * cin_g:(g + 1) * cin_g]
                w = weight[g * cin_g:(g + 1) * cin_g]
                for m, oy in enumerate(rows):
                    for n, ox in enumerate(cols):
                        acc = np.zeros(cout_g)
                        for j, wy in enumerate(ty):
                            iy = m + oy_q - j
                            for i, wx in enumerate(tx):
                                ix = n + ox_q - i
                                if 0 <= iy < x.shape[1] and 0 <= ix < x.shape[2]:
                                    acc += xs[:, iy, ix] @ w[:, :, wy, wx]
                        y[g * cout_g:(g + 1) * cout_g, oy, ox] = acc
    return y, macs, taps


@pytest.mark.parametrize("cin, cout, size, k, s, p, out_pad, group", [
    (8, 4, 5, 2, 2, 0, 0, 1),  # U-Net up-conv: kernel = stride
    (4, 6, 5, 4, 2, 1, 0, 1),  # DCGAN/FCN: kernel > stride
    (4, 4, 4, 3, 2, 1, 1, 1),  # odd kernel, output_padding (s does not divide k: zero taps)
    (6, 6, 4, 4, 2, 1, 0, 6),  # depthwise (FCN's bilinear upsampling)
    (6, 4, 4, 3, 1, 1, 0, 2),  # stride 1, grouped: a plain (flipped) conv
])
def test_described_as_the_sub_pixel_conv_it_computes(cin, cout, size, k, s, p, out_pad, group) -> None:
    model, weight = conv_transpose_model(cin, cout, size, k, s, p, out_pad, group)
    x = np.random.default_rng(1).standard_normal((1, cin, size, size)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    out = want.shape[2]
    got, macs, taps = phase_decomposition(x[0].astype(np.float64), weight.astype(np.float64), s, p, out, group)
    np.testing.assert_allclose(got, want[0], rtol=1e-4, atol=1e-4)

    (kernel,) = [sk.kernel for sk in schedule(canonicalize(model, verify=False)[0]).kernels]
    assert kernel.op == "ConvTranspose" and kernel.stride == 1 and kernel.groups == group
    assert kernel.kind == ("conv" if group == 1 else "dwconv" if group == cin else "gconv")
    assert (kernel.cin, kernel.cout) == (cin, cout * s * s)
    assert (kernel.kernel, kernel.kw) == (math.ceil(k / s),) * 2 == (max(taps),) * 2
    assert (kernel.out_h, kernel.out_w, kernel.h, kernel.w) == (math.ceil(out / s),) * 2 + (size, size)
    # The conv's MACs are the transposed conv's own (zero taps only where s does not divide k).
    exact = k % s == 0 and out % s == 0
    assert kernel.macs == macs if exact else kernel.macs >= macs
    assert kernel.macs == cin // group * cout * k * k * size * size if exact and p == 0 else True


@pytest.fixture(scope="module")
def npu32():
    if not is_ready():
        pytest.skip("SCALE-Sim's environment is not built (python -m hwopt.backends.scalesim_env)")
    return load_target("npu32")


def test_emulator_phases_vs_one_conv_vs_zero_insertion(npu32, tmp_path: Path) -> None:
    """A 4x4 stride-2 ConvTranspose, 16 -> 32 channels on 16x16: one conv of 4 x 32 filters costs what the
    four phase convs (32 filters each, their own input offsets) cost on the emulator (measured: 2799 and
    4 x 699 cycles), about a third of the conv over the zero-inserted 32x32 input (8943: 4x the MACs)."""
    model, _ = conv_transpose_model(16, 32, 16, 4, 2, 1)
    (kernel,) = [sk.kernel for sk in schedule(canonicalize(model, verify=False)[0]).kernels]
    combined, times = layer_for(kernel)
    phase = LayerSpec(combined.ifmap_h, combined.ifmap_w, 2, 2, 16, 32, 1)
    inflated = LayerSpec(32 - 1 + 4, 32 - 1 + 4, 4, 4, 16, 32, 1)
    sims = ScaleSimBackend(npu32, cache_dir=tmp_path).simulate([combined, phase, inflated])
    one, phases, zeros = (sims[spec]["compute_cycles"] for spec in (combined, phase, inflated))
    assert times == 1 and combined.num_filters == 128
    assert abs(one / (4 * phases) - 1) < 0.05, (one, phases)
    assert zeros > 2.5 * one, (zeros, one)


def test_real_export_estimated_on_both_targets_and_measured_on_npu32(npu32) -> None:
    _, canonical, _ = load_canonical(EXPORT)
    ops = [n.op_type for n in canonical.graph.node]
    assert ops.count("ConvTranspose") == 5
    estimates = {}
    for target in ("npu32", "cpu"):
        estimate = load_estimator(target).estimate(canonical)
        assert not estimate.fallbacks and estimate.latency_us > 0
        assert sum(k.description.startswith(("conv[ConvTranspose]", "dwconv[ConvTranspose]"))
                   for k in estimate.per_kernel) == 5
        estimates[target] = estimate.latency_us
    measured, _ = measure_model_npu32(canonical, npu32)
    # The npu32 card: held-out models within +-5% (97%) and +-10% (100%).
    assert abs(estimates["npu32"] / measured - 1) < 0.10, (estimates["npu32"], measured)
