"""Re-create the torch_dynamo_*.onnx test models (needs torch, torchvision, onnxscript; not run by the tests).

    python tests/data/make_torch_exports.py tests/data

torchvision architectures at reduced width, random weights, exported by torch's
dynamo-based exporter (``torch.onnx.export(..., dynamo=True)``). BatchNorm
statistics come from a few forward passes on random data so that activations
neither vanish nor explode (with the default statistics, random-weight outputs
are ~1e-10 and every comparison is noise). Made with torch 2.14.1, torchvision
0.29.1, onnxscript 0.7.2.
"""

import sys
from pathlib import Path

import torch
from torch import nn
from torchvision.models import efficientnet as eff
from torchvision.models import mobilenetv3 as mnv3
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import lraspp


def mobilenet_v3_small() -> tuple[nn.Module, int]:
    return mnv3.mobilenet_v3_small(weights=None, width_mult=0.25, num_classes=10), 64


def efficientnet_b0() -> tuple[nn.Module, int]:
    setting, last = eff._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.5)
    return eff.EfficientNet(setting, dropout=0.2, num_classes=10, last_channel=last), 64


def lraspp_mobilenet_v3_large() -> tuple[nn.Module, int]:
    # torchvision's _lraspp_mobilenetv3 with a narrower head (inter_channels 128 -> 32).
    features = mnv3.mobilenet_v3_large(weights=None, width_mult=0.25, dilated=True).features
    stages = [0] + [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)] + [len(features) - 1]
    low, high = stages[-4], stages[-1]
    backbone = IntermediateLayerGetter(features, return_layers={str(low): "low", str(high): "high"})
    head = lraspp.LRASPP(backbone, features[low].out_channels, features[high].out_channels, 3, inter_channels=32)
    return head, 64


def calibrate_bn(model: nn.Module, size: int, batches: int = 4) -> nn.Module:
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(8, 3, size, size))
    return model.eval()


def main(out: Path) -> None:
    torch.manual_seed(0)
    for build in (mobilenet_v3_small, efficientnet_b0, lraspp_mobilenet_v3_large):
        model, size = build()
        model = calibrate_bn(model, size)
        x = torch.randn(1, 3, size, size)
        name = f"torch_dynamo_{build.__name__}_w025.onnx"
        # MobileNetV3 keeps its weights in a .data file next to it (dynamo's default for any size).
        with torch.no_grad():
            torch.onnx.export(model, (x,), out / name, dynamo=True, external_data=build is mobilenet_v3_small)
        print(name)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
