"""Example vision models with random weights, built like real exports.

Every model is a function ``seed -> onnx.ModelProto`` in `MODELS`. Structure,
channel tables and node names follow the well-known originals (mostly
torchvision); weights are random but every BatchNorm is calibrated (see
`examples.builder`). Each model exercises different exporter habits:

========================  =====  ===========================================
model                     opset  habits exercised
========================  =====  ===========================================
mobilenetv2               13     torch names, unfused BN, ReLU6 as Clip with
                                 constant min/max inputs, static batch 1,
                                 GAP + Flatten + Gemm classifier
efficientnet_lite0        17     paddle names (``conv2d_12``), weights as
                                 Constant nodes, ReLU6 as Max(Min(x, 6), 0),
                                 5x5 depthwise kernels, MatMul + Add classifier
mobilenetv3_small         17     dynamic batch ``N``, SE blocks, odd channel
                                 counts, hard-swish as HardSwish op (early
                                 blocks), as x*HardSigmoid(x) (late blocks) and
                                 as the old torch Add/Clip/Div/Mul (last conv)
resnet18                  11     lowest supported opset, dynamic batch, no
                                 depthwise convs, MaxPool stem, 1x1 strided
                                 downsample convs, stray Identity nodes
ssdlite_mobilenetv2       13     detector, 320x320, SiLU as x*Sigmoid(x),
                                 six feature maps, Transpose/Reshape/Concat
                                 heads, two outputs (boxes, softmax scores)
segmentation              17     unnamed nodes with numeric tensor names,
                                 Resize (linear and nearest), Concat skips,
                                 output at input resolution
========================  =====  ===========================================
"""

from __future__ import annotations

from typing import Callable

import onnx

from examples.builder import GraphBuilder, Habits

# MobileNetV2 (t, c, n, s): expand ratio, out channels, repeats, first stride.
MOBILENETV2_TABLE = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]

# EfficientNet-Lite0 (k, s, e, c, n).
EFFICIENTNET_LITE0_TABLE = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
]

# MobileNetV3-Small (k, hidden, out, se, act, stride), torchvision's table.
MOBILENETV3_SMALL_TABLE = [
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2),
    (5, 240, 40, True, "hardswish", 1),
    (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1),
    (5, 144, 48, True, "hardswish", 1),
    (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1),
    (5, 576, 96, True, "hardswish", 1),
]


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's channel rounding (used for SE squeeze widths)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _mobilenetv2_features(
    b: GraphBuilder, x: str, act: str, stages: int = 7
) -> tuple[str, dict[str, str]]:
    """MobileNetV2 ``features.0`` .. ``features.17`` (no last 1x1 conv).

    Returns the output and the feature taps: ``"s4"``/``"s8"``/``"s16"`` are
    the last block outputs at those strides; ``"expand13"`` is block 13's
    expanded activation (where SSDLite attaches its first head).
    """
    with b.scope("features"):
        y = b.conv_bn_act(x, 32, 3, 2, act=act, module="0")
        found: dict[str, str] = {}
        idx, stride = 1, 2
        for t, c, n, s in MOBILENETV2_TABLE[:stages]:
            for i in range(n):
                st = s if i == 0 else 1
                y, expanded = b.inverted_bottleneck(
                    y, c, 3, st, expand=t, act=act, module=str(idx), return_expanded=True
                )
                if idx == 13:
                    found["expand13"] = expanded
                stride *= st
                found[f"s{stride}"] = y
                idx += 1
    return y, found


