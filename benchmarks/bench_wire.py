"""Encode + decode time of a VGG-16-size top-k update vs one local training step, same device.

    python benchmarks/bench_wire.py                      # both VGG-16 layouts, densities 1e-2 1e-3 1e-4
    python benchmarks/bench_wire.py --models vgg16-15m --threads 2

Layouts: ``vgg16`` is flarebench.models' VGG-16 for CIFAR (FLARE reference head: 4096-4096-10,
33.6M entries); ``vgg16-15m`` is the common CIFAR VGG-16 (13 convs + one 512->10 layer, 14.7M
entries: the "15M" VGG-16 of STC). The update is Gaussian noise through flarebench's per-tensor top-k (so positions
are spread like a random k-subset). Encode = WireFormat.encode (positions + fp32 values + header),
decode = WireFormat.decode; the training step = forward + backward + SGD step on a batch of 32
3x32x32 images. Times are medians in milliseconds; ratio = (encode + decode) / training step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from flarebench.flat import Layout
from flarebench.methods.compressors.topk import TopK
from flarebench.methods.registry import PartContext, RoundContext
from flarebench.wire import POSITION_CODECS, WireFormat


def vgg16_15m(num_classes: int = 10) -> nn.Module:
    """CIFAR VGG-16: 13 3x3 convs (64,64,M,128,128,M,256x3,M,512x3,M,512x3,M) + Linear(512, classes)."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, num_classes))


def build(name: str) -> nn.Module:
    if name == "vgg16-15m":
        return vgg16_15m()
    from flarebench.models import build_model

    return build_model(name, (3, 32, 32), 10)


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def train_step_fn(model: nn.Module):
    """One local training step of ``model`` (forward + backward + SGD with momentum, batch 32 of 3x32x32), warmed up."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()  # warm-up
    return step


def train_step_ms(model: nn.Module, reps: int) -> float:
    """Median milliseconds of :func:`train_step_fn` over ``reps``."""
    return median_ms(train_step_fn(model), reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vgg16-15m,vgg16")
    ap.add_argument("--densities", default="1e-2,1e-3,1e-4")
    ap.add_argument("--codecs", default="auto," + ",".join(POSITION_CODECS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the codecs are single-threaded numpy)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    for name in args.models.split(","):
        model = build(name)
        layout = Layout.of(model)
        step = train_step_ms(model, args.reps)
        print(f"\n{name}: {layout.num_params:,} entries in {len(layout)} tensors; "
              f"one training step (batch 32, {args.threads} thread(s)): {step:.0f} ms")
        print(f"{'density':>8} {'codec':>12} {'chosen':>12} {'KiB':>9} {'pos bits/entry':>15} "
              f"{'encode ms':>10} {'decode ms':>10} {'ratio':>7}")
        v = torch.randn(1, layout.num_params)
        for density in (float(d) for d in args.densities.split(",")):
            (msg,) = TopK(PartContext(layout, 1, sparsity=1.0 - density)).compress(v, RoundContext(0, [0]))
            for enc_name in args.codecs.split(","):
                wire = WireFormat(layout.sizes, enc_name, "fp32")
                enc = wire.encode(msg)
                t_enc = median_ms(lambda: wire.encode(msg), args.reps)
                t_dec = median_ms(lambda: wire.decode(enc.data), args.reps)
                assert torch.equal(wire.decode(enc.data).indices, msg.indices)
                pos_bits = 8 * len(enc.data) - 32 * msg.nnz  # header + positions
                print(f"{density:>8g} {enc_name:>12} {enc.position_codec:>12} {len(enc.data) / 1024:>9.1f} "
                      f"{pos_bits / msg.nnz:>15.2f} {t_enc:>10.1f} {t_dec:>10.1f} {(t_enc + t_dec) / step:>7.4f}")


if __name__ == "__main__":
    main()
