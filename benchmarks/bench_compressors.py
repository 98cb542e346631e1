"""Every registered compressor at VGG-16 size: compress + encode + decode + decompress vs one training step.

    python benchmarks/bench_compressors.py                     # all compressors, vgg16-15m, density 1e-3
    python benchmarks/bench_compressors.py --compressors topk,qsgd --sparsity 0.99 --threads 2

The update is Gaussian noise ``[1, P]`` on the common CIFAR VGG-16 layout (14.7M entries; bench_wire.py).
Each compressor is built at its defaults (``--sparsity`` for the sparsifiers) and timed on one client:
``compress`` (client), ``encode`` (client), ``decode`` + ``contribution`` (server: what it adds up).
Multi-phase compressors (PowerSGD) are timed through all their phases, server broadcasts included.
The training step = forward + backward + SGD step on a batch of 32 3x32x32 images, same threads.
Times are medians in milliseconds, measured in one run, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse

import torch

from bench_wire import build, median_ms, train_step_ms
from flarebench.flat import Layout
from flarebench.methods.registry import REGISTRY, PartContext, RoundContext, load_parts


def one_client_round(comp, v: torch.Tensor, ctx: RoundContext) -> tuple[int, torch.Tensor]:
    """All phases of one client with the server's side: -> (uplink bytes, the decoded contribution [P])."""
    weights = torch.ones(1)
    broadcasts, received, nbytes = [], [[]], 0
    for phase in range(comp.phases):
        b = comp.broadcast(phase, received, weights, ctx)
        broadcasts.append(None if b is None else comp.decode(comp.encode(b)))
        (payload,) = comp.compress_phase(phase, v, broadcasts, ctx)
        data = comp.encode(payload)
        nbytes += len(data)
        received[0].append(comp.decode(data))
    return nbytes, comp.contribution(received[0], broadcasts)


def main() -> None:
    load_parts()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg16-15m")
    ap.add_argument("--compressors", default=",".join(sorted(REGISTRY["compressor"])))
    ap.add_argument("--sparsity", type=float, default=0.999, help="for the compressors that use it")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model)
    layout = Layout.of(model)
    step = train_step_ms(model, args.reps)
    v = torch.randn(1, layout.num_params)
    ctx = RoundContext(0, [0], seed=0)
    print(f"{args.model}: {layout.num_params:,} entries in {len(layout)} tensors; one training step "
          f"(batch 32, {args.threads} thread(s)): {step:.0f} ms; sparsity {args.sparsity} for the sparsifiers")
    print(f"| compressor | uplink KiB | bits/entry | compress+encode+decode ms | share of a step |")
    print(f"|---|---:|---:|---:|---:|")
    for name in args.compressors.split(","):
        comp = REGISTRY["compressor"][name](PartContext(layout, 1, sparsity=args.sparsity, seed=0))
        nbytes, _ = one_client_round(comp, v, ctx)  # warm-up
        ms = median_ms(lambda: one_client_round(comp, v, ctx), args.reps)
        print(f"| {name} | {nbytes / 1024:,.1f} | {8 * nbytes / layout.num_params:.4g} | {ms:,.1f} | {100 * ms / step:.1f}% |")


if __name__ == "__main__":
    main()