def mobilenetv2(seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2-1.0, 224x224, torchvision structure and names."""
    b = GraphBuilder("mobilenetv2", 13, seed, Habits(relu6_style="clip_inputs"))
    x = b.input("input", 3, 224, 224)
    y, _ = _mobilenetv2_features(b, x, "relu6")
    y = b.conv_bn_act(y, 1280, 1, act="relu6", module="features.18")
    y = b.global_avg_pool(y)
    y = b.flatten(y)
    y = b.linear(y, 1000, module="classifier.1")
    b.output(y, "output")
    return b.build("MobileNetV2-1.0 (random weights)")


def efficientnet_lite0(seed: int = 0) -> onnx.ModelProto:
    """EfficientNet-Lite0: no SE, ReLU6, 5x5 stages; exported paddle-style."""
    habits = Habits(weights_as_constant_nodes=True, relu6_style="minmax", naming="paddle")
    b = GraphBuilder("efficientnet_lite0", 17, seed, habits)
    x = b.input("image", 3, 224, 224)
    y = b.conv_bn_act(x, 32, 3, 2, act="relu6")
    for k, s, e, c, n in EFFICIENTNET_LITE0_TABLE:
        for i in range(n):
            y = b.inverted_bottleneck(y, c, k, s if i == 0 else 1, expand=e, act="relu6")
    y = b.conv_bn_act(y, 1280, 1, act="relu6")
    y = b.global_avg_pool(y)
    y = b.flatten(y)
    y = b.linear(y, 1000, style="matmul_add")
    b.output(y, "logits")
    return b.build("EfficientNet-Lite0 (random weights)")


def mobilenetv3_small(seed: int = 0) -> onnx.ModelProto:
    """MobileNetV3-Small, torchvision table and names, dynamic batch."""
    b = GraphBuilder("mobilenetv3_small", 17, seed, Habits(dynamic_batch=True))
    x = b.input("input", 3, 224, 224)
    with b.scope("features"):
        y = b.conv_bn_act(x, 16, 3, 2, act="hardswish", module="0")
        for i, (k, hidden, c, se, act, s) in enumerate(MOBILENETV3_SMALL_TABLE):
            # Later blocks spell hard-swish as x * HardSigmoid(x).
            style = "op" if i < 6 else "hardsigmoid_mul"
            squeeze = _make_divisible(hidden // 4) if se else None
            y = b.inverted_bottleneck(
                y, c, k, s, hidden=hidden, act=act, se_squeeze=squeeze, layout="v3",
                module=f"{i + 1}", hardswish_style=style,
            )
        y = b.conv_bn_act(y, 576, 1, act="hardswish", module="12", hardswish_style="torch_legacy")
    y = b.global_avg_pool(y, module="avgpool")
    y = b.flatten(y)
    y = b.linear(y, 1024, module="classifier.0")
    y = b.hardswish(y, module="classifier.1")
    y = b.linear(y, 1000, module="classifier.3")
    b.output(y, "output")
    return b.build("MobileNetV3-Small (random weights)")


def _basic_block(b: GraphBuilder, x: str, cout: int, stride: int, module: str) -> str:
    """ResNet BasicBlock: 3x3 conv-BN-ReLU, 3x3 conv-BN, (downsample), add, ReLU."""
    with b.scope(module):
        y = b.relu(b.batchnorm(b.conv(x, cout, 3, stride, module="conv1"), module="bn1"), module="relu")
        y = b.batchnorm(b.conv(y, cout, 3, module="conv2"), module="bn2")
        short = x
        if stride != 1 or b.channels(x) != cout:
            short = b.conv(x, cout, 1, stride, pad=0, module="downsample.0")
            short = b.batchnorm(short, module="downsample.1")
        return b.relu(b.add(y, short), module="relu")


def resnet18(seed: int = 0) -> onnx.ModelProto:
    """ResNet-18, torchvision names, opset 11, dynamic batch, Identity nodes."""
    habits = Habits(dynamic_batch=True, identity_nodes=True)
    b = GraphBuilder("resnet18", 11, seed, habits)
    x = b.input("input", 3, 224, 224)
    y = b.relu(b.batchnorm(b.conv(x, 64, 7, 2, pad=3, module="conv1"), module="bn1"), module="relu")
    y = b.maxpool(y, 3, 2, 1, module="maxpool")
    for stage, c in enumerate([64, 128, 256, 512], start=1):
        for i in range(2):
            y = _basic_block(b, y, c, 2 if (i == 0 and stage > 1) else 1, f"layer{stage}.{i}")
        y = b.identity(y, module=f"layer{stage}")
    y = b.global_avg_pool(y, module="avgpool")
    y = b.identity(b.flatten(y))
    y = b.linear(y, 1000, module="fc")
    b.output(y, "output")
    return b.build("ResNet-18 (random weights)")


SSD_ANCHORS = 6
SSD_CLASSES = 91


def _ssd_extra_block(b: GraphBuilder, x: str, cout: int, act: str, module: str) -> str:
    """torchvision SSDLite extra layer: 1x1 reduce, 3x3 dw stride 2, 1x1 expand."""
    mid = cout // 2
    with b.scope(module):
        y = b.conv_bn_act(x, mid, 1, act=act, module="0")
        y = b.conv_bn_act(y, mid, 3, 2, groups=mid, act=act, module="1")
        return b.conv_bn_act(y, cout, 1, act=act, module="2")


def _ssd_head(b: GraphBuilder, feats: list[str], per_anchor: int, act: str, module: str) -> str:
    """Depthwise-separable prediction per feature map, flattened to (N, A, k)."""
    outs = []
    with b.scope(module):
        for i, f in enumerate(feats):
            with b.scope(f"module_list.{i}"):
                y = b.conv_bn_act(f, b.channels(f), 3, groups=b.channels(f), act=act, module="0")
                y = b.conv(y, SSD_ANCHORS * per_anchor, 1, bias=True, module="1")
                y = b.transpose(y, [0, 2, 3, 1])
                outs.append(b.reshape(y, [0, -1, per_anchor]))
        return b.concat(outs, axis=1)


def ssdlite_mobilenetv2(seed: int = 0) -> onnx.ModelProto:
    """SSDLite with a MobileNetV2 backbone at 320x320, SiLU activations.

    Heads on block 13's expansion (stride 16, 576 ch), the last 1x1 conv
    (stride 32, 1280 ch) and four extra layers (5x5, 3x3, 2x2, 1x1):
    6 anchors per location, 3234 anchors, 91 classes.
    """
    act = "silu"
    b = GraphBuilder("ssdlite_mobilenetv2", 13, seed, Habits())
    x = b.input("images", 3, 320, 320)
    with b.scope("backbone"):
        y, taps = _mobilenetv2_features(b, x, act)
        y = b.conv_bn_act(y, 1280, 1, act=act, module="features.18")
        feats = [taps["expand13"], y]
        for i, c in enumerate([512, 256, 256, 128]):
            feats.append(_ssd_extra_block(b, feats[-1], c, act, f"extra.{i}"))
    with b.scope("head"):
        boxes = _ssd_head(b, feats, 4, act, "regression_head")
        scores = _ssd_head(b, feats, SSD_CLASSES, act, "classification_head")
    b.output(boxes, "boxes")
    b.output(b.softmax(scores, axis=-1), "scores")
    return b.build("SSDLite-MobileNetV2 320 (random weights)")


SEG_CLASSES = 21


def segmentation(seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 encoder (stride 16) + U-Net-like decoder, 256x256 in,
    (N, 21, 256, 256) out. Exported without node names."""
    b = GraphBuilder("segmentation", 17, seed, Habits(naming="none"))
    x = b.input("input", 3, 256, 256)
    with b.scope("encoder"):
        y, taps = _mobilenetv2_features(b, x, "relu6", stages=5)  # 16x16, 96 ch
    with b.scope("decoder"):
        y = b.conv_bn_act(y, 128, 1, act="relu", module="aspp")
        y = b.resize(y, 2.0, "linear")  # 32x32
        y = b.concat([y, taps["s8"]])
        y = b.conv_bn_act(y, 96, 3, act="relu", module="up1.0")
        y = b.conv_bn_act(y, 96, 3, act="relu", module="up1.1")
        y = b.resize(y, 2.0, "nearest")  # 64x64
        y = b.concat([y, taps["s4"]])
        y = b.conv_bn_act(y, 64, 3, act="relu", module="up2.0")
        y = b.conv(y, SEG_CLASSES, 1, bias=True, module="classifier")
        y = b.resize(y, 4.0, "linear")  # back to 256x256
    b.output(y, "output")
    return b.build("MobileNetV2 encoder + U-Net decoder segmentation (random weights)")


MODELS: dict[str, Callable[[int], onnx.ModelProto]] = {
    "mobilenetv2": mobilenetv2,
    "efficientnet_lite0": efficientnet_lite0,
    "mobilenetv3_small": mobilenetv3_small,
    "resnet18": resnet18,
    "ssdlite_mobilenetv2": ssdlite_mobilenetv2,
    "segmentation": segmentation,
}
