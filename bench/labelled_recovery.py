"""Labelled recovery end to end on a real labelled data set: scikit-learn's digits.

    python -m bench.labelled_recovery [--out build/labelled_recovery] [--targets npu32,cpu]
                                      [--train-epochs 15] [--recover-epochs 8] [--threads 1] [--seed 0]
                                      [--optimize-args=--for-retraining]

1. Data: scikit-learn's ``load_digits`` (1797 8x8 grey digits, 10 classes; the csv ships in the wheel,
   nothing is downloaded), upsampled to 32x32 (bilinear), values 0..1, grey replicated to 3 channels.
   Split seeded and stratified by class: 75% train (1347), 25% held out (450). The digits carry no
   writer ids, so the split is by image. The held-out digits are never trained on, by the original or by
   recovery, and never used to pick anything: every accuracy below is on them.
2. Original: a MobileNetV2-style network (stem 3x3 conv, six IBN blocks with depthwise 3x3 convs,
   expansion 4, 16->24->24->32->32->64->64 channels, three of them residual, 1x1 head to 128, global
   pool, linear), BatchNorm and ReLU6, trained with PyTorch on the train split (Adam, one-cycle, random
   shifts of +-2 px), exported with ``torch.onnx.export`` (TorchScript exporter, opset 17).
3. Rewrite, per target: ``hwopt optimize -t TARGET --calibration train.npz`` with ``--optimize-args``
   (default ``--for-retraining``: the fastest architecture whatever its weights, which are refit on the
   train split), then ``hwopt measure`` of original and rewritten (npu32: the SCALE-Sim emulator, kernel by
   kernel; cpu: onnxruntime on this machine).
4. Recovery with labels: ``hwopt recover ORIGINAL REWRITTEN --calibration train.npz --heldout
   heldout.npz --recover-epochs N`` (the .npz files hold a ``label`` array: cross-entropy on the labels
   plus distillation from the original, ``docs/recover.md``).

Prints, per target: estimated and measured latency change, held-out accuracy of the original, the
rewritten model before recovery and after, and the wall time of each stage with the load average (the
machine is shared). Needs scikit-learn (the ``test`` extra) and PyTorch (``hwopt[recover]``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.recover_figures import ROOT, hwopt, load  # hwopt: one `nice -n 19` command, echoed, exit 0/1 or stop

SIZE = 32


def cpu() -> float:
    """CPU seconds of this process and the hwopt commands it ran (wall time on a shared machine is the load's)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def digits(seed: int) -> dict[str, np.ndarray]:
    """The digits at 32x32x3 in 0..1, split 75/25 stratified by class (seeded)."""
    import torch
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=SIZE, mode="bilinear", align_corners=False).clamp(0, 1)
    x = x.repeat(1, 3, 1, 1).numpy()
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    held = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:round(0.25 * (y == c).sum())]
                           for c in range(10)])
    train = np.setdiff1d(np.arange(len(y)), held)
    return {"x_train": x[train], "y_train": y[train], "x_held": x[np.sort(held)], "y_held": y[np.sort(held)]}


