"""Whole models for an in-context Ethos-U profile (``bench/vela_in_context.py``): more families and sizes.

Vela prices a kernel by where it sits (what is in SRAM, what cascades), so an in-context table needs
models of the shapes real exports have: small widths at 64-128 px, squeeze-excite everywhere, U-Net-like
decoders (Resize, ConvTranspose, Concat). The families here, all random weights built with the examples'
builder (``examples.builder``):

- ``mobilenetv2`` / ``mobilenetv3_small`` (``bench/small_models.py``) at more widths and sizes;
- ``se_mbconv``: an EfficientNet-like net of our own stage table (SiLU, squeeze-excite in every block,
  kernel 3 and 5), not torchvision's EfficientNet-B0 table;
- ``unet``: a 3-level encoder/decoder, upsampling by nearest Resize, bilinear Resize or a 2x2 stride-2
  ConvTranspose, skip connections by Concat, a 1x1 head with a sigmoid;
- ``decoder``: an FPN-like decoder upsampling by ConvTranspose (dense or depthwise, 2x2 or 4x4 pad 1),
  skips added, a ConvTranspose head;
- ``blaze``: BlazeFace-like blocks of our own widths (5x5 depthwise, max-pooled and channel-padded
  shortcuts);
- ``prelu``, ``affine``: plain PReLU nets, and residual nets with a BatchNormalization after each Add as a
  1x1 depthwise conv;
- ``keras``: plain Keras CNNs as tf2onnx writes them (NHWC input, unfolded BatchNormalizations, PReLU
  spelled as Max/Min/Mul/Add, 2x2 pools, Flatten into dense layers; some with the BatchNormalization op
  left standalone after the ReLU), and Keras ConvTranspose heatmap heads (a Slice cropping each
  upsampling, a Transpose of the full-size output);
- ``aspp``: atrous heads (dilations 2-24, dense or separable), ``dense``: ESRGAN's residual dense blocks
  (Concats of up to 640 channels at full resolution), ``spelled_leaky``: a tiny-face-detector-like net
  with its leaky ReLU spelled as Mul, Sub, ReLU and Add at 256-416 px; ``plain``: VGG-style backbones at
  256-640 px.

None is a real export of ``tests/data`` or PP-OCRv4 (the unseen set): the corpus' MobileNetV3-Small is
width 0.25 at 64x64, EfficientNet-B0 width 0.25 depth 0.5 at 64x64, LR-ASPP MobileNetV3-Large 0.25 at
64x64, the U-Net a DBNet head, MediaPipe's face detector BlazeFace at 128x128 with its own widths; no model
here has those widths, tables and sizes together.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from bench.small_models import BUILDERS as SMALL_BUILDERS
from examples.builder import GraphBuilder, Habits
from examples.zoo import _make_divisible

# Own stage table (kernel, expand, out channels, repeats, stride): SE and SiLU in every block.
SE_MBCONV_TABLE = ((3, 1, 16, 1, 1), (3, 4, 24, 2, 2), (5, 4, 40, 2, 2), (3, 4, 80, 2, 2), (5, 6, 112, 1, 1),
                   (5, 6, 160, 2, 2))


def se_mbconv(width: float, size: int, seed: int = 0) -> onnx.ModelProto:
    b = GraphBuilder(f"se_mbconv_w{width}_{size}", 17, seed, Habits())
    x = b.input("input", 3, size, size)
    with b.scope("features"):
        y = b.conv_bn_act(x, _make_divisible(32 * width), 3, 2, act="silu", module="0")
        index = 1
        for k, expand, c, repeats, stride in SE_MBCONV_TABLE:
            for i in range(repeats):
                cin = b.channels(y)
                hidden = _make_divisible(cin * expand)
                y = b.inverted_bottleneck(y, _make_divisible(c * width), k, stride if i == 0 else 1, hidden=hidden,
                                          act="silu", se_squeeze=max(4, cin // 4), layout="v3", module=str(index))
                index += 1
        y = b.conv_bn_act(y, _make_divisible(640 * width), 1, act="silu", module=str(index))
    y = b.flatten(b.global_avg_pool(y))
    b.output(b.linear(y, 10, module="classifier.1"), "output")
    return b.build(f"SE-MBConv x{width} at {size}x{size} (random weights)")


def _conv_transpose(b: GraphBuilder, x: str, cout: int, k: int = 2, pad: int = 0, groups: int = 1) -> str:
    """A stride-2 ConvTranspose (the builder has none): He-normal weights, with a bias; ``groups`` = channels
    makes it depthwise."""
    cin = b.channels(x)
    name = b._node_name("ConvTranspose", "conv2d_transpose")
    w = (b.rng.standard_normal((cin, cout // groups, k, k)) * np.sqrt(2.0 / (cin // groups * k * k))).astype(np.float32)
    bias = b.rng.uniform(-0.1, 0.1, cout).astype(np.float32)
    out = b._emit("ConvTranspose", [x, b._param(name, "weight", "w_0", w), b._param(name, "bias", "b_0", bias)],
                  name, kernel_shape=[k, k], strides=[2, 2], pads=[pad] * 4, group=groups)
    b._channels[out] = cout
    return out


# How a decoder upsamples: (kernel, pad, depthwise)
UPSAMPLERS = {"k2": (2, 0, False), "k4": (4, 1, False), "dw2": (2, 0, True), "dw4": (4, 1, True)}


def decoder(width: int, size: int, ups: tuple[str, ...], head: int = 0, seed: int = 0) -> onnx.ModelProto:
    """A conv encoder (three stride-2 stages) and an FPN-like decoder: each level upsampled by a
    ConvTranspose (dense or depthwise, 2x2 or 4x4 pad 1), added to the skip, then a 3x3 conv; a
    ConvTranspose head to the input size and a sigmoid. ``head``: instead, a segmentation head of that
    width: 3x3 conv + BN + ReLU, 2x2 ConvTranspose + BN + ReLU, 2x2 ConvTranspose, sigmoid."""
    b = GraphBuilder(f"decoder_{'-'.join(ups)}_c{width}_{size}_h{head}", 13, seed, Habits())
    x = b.input("input", 3, size, size)
    y = b.conv_bn_act(x, width, 3, 2, act="relu", module="stem")
    skips = []
    for level in range(3):
        skips.append(y)
        y = b.conv_bn_act(y, width * 2 ** (level + 1), 3, 2, act="relu", module=f"down{level}")
    for level, up in zip(reversed(range(3)), ups):
        k, pad, depthwise = UPSAMPLERS[up]
        channels = b.channels(skips[level])
        with b.scope(f"up{level}"):
            if depthwise:  # depthwise upsampling keeps the channels: reduce them first
                y = b.conv_bn_act(y, channels, 1, act="relu", module="reduce")
                y = _conv_transpose(b, y, channels, k, pad, groups=channels)
            else:
                y = _conv_transpose(b, y, channels, k, pad)
            y = b.add(y, skips[level])
            y = b.conv_bn_act(y, channels, 3, act="relu", module="fuse")
    if head:
        with b.scope("head"):
            y = b.conv_bn_act(y, head, 3, act="relu", module="0")
            y = b.relu(b.batchnorm(_conv_transpose(b, y, head, 2, 0), module="bn"))
            y = b.sigmoid(_conv_transpose(b, y, 1, 2, 0))
    else:
        y = b.sigmoid(_conv_transpose(b, y, 1, 2, 0))
    b.output(y, "output")
    return b.build(f"ConvTranspose decoder {ups} base width {width} at {size}x{size} (random weights)")


def _pad_channels(b: GraphBuilder, x: str, extra: int) -> str:
    """Zero channels appended (a Pad on the channel axis, as BlazeFace-style residuals widen the shortcut)."""
    pads = b.const([0, 0, 0, 0, 0, extra, 0, 0], np.int64)
    out = b._emit("Pad", [x, pads], mode="constant")
    b._channels[out] = b.channels(x) + extra
    return out


def blaze(channels: tuple[int, ...], size: int, strided: tuple[int, ...] = (3, 7), seed: int = 0,
          act: str = "relu") -> onnx.ModelProto:
    """BlazeFace-like blocks of our own widths: 5x5 depthwise + 1x1 conv, the shortcut max-pooled at
    stride 2 and channel-padded where the block widens, Add then the activation (ReLU; or PReLU with a
    slope per channel, as Keras-trained landmark and palm nets carry); two 1x1 heads."""
    b = GraphBuilder(f"blaze_{'-'.join(map(str, channels))}_{size}_s{'-'.join(map(str, strided))}_{act}", 13, seed,
                     Habits())
    x = b.input("input", 3, size, size)
    y = b.conv_bn_act(x, channels[0], 5, 2, act=act, module="stem")
    for i, cout in enumerate(channels[1:]):
        stride = 2 if i in strided else 1
        with b.scope(f"block{i}"):
            z = b.conv(y, b.channels(y), 5, stride, groups=b.channels(y), bias=True, module="dw")
            z = b.conv(z, cout, 1, bias=True, module="pw")
            shortcut = b.maxpool(y, 2, 2, 0) if stride == 2 else y
            if cout > b.channels(shortcut):
                shortcut = _pad_channels(b, shortcut, cout - b.channels(shortcut))
            y = b.act(b.add(z, shortcut), act)
    heads = [b.conv(y, n, 1, bias=True, module=f"head{n}") for n in (2, 32)]
    for i, head in enumerate(heads):
        b.output(head, f"output{i}")
    return b.build(f"BlazeFace-like net {channels} at {size}x{size} (random weights)")


def prelu_net(channels: tuple[int, ...], size: int, strided: tuple[int, ...] = (0, 2, 4), seed: int = 0) -> onnx.ModelProto:
    """A plain net with a PReLU after every conv (a 3x3 stem, then 3x3 depthwise + PReLU, 1x1 conv + PReLU
    per block, no shortcut), at channel counts off and on multiples of 16: Vela runs PReLU as passes of its
    own whose cost steps with the channel count and the map size, so the table needs them apart from any
    conv or Add (the Ethos-U targets schedule PReLU alone, ``[fusion] separate``)."""
    b = GraphBuilder(f"prelu_{'-'.join(map(str, channels))}_{size}", 13, seed, Habits())
    x = b.input("input", 3, size, size)
    y = b.conv_bn_act(x, channels[0], 3, 2, act="prelu", module="stem")
    for i, cout in enumerate(channels[1:]):
        with b.scope(f"block{i}"):
            y = b.prelu(b.conv(y, b.channels(y), 3, 2 if i in strided else 1, groups=b.channels(y), bias=True,
                               module="dw"), module="dw_act")
            y = b.prelu(b.conv(y, cout, 1, bias=True, module="pw"), module="pw_act")
    b.output(b.conv(y, 8, 1, bias=True, module="head"), "output")
    return b.build(f"PReLU net {channels} at {size}x{size} (random weights)")


def affine_net(channels: tuple[int, ...], size: int, act: str = "prelu", seed: int = 0) -> onnx.ModelProto:
    """Residual blocks whose BatchNormalization after the Add cannot fold into a conv, exported as a 1x1
    depthwise conv (a per-channel affine: tflite2onnx writes MediaPipe's so), then an activation; the
    channel count grows by 2x2 stride-2 convs. Vela runs a 1x1 depthwise conv as a cheap pass over the
    map, nothing like a 3x3 one; without these the trees price it from 3x3 depthwise convs."""
    b = GraphBuilder(f"affine_{'-'.join(map(str, channels))}_{size}_{act}", 13, seed, Habits())
    x = b.input("input", 3, size, size)

    def affine_act(y: str, module: str) -> str:
        c = b.channels(y)
        y = b.conv(y, c, 1, groups=c, bias=True, module=f"{module}_bn")
        return b.prelu(y, module=f"{module}_act") if act == "prelu" else b.relu(y)

    y = affine_act(b.conv(x, channels[0], 3, 2, bias=True, module="stem"), "stem")
    for i, cout in enumerate(channels):
        with b.scope(f"block{i}"):
            c = b.channels(y)
            z = b.conv(b.conv(y, c, 3, 1, groups=c, bias=True, module="dw"), c, 1, bias=True, module="pw")
            y = affine_act(b.add(z, y), "out")
            if i + 1 < len(channels):
                y = b.conv(y, channels[i + 1], 2, 2, pad=0, bias=True, module="down")
    b.output(b.conv(y, 8, 1, bias=True, module="head"), "output")
    return b.build(f"affine net {channels} at {size}x{size} with {act} (random weights)")


def keras_net(channels: tuple[int, ...], size: int, block: str = "relu-bn-pool", head: str = "flatten",
              seed: int = 0) -> onnx.ModelProto:
    """A plain Keras CNN as tf2onnx writes one (TensorFlow.js' small classifiers and face nets): the NHWC input
    and its Transpose, 3x3 'valid' convs at stride 1, 2x2 max pools, BatchNormalizations left as a Mul and an
    Add by [1, C, 1, 1] constants (after a ReLU they cannot fold into the conv), a Flatten of the NHWC map
    (Transpose, Reshape) into dense layers. ``block``: ``relu-bn-pool`` (conv, ReLU, Mul, Add, pool),
    ``pool-relu`` (conv, pool, ReLU), ``bn-prelu`` (conv, Mul, Add, then a PReLU spelled Max(x, 0) +
    Min(x, 0) * slopes, as tf2onnx writes TF.js' PReLU). Vela reads a per-channel constant per element from
    flash on U55 (16x a scalar's cycles) and chains it on U85; no other family has these."""
    b = GraphBuilder(f"keras_{block}_{'-'.join(map(str, channels))}_{size}_{head}", 13, seed, Habits())
    y = b.input_nhwc("input", 3, size, size)

    def per_channel(low: float, high: float, c: int) -> str:
        return b.const(b.rng.uniform(low, high, (1, c, 1, 1)))

    def bn(y: str) -> str:
        if block == "relu-bnop-pool":  # a BatchNormalization op left standalone (the captcha CNN of set F)
            return b.batchnorm(y)
        c = b.channels(y)
        return b.add(b.mul(y, per_channel(0.5, 1.5, c)), per_channel(-0.2, 0.2, c))

    for i, c in enumerate(channels):
        with b.scope(f"block{i}"):
            y = b.conv(y, c, 3, 1, pad=0, bias=True, module="conv")
            if block in ("relu-bn-pool", "relu-bnop-pool"):
                y = b.maxpool(bn(b.relu(y)), 2, 2, 0)
            elif block == "pool-relu":
                y = b.relu(b.maxpool(y, 2, 2, 0))
            else:
                y = bn(y)
                negative = b.mul(b._keep_channels(b._emit("Min", [y, b.const(0.0)]), y), per_channel(0.05, 0.5, c))
                y = b.maxpool(b.add(b._keep_channels(b._emit("Max", [y, b.const(0.0)]), y), negative), 2, 2, 0)
    c, h, w = b.value(y).shape[1:]
    if head == "flatten":
        y = b.reshape(b.transpose(y, (0, 2, 3, 1)), (0, -1))
        b._channels[y] = c * h * w
        y = b.relu(b.linear(y, 128, module="dense"))
    else:
        y = b.flatten(b.global_avg_pool(y))
    b.output(b.softmax(b.linear(y, 5, module="logits")), "output")
    return b.build(f"Keras-style CNN {channels} ({block}, {head} head) at {size}x{size} (random weights)")


def keras_upsampler(width: int, size: int, stages: int = 3, seed: int = 0) -> onnx.ModelProto:
    """A Keras heatmap head as tf2onnx writes one (TF.js' EfficientPose): NHWC input, a stride-2 ReLU6 encoder
    to 1/2**stages, then per stage a 4x4 stride-2 ConvTranspose without padding and the Slice that crops its
    'same' output back (Vela merges such a Slice into the op before it), and the NCHW -> NHWC Transpose of the
    full-size heatmap at the end: layout kernels at up to the input's size, which no other family has."""
    b = GraphBuilder(f"keras_upsampler_c{width}_{size}_x{stages}", 13, seed, Habits())
    y = b.input_nhwc("input", 3, size, size)
    for level in range(stages):
        y = b.conv_bn_act(y, width * (2 if level else 1), 3, 2, act="relu6", module=f"down{level}")
    y = b.conv(y, width, 1, bias=True, module="reduce")
    for level in range(stages):
        with b.scope(f"up{level}"):
            y = _conv_transpose(b, y, width, 4, 0)
            full = b.value(y).shape[2]
            cropped = b._emit("Slice", [y, b.const([1, 1], np.int64), b.const([full - 1, full - 1], np.int64),
                                        b.const([2, 3], np.int64)])
            y = b._keep_channels(cropped, y)
    b.output(b.transpose(y, (0, 2, 3, 1)), "output")
    return b.build(f"Keras ConvTranspose heatmap head, width {width}, at {size}x{size} (random weights)")


def unet(width: int, size: int, up: str = "nearest", seed: int = 0) -> onnx.ModelProto:
    b = GraphBuilder(f"unet_{up}_c{width}_{size}", 13, seed, Habits())
    x = b.input("input", 3, size, size)
    skips = []
    y = b.conv_bn_act(x, width, 3, act="relu", module="stem")
    for level in range(3):
        skips.append(y)
        with b.scope(f"down{level}"):
            y = b.conv_bn_act(y, width * 2 ** (level + 1), 3, 2, act="relu", module="0")
            y = b.conv_bn_act(y, width * 2 ** (level + 1), 3, act="relu", module="1")
    for level in reversed(range(3)):
        with b.scope(f"up{level}"):
            channels = b.channels(skips[level])
            if up == "convtranspose":
                y = b.relu(b.batchnorm(_conv_transpose(b, y, channels), module="bn"))
            else:
                y = b.conv_bn_act(b.resize(y, 2.0, "nearest" if up == "nearest" else "linear"), channels, 1,
                                  act="relu", module="reduce")
            y = b.concat([y, skips[level]])
            y = b.conv_bn_act(y, channels, 3, act="relu", module="fuse")
    y = b.sigmoid(b.conv(y, 2, 1, bias=True, module="head"))
    b.output(y, "output")
    return b.build(f"U-Net ({up} upsampling) base width {width} at {size}x{size} (random weights)")


def aspp_net(width: int, size: int, dilations: tuple[int, ...], separable: bool = False, down: int = 2,
             seed: int = 0) -> onnx.ModelProto:
    """A DeepLab/CRAFT-style atrous head: a stride-2 encoder to 1/2**down of the input, then parallel 3x3
    convs of the given dilations (dense, or ``separable``: a dilated depthwise conv and a pointwise one, as
    DeepLabV3+ writes them), a 1x1 branch, their Concat and a 1x1 projection. Vela runs dilation 2 natively
    and splits a larger one into (dilation / gcd(dilation, stride))^2 sub-grid convs, each with the weights
    (``Kernel.dilation``): CRAFT's link refiner (dilations 6-24 at 480x640) is 14-100x its undilated cost,
    which no other family shows."""
    b = GraphBuilder(f"aspp_c{width}_{size}_d{'-'.join(map(str, dilations))}{'_sep' if separable else ''}", 13,
                     seed, Habits())
    y = b.input("input", 3, size, size)
    for level in range(down):
        y = b.conv_bn_act(y, width if level == down - 1 else max(width // 2, 8), 3, 2, act="relu", module=f"down{level}")
    branches = [b.conv_bn_act(y, width, 1, act="relu", module="aspp_1x1")]
    for d in dilations:
        with b.scope(f"aspp_d{d}"):
            if separable:
                z = b.relu(b.conv(y, width, 3, groups=width, dilation=d, bias=True, module="dw"))
                branches.append(b.conv_bn_act(z, width, 1, act="relu", module="pw"))
            else:
                branches.append(b.relu(b.conv(y, width, 3, dilation=d, bias=True, module="conv")))
    y = b.conv_bn_act(b.concat(branches), width, 1, act="relu", module="project")
    b.output(b.conv(y, 2, 1, bias=True, module="head"), "output")
    return b.build(f"atrous head, width {width}, dilations {dilations}{' separable' if separable else ''}, "
                   f"at {size}x{size} (random weights)")


def dense_net(width: int, growth: int, size: int, blocks: int = 1, seed: int = 0) -> onnx.ModelProto:
    """ESRGAN's residual dense blocks at the input's size: five 3x3 convs, each reading the Concat of the block's
    input and every conv before it (up to width + 4 x growth channels: 640 in UpscalerJS' ESRGAN-medium at
    64x64), LeakyReLU after the first four, the fifth scaled by 0.2 and added back; a pixel-shuffle-free head.
    Wide Concats at full resolution, which no other family has."""
    b = GraphBuilder(f"dense_c{width}_g{growth}_{size}_b{blocks}", 13, seed, Habits())
    x = b.input("input", 3, size, size)
    y = b.conv(x, width, 3, bias=True, module="stem")
    for block in range(blocks):
        with b.scope(f"rdb{block}"):
            feats = [y]
            for i in range(5):
                z = b.conv(b.concat(feats) if len(feats) > 1 else y, growth if i < 4 else width, 3, bias=True,
                           module=f"conv{i}")
                if i < 4:
                    z = b._keep_channels(b._emit("LeakyRelu", [z], alpha=0.2), z)
                    feats.append(z)
            y = b.add(b.mul(z, b.const(0.2)), y)
    b.output(b.conv(y, 3, 3, bias=True, module="head"), "output")
    return b.build(f"residual dense blocks, width {width}, growth {growth}, at {size}x{size} (random weights)")


def spelled_leaky_net(channels: tuple[int, ...], size: int, seed: int = 0) -> onnx.ModelProto:
    """face-api's tiny face detector as tf2onnx / tflite2onnx write it: separable convs, each followed by its
    leaky ReLU spelled out (``m = x * 0.1; relu(x - m) + m``: a Mul by a scalar, a Sub, a ReLU, an Add) and a
    2x2 max pool, from a 320-416 px input: scalar elementwise ops at full maps, beyond the other families'
    sizes."""
    b = GraphBuilder(f"spelled_leaky_{'-'.join(map(str, channels))}_{size}", 13, seed, Habits())
    y = b.input("input", 3, size, size)

    def leaky(z: str) -> str:
        m = b.mul(z, b.const(0.1))
        return b.add(b.relu(b._keep_channels(b._emit("Sub", [z, m]), z)), m)

    y = leaky(b.conv(y, channels[0], 3, bias=True, module="stem"))
    for i, c in enumerate(channels[1:]):
        with b.scope(f"block{i}"):
            y = b.maxpool(y, 2, 2, 0)
            cin = b.channels(y)
            y = b.conv(b.conv(y, cin, 3, groups=cin, bias=False, module="dw"), c, 1, bias=True, module="pw")
            y = leaky(y)
    b.output(b.conv(y, 25, 1, bias=True, module="head"), "output")
    return b.build(f"tiny-face-detector-like net {channels} at {size}x{size}, leaky ReLU spelled out (random weights)")


def plain_net(channels: tuple[int, ...], size: int, convs: int = 2, seed: int = 0) -> onnx.ModelProto:
    """A VGG-style backbone (CRAFT's, OpenNSFW's early stages): per stage ``convs`` 3x3 convs with ReLU at full
    width, then a 2x2 max pool; large inputs (256-640 px), so dense 3x3 convs run at maps of 100-600 px,
    beyond the other families' sizes."""
    b = GraphBuilder(f"plain_{'-'.join(map(str, channels))}_{size}_x{convs}", 13, seed, Habits())
    y = b.input("input", 3, size, size)
    for i, c in enumerate(channels):
        with b.scope(f"stage{i}"):
            for j in range(convs):
                y = b.conv_bn_act(y, c, 3, act="relu", module=f"conv{j}")
            if i + 1 < len(channels):
                y = b.maxpool(y, 2, 2, 0)
    b.output(b.conv(y, 2, 1, bias=True, module="head"), "output")
    return b.build(f"VGG-style backbone {channels} x{convs} at {size}x{size} (random weights)")


BLAZE_WIDTHS = {"a": (16, 16, 20, 24, 28, 32, 40, 48, 56, 64, 72, 80),
                "b": (24, 24, 32, 40, 48, 56, 64, 80, 96, 96, 112, 128),
                "c": (8, 12, 16, 16, 20, 24, 32, 40, 48, 48, 56, 64),
                "d": (16, 20, 24, 32, 40, 44, 48, 64, 72, 80, 96, 104),
                "e": (32, 32, 36, 40, 48, 52, 64, 72, 88, 96, 120, 128)}

PRELU_WIDTHS = {"f": (12, 20, 28, 36, 44, 52, 60, 76),
                "g": (16, 24, 40, 48, 64, 80, 96, 128),
                "h": (8, 18, 32, 42, 56, 100, 120, 160)}

# label -> builder call
FAMILIES = {
    **{f"mobilenetv3_small~w{w}_{s}": (SMALL_BUILDERS["mobilenetv3_small"], (w, s))
       for w, s in ((0.25, 96), (0.25, 128), (0.35, 64), (0.5, 64), (0.75, 64), (0.35, 112))},
    # text-line shapes (2-6 rows deep in the net): wide, low maps Vela handles in few, long stripes
    **{f"{f}~w{w}_{s[0]}x{s[1]}": (SMALL_BUILDERS[f], (w, s))
       for f, w, s in (("mobilenetv3_small", 0.5, (32, 320)), ("mobilenetv3_small", 0.25, (48, 160)),
                       ("mobilenetv3_small", 0.75, (24, 256)), ("mobilenetv2", 0.25, (32, 256)))},
    **{f"mobilenetv2~w{w}_{s}": (SMALL_BUILDERS["mobilenetv2"], (w, s))
       for w, s in ((0.25, 96), (0.5, 64), (1.0, 96), (0.35, 128), (0.75, 64))},
    **{f"se_mbconv~w{w}_{s}": (se_mbconv, (w, s)) for w, s in ((0.35, 64), (0.5, 96), (1.0, 64), (0.5, 128))},
    **{f"unet~{up}_c{c}_{s}": (unet, (c, s, up))
       for up, c, s in (("nearest", 8, 64), ("bilinear", 16, 96), ("convtranspose", 8, 128),
                        ("convtranspose", 16, 64), ("nearest", 24, 96), ("bilinear", 8, 160))},
    **{f"decoder~{'-'.join(u)}_c{c}_{s}": (decoder, (c, s, u))
       for u, c, s in ((("k2", "k4", "dw2"), 8, 96), (("dw4", "k2", "k4"), 16, 64), (("dw2", "dw4", "k2"), 12, 128),
                       (("k4", "dw2", "dw4"), 24, 48), (("k2", "k2", "dw2"), 32, 64))},
    **{f"blaze~{w}_{s}": (blaze, (BLAZE_WIDTHS[w], s)) for w, s in (("a", 96), ("b", 128), ("c", 160), ("a", 64),
                                                                   ("b", 96))},
    **{f"blaze~{w}_{s}_s{'-'.join(map(str, st))}": (blaze, (BLAZE_WIDTHS[w], s, st))
       for w, s, st in (("d", 96, (1, 5)), ("e", 64, (0, 4, 8)), ("d", 160, (2, 6)), ("c", 112, (1, 4, 7)),
                        ("e", 96, (2, 5)))},
    # added 2026-12-07 after MediaPipe's landmark and palm nets (PReLU everywhere) and hand landmark
    # (MobileNetV2-like at 224) were first estimated: PReLU BlazeFace-like nets, and MobileNetV2 at the
    # standard Keras width/resolution pairs the corpus lacked (>= 160 px at widths < 1)
    **{f"blaze~{w}_{s}_prelu": (blaze, (BLAZE_WIDTHS[w], s, (3, 7), 0, "prelu"))
       for w, s in (("a", 128), ("b", 64), ("c", 192), ("d", 96), ("e", 160))},
    **{f"mobilenetv2~w{w}_{s}": (SMALL_BUILDERS["mobilenetv2"], (w, s))
       for w, s in ((0.35, 224), (0.5, 192), (0.75, 160))},
    **{f"decoder~{'-'.join(u)}_c{c}_{s}_h{h}": (decoder, (c, s, u, h))
       for u, c, s, h in ((("k2", "k2", "k2"), 8, 96, 8), (("dw2", "k2", "k4"), 16, 64, 4), (("k4", "k2", "dw2"), 12, 48, 16),
                          (("k2", "dw4", "k2"), 24, 128, 6))},
    # added 2026-12-07 (session 11) with the Ethos-U targets' unfused PReLU: plain PReLU nets whose
    # standalone PReLUs span channel counts off and on multiples of 16 at 4x4 to 96x96
    **{f"prelu~{w}_{s}": (prelu_net, (PRELU_WIDTHS[w], s))
       for w, s in (("f", 64), ("g", 96), ("h", 128), ("f", 192), ("g", 48), ("h", 160))},
    **{f"affine~{'-'.join(map(str, c))}_{s}_{a}": (affine_net, (c, s, a))
       for c, s, a in (((8, 16, 32, 64), 256, "prelu"), ((16, 32, 64), 128, "prelu"), ((8, 8, 16, 32), 192, "relu"),
                       ((24, 48, 96), 96, "prelu"))},
    # added 2026-12-07 (session 13) after set E's TensorFlow.js nets: Keras CNNs as tf2onnx writes them
    **{f"keras~{blk}_{'-'.join(map(str, c))}_{s}_{h}": (keras_net, (c, s, blk, h))
       for blk, c, s, h in (("relu-bn-pool", (32, 64, 96, 128), 160, "flatten"), ("relu-bn-pool", (16, 32, 48), 64, "gap"),
                            ("relu-bn-pool", (24, 48, 80, 160), 200, "gap"), ("pool-relu", (64, 32, 16), 128, "flatten"),
                            ("pool-relu", (32, 48, 64, 96), 96, "gap"), ("pool-relu", (16, 24), 48, "flatten"),
                            ("bn-prelu", (32, 48, 64, 96), 112, "gap"), ("bn-prelu", (16, 32, 64), 40, "flatten"),
                            ("relu-bn-pool", (8, 16, 32), 32, "flatten"), ("bn-prelu", (24, 40, 56, 80), 176, "gap"))},
    **{f"keras_upsampler~c{c}_{s}_x{n}": (keras_upsampler, (c, s, n))
       for c, s, n in ((16, 368, 3), (8, 256, 3), (24, 192, 2), (12, 320, 3), (32, 128, 3))},
    # the first block at the stem's full map (MTCNN's P-Net runs PReLUs at 144x192): maps up to 160x160
    **{f"prelu~{w}_{s}_late": (prelu_net, (PRELU_WIDTHS[w], s, (1, 3, 5))) for w, s in (("f", 320), ("h", 256))},
    # added 2026-12-08 (session 14) after set F's misses: dilated convs (CRAFT's refiner), standalone
    # BatchNormalization ops (a captcha CNN), ESRGAN's dense Concats, a spelled-out leaky ReLU at 416 px
    **{f"aspp~c{c}_{s}_d{'-'.join(map(str, d))}{'_sep' if sep else ''}": (aspp_net, (c, s, d, sep, down))
       for c, s, d, sep, down in ((32, 128, (3, 6, 9), False, 2), (64, 256, (6, 12, 18), False, 2),
                                  (16, 192, (4, 8, 12, 16), False, 2), (48, 320, (12, 24), False, 3),
                                  (24, 96, (2, 3, 5), False, 2), (32, 384, (6, 12, 18, 24), False, 2),
                                  (64, 256, (6, 12, 18), True, 3), (32, 128, (3, 5, 7), True, 2),
                                  (96, 128, (4, 8), False, 2), (40, 224, (9, 10), True, 2))},
    **{f"keras~relu-bnop-pool_{'-'.join(map(str, c))}_{s}_{h}": (keras_net, (c, s, "relu-bnop-pool", h))
       for c, s, h in (((32, 48, 64), 64, "flatten"), ((16, 32, 64, 128), 128, "gap"), ((24, 40), 48, "flatten"),
                       ((8, 16, 32, 64), 200, "gap"))},
    **{f"dense~c{c}_g{g}_{s}_b{n}": (dense_net, (c, g, s, n))
       for c, g, s, n in ((64, 32, 64, 1), (128, 128, 64, 1), (32, 16, 128, 2), (48, 48, 96, 1), (64, 64, 48, 2))},
    **{f"spelled_leaky~{'-'.join(map(str, c))}_{s}": (spelled_leaky_net, (c, s))
       for c, s in (((16, 32, 64, 128), 416), ((8, 16, 32, 64, 128), 320), ((16, 32, 64), 256))},
    # large inputs (set F, after the fact: trueocr's MobileNetV3 at 768 px, CRAFT's VGG at 960x1280 were
    # priced 15-40% low, kernel by kernel, beyond the corpus' maps)
    **{f"mobilenetv3_small~w{w}_{s}": (SMALL_BUILDERS["mobilenetv3_small"], (w, s))
       for w, s in ((0.5, 384), (0.25, 512), (0.75, 320))},
    **{f"mobilenetv2~w{w}_{s}": (SMALL_BUILDERS["mobilenetv2"], (w, s)) for w, s in ((0.35, 448), (0.5, 384))},
    **{f"plain~{'-'.join(map(str, c))}_{s}_x{n}": (plain_net, (c, s, n))
       for c, s, n in (((32, 64, 128, 256), 384, 2), ((16, 32, 64, 128, 256), 640, 1), ((64, 128, 256, 512), 256, 2),
                       ((24, 48, 96), 480, 1))},
}


def context_models(folder: Path) -> dict[str, Path]:
    """Every family model, built into ``folder`` (rewritten only when missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for label, (build, args) in FAMILIES.items():
        path = folder / f"{label}.onnx"
        if not path.exists():
            onnx.save(build(*args), str(path))
        out[label] = path
    return out
