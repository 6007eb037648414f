"""Re-create tests/data/torch_unet_db_head_convtranspose.onnx (needs torch only; not run by the tests).

    python tests/data/make_conv_transpose_export.py tests/data

A small U-Net-style encoder/decoder with a DB-text-detector-style head, the
three ways real exports upsample with ConvTranspose: U-Net's 2x2 stride-2
up-convs (kernel = stride), a 4x4 stride-2 pad-1 one (DCGAN/FCN style, kernel
> stride), a depthwise one (FCN's bilinear upsampling, group = channels), and
DBNet's probability head (3x3 conv, BN, ReLU, 2x2 stride-2 ConvTranspose, BN,
ReLU, 2x2 stride-2 ConvTranspose, Sigmoid). Random weights, BatchNorm statistics
from a few forward passes on random data; exported by torch's TorchScript
exporter (``dynamo=False``: the dynamo one needs onnxscript), opset 13, batch 1,
input 1x3x64x64. Made with torch 2.13.0+cpu.
"""

import sys
from pathlib import Path

import torch
from torch import nn


def cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class UNetDBHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2, self.enc3 = cbr(3, 16, 2), cbr(16, 32, 2), cbr(32, 64, 2)  # /2, /4, /8
        self.up1 = nn.ConvTranspose2d(64, 32, 2, 2)  # U-Net up-conv: /8 -> /4
        self.dec1 = cbr(32, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 4, 2, 1)  # kernel > stride: /4 -> /2
        self.dec2 = cbr(16, 16)
        self.side = nn.ConvTranspose2d(32, 32, 4, 2, 1, groups=32, bias=False)  # depthwise, FCN-style: /4 -> /2
        self.side_proj = nn.Conv2d(32, 16, 1)
        # DBNet's binarisation head on the /4 features: back to full resolution.
        self.head = nn.Sequential(
            nn.Conv2d(32, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.ConvTranspose2d(8, 8, 2, 2), nn.BatchNorm2d(8), nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 2, 2), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d1 = self.dec1(self.up1(e3) + e2)
        d2 = self.dec2(self.up2(d1) + e1 + self.side_proj(self.side(d1)))
        return self.head(d1), d2


def main(out: Path) -> None:
    torch.manual_seed(0)
    model = UNetDBHead()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, 64, 64))
    model.eval()
    path = out / "torch_unet_db_head_convtranspose.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), str(path), opset_version=13, dynamo=False,
                          input_names=["image"], output_names=["probability", "features"])
    print(path, path.stat().st_size)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