def network():
    """The MobileNetV2-style digits network (module docstring)."""
    import torch
    from torch import nn

    def conv(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> list:
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return layers + [nn.ReLU6()] if act else layers

    class IBN(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
            super().__init__()
            hidden = cin * expand
            self.body = nn.Sequential(*conv(cin, hidden), *conv(hidden, hidden, 3, stride, hidden),
                                      *conv(hidden, cout, act=False))
            self.residual = cin == cout and stride == 1

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(*conv(3, 16, 3))
            self.blocks = nn.Sequential(IBN(16, 24, 2), IBN(24, 24, 1), IBN(24, 32, 2), IBN(32, 32, 1),
                                        IBN(32, 64, 2), IBN(64, 64, 1))
            self.head = nn.Sequential(*conv(64, 128))
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            return self.fc(self.head(self.blocks(self.stem(x))).mean(dim=(2, 3)))

    return Net()


def train_original(data: dict[str, np.ndarray], epochs: int, seed: int, path: Path) -> float:
    """Train, export to ``path``; the held-out accuracy torch measures."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    net = network()
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    batch = 64
    steps = epochs * -(-len(y) // batch)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        order, losses = torch.randperm(len(y), generator=generator), []
        for index in order.split(batch):
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
            loss = F.cross_entropy(net(torch.roll(x[index], (dx, dy), (2, 3))), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        net.eval()
        with torch.no_grad():
            accuracy = float((net(torch.from_numpy(data["x_held"])).argmax(1).numpy() == data["y_held"]).mean())
        print(f"  original epoch {epoch + 1}/{epochs}: mean loss {np.mean(losses):.3f}, held-out accuracy {accuracy:.2%}",
              flush=True)
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(path), input_names=["x"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    return accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.labelled_recovery", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "labelled_recovery")
    parser.add_argument("--targets", default="npu32,cpu")
    parser.add_argument("--train-epochs", type=int, default=15)
    parser.add_argument("--recover-epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimize-args", default="--for-retraining",
                        help="extra hwopt optimize arguments (give them with '=': --optimize-args=--for-retraining)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    start, start_cpu = time.perf_counter(), cpu()
    print(f"load {load()} at start", flush=True)
    data = digits(args.seed)
    train, held = out / "train.npz", out / "heldout.npz"
    np.savez(train, x=data["x_train"], label=data["y_train"])
    np.savez(held, x=data["x_held"], label=data["y_held"])
    model = out / "digits_mobilenet.onnx"
    t0, c0 = time.perf_counter(), cpu()
    torch_accuracy = train_original(data, args.train_epochs, args.seed, model)
    train_s, train_cpu = time.perf_counter() - t0, cpu() - c0
    print(f"original: {len(data['y_train'])} digits trained on, {len(data['y_held'])} held out; held-out accuracy "
          f"{torch_accuracy:.2%} (torch); {train_s:.0f} s wall, {train_cpu:.0f} s CPU; load {load()}", flush=True)
    rows = []
    for target in args.targets.split(","):
        rewritten, recovered = out / f"rewritten_{target}.onnx", out / f"recovered_{target}.onnx"
        t0, c0 = time.perf_counter(), cpu()
        doc = json.loads(hwopt("optimize", str(model), "-t", target, "--calibration", str(train), "-o", str(rewritten),
                               "--no-compare", "--json", *args.optimize_args.split()).stdout)
        optimize_s, optimize_cpu = time.perf_counter() - t0, cpu() - c0
        best = doc["best"]
        base = next(v for v in doc["variants"] if v["label"] == "baseline")
        t0 = time.perf_counter()
        measured = [json.loads(hwopt("measure", str(m), "-t", target, "--json").stdout)["latency_us"]
                    for m in (model, rewritten)]
        measure_s = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), cpu()
        figures = json.loads(hwopt("recover", str(model), str(rewritten), "--calibration", str(train), "--heldout",
                                   str(held), "-o", str(recovered), "--recover-epochs", str(args.recover_epochs),
                                   "--threads", str(args.threads), "--seed", str(args.seed), "--json").stdout)
        recover_s, recover_cpu = time.perf_counter() - t0, cpu() - c0
        acc = figures["accuracy"]
        row = {"target": target, "cost_model": doc["cost_model"], "rules": best["rules"],
               "estimated_us": [base["latency_us"], best["latency_us"]], "estimated_change": best["latency_change"],
               "measured_us": measured, "measured_change": measured[1] / measured[0] - 1, "accuracy": acc,
               "agreement": [figures["before"], figures["after"]], "epochs": len(figures["epochs"]),
               "written_epoch": figures["written_epoch"],
               "seconds": {"optimize": optimize_s, "measure": measure_s, "recover": recover_s},
               "cpu_seconds": {"optimize": optimize_cpu, "recover": recover_cpu}, "load": load()}
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    total, total_cpu = time.perf_counter() - start, cpu() - start_cpu
    print(f"\ndigits, held-out accuracy (450 digits never trained on); {args.threads} torch thread(s); "
          f"total {total:.0f} s wall, {total_cpu:.0f} s CPU (original training {train_s:.0f} s wall, {train_cpu:.0f} s "
          f"CPU); load {load()} at the end")
    print("| target (cost model) | latency est. | latency measured | original | rewritten before | after | "
          "epochs | optimize + recover (wall; CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        a = r["accuracy"]
        print(f"| {r['target']} ({r['cost_model']}) | {r['estimated_change']:+.1%} | "
              f"{r['measured_us'][0]:.1f} -> {r['measured_us'][1]:.1f} us ({r['measured_change']:+.1%}) | "
              f"{a['original']:.2%} | {a['before']:.2%} | {a['after']:.2%} | {r['epochs']} "
              f"(written {r['written_epoch']}) | {r['seconds']['optimize']:.0f} + {r['seconds']['recover']:.0f} s; "
              f"{r['cpu_seconds']['optimize']:.0f} + {r['cpu_seconds']['recover']:.0f} s |")
    (out / "figures.json").write_text(json.dumps({"rows": rows, "total_s": total, "train_s": train_s,
                                                  "total_cpu_s": total_cpu, "train_cpu_s": train_cpu,
                                                  "torch_accuracy": torch_accuracy}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
