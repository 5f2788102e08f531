"""The model-only training throughput of the same ResNet-D networks in PyTorch, as a reference for MXNet's figures.

Runs in an environment with PyTorch (``pip install torch``; torchvision is not needed) and without MXNet.
The networks are defined here layer for layer as ``models/resnet.py`` builds ``resnet18_v1d`` and
``resnet50_v1d`` (deep stem of three 3x3 convolutions, stride on the 3x3 convolution, average pooling before
the 1x1 projection; the identity pool ours keeps at stride 1 for GluonCV's parameter names is left out),
and their parameter counts are printed beside the figures so that a reader can check them against ours
(``python -m models resnet50_v1d --classes 1000``). Each row is measured as ``benchmarks.model_step`` measures
the model alone: Nesterov SGD training steps on a batch in memory, the median of ``--steps`` timed steps after
``--warmup-steps``, on one thread per physical core, as MXNet's operators get in our scripts.

    python -m benchmarks.pytorch_reference --output-dir benchmarks/results/throughput
"""
import argparse
import os
import statistics
import time

import torch
from torch import nn

from benchmarks.machine import describe
from benchmarks.report import write_report
from utils.cpu_threads import physical_cores  # plain Python: no MXNet needed

ROWS = ("resnet50_v1d:224", "resnet50_v1d:64", "resnet18_v1d:32", "resnet18_v1d:64")
DEPTHS = {"resnet18_v1d": ("basic", (2, 2, 2, 2)), "resnet50_v1d": ("bottleneck", (3, 4, 6, 3))}
CLASSES = 1000


def conv_bn(in_channels, out_channels, kernel, stride=1):
    return [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_channels)]


class Block(nn.Module):
    """A basic (two 3x3) or bottleneck (1x1, 3x3 with the stride, 1x1) residual block with ResNet-D's shortcut."""

    def __init__(self, kind, in_channels, channels, stride):
        super().__init__()
        expansion = 1 if kind == "basic" else 4
        out_channels = channels * expansion
        if kind == "basic":
            layers = [*conv_bn(in_channels, channels, 3, stride), nn.ReLU(inplace=True),
                      *conv_bn(channels, channels, 3)]
        else:
            layers = [*conv_bn(in_channels, channels, 1), nn.ReLU(inplace=True),
                      *conv_bn(channels, channels, 3, stride), nn.ReLU(inplace=True),
                      *conv_bn(channels, out_channels, 1)]
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            pool = [nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)] if stride != 1 else []
            self.shortcut = nn.Sequential(*pool, *conv_bn(in_channels, out_channels, 1))
        self.out_channels = out_channels

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNetD(nn.Module):
    def __init__(self, kind, blocks, classes=CLASSES):
        super().__init__()
        layers = [*conv_bn(3, 32, 3, 2), nn.ReLU(inplace=True), *conv_bn(32, 32, 3), nn.ReLU(inplace=True),
                  *conv_bn(32, 64, 3), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        in_channels = 64
        for stage, count in enumerate(blocks):
            for index in range(count):
                block = Block(kind, in_channels, 64 * 2 ** stage, 2 if index == 0 and stage > 0 else 1)
                layers.append(block)
                in_channels = block.out_channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(in_channels, classes)

    def forward(self, x):
        return self.fc(self.features(x))


def measure(name, input_size, batch_size, steps, warmup_steps):
    torch.manual_seed(0)
    net = ResNetD(*DEPTHS[name])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()
    images = torch.randn(batch_size, 3, input_size, input_size)
    labels = torch.arange(batch_size) % CLASSES
    seconds = []
    for step in range(warmup_steps + steps):
        tic = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(images), labels).backward()
        optimizer.step()
        if step >= warmup_steps:
            seconds.append(time.perf_counter() - tic)
    return dict(model=name, input_size=input_size, batch_size=batch_size, steps=steps,
                parameters=sum(p.numel() for p in net.parameters()),
                images_per_sec=batch_size / statistics.median(seconds))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", default=list(ROWS), help=f"MODEL:INPUT rows (default {' '.join(ROWS)})")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--output-dir", default=".", help="where pytorch.md and pytorch.json go")
    args = parser.parse_args(argv)
    torch.set_num_threads(physical_cores() or os.cpu_count() or 1)
    rows = []
    for spec in args.rows:
        name, _, size = spec.partition(":")
        steps = 3 if int(size) >= 224 and args.steps > 3 else args.steps
        rows.append(measure(name, int(size), args.batch_size, steps, min(args.warmup_steps, steps)))
        print(f"measured {spec}", flush=True)
    result = dict(machine=describe(torch=torch.__version__, threads=torch.get_num_threads()), rows=rows)
    lines = [f"PyTorch {torch.__version__} on {result['machine']['cores']} cores ({torch.get_num_threads()} threads), "
             f"batch {args.batch_size}, model only, median of the timed steps of one run.", "",
             "| model | input | parameters | PyTorch img/s |", "| --- | --- | --- | --- |"]
    lines += [f"| {row['model']} | {row['input_size']} | {row['parameters']:,} | {row['images_per_sec']:.1f} |"
              for row in rows]
    write_report(args.output_dir, "pytorch", "\n".join(lines), result)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
