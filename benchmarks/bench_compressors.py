"""Every registered compressor at VGG-16 size: compress + encode + decode + reconstruction vs one training step.

    python benchmarks/bench_compressors.py                     # all compressors, vgg16-15m, sparsity 0.999
    python benchmarks/bench_compressors.py --compressors topk,qsgd --sparsity 0.99 --threads 2

Model: ``vgg16-15m``, the CIFAR VGG-16 of the compression papers (13 3x3 convs + Linear(512, 10):
14,719,818 entries; bench_wire.py). flarebench's own ``--model vgg16`` (the FLARE reference's
4096-4096 head: 33.6M entries) adds 19M classifier entries that cost the step about 6% more FLOPs,
so a per-entry cost weighs about 2.2x more there (``--model vgg16``).

The update is Gaussian noise ``[1, P]``; each compressor is built at its defaults (``--sparsity`` for
the sparsifiers) and timed on one client: ``compress`` + ``encode`` (client), ``decode`` + the
server's reconstruction (``contribution``: what it adds up, written into the server's ``[P]`` row, which
a run allocates once and reuses every round); multi-phase compressors (PowerSGD)
through all their phases, server broadcasts included. Where the cost depends on state, the rows are
the settings a run meets: ``dgc`` after its warm-up (density 1 - sparsity) and ``dgc@warm-up`` in its
first round (the warm-up's densest, once per run); ``threshold`` with tau at the (1 - density)
quantile of |v|, so that it sends what the sparsifiers send (a tau against the update's scale: with
the default tau = 0.05 against N(0, 1) noise it would send 96% of the entries, a state no run meets).

The training step = forward + backward + SGD step on a batch of 32 3x32x32 images, same threads. The
step and the compressor are timed alternately (``--reps`` each), so load on the machine weighs on both
alike; a share is median(compressor) / median(step), the table's step the median over all rows.
Times are the process's CPU time (``--clock cpu``, time.process_time: user + system), so on a shared
machine the time spent waiting for a core does not count; ``--clock wall`` for wall-clock time (use it
with ``--threads`` > 1, where CPU time adds up the threads).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench_wire import build, train_step_fn
from flarebench.flat import Layout
from flarebench.methods.compressors.base import contribution_into
from flarebench.methods.compressors.dgc import warmup_density
from flarebench.methods.registry import REGISTRY, PartContext, RoundContext, load_parts


def one_client_round(comp, v: torch.Tensor, ctx: RoundContext, out: torch.Tensor) -> tuple[int, torch.Tensor]:
    """All phases of one client with the server's side: -> (uplink bytes, the decoded contribution, written
    into ``out`` [P]: the server's row, reused round after round, as aggregation.py and the client's memory do)."""
    weights = torch.ones(1)
    broadcasts, received, nbytes = [], [[]], 0
    for phase in range(comp.phases):
        b = comp.broadcast(phase, received, weights, ctx)
        broadcasts.append(None if b is None else comp.decode(comp.encode(b)))
        (payload,) = comp.compress_phase(phase, v, broadcasts, ctx)
        data = comp.encode(payload)
        nbytes += len(data)
        received[0].append(comp.decode(data))
    return nbytes, contribution_into(comp, received[0], broadcasts, out)


def rows(names: list[str], v: torch.Tensor, density: float):
    """(label, compressor name, parameters, round, setting) for every row of the table."""
    for name in names:
        if name == "threshold":
            tau = float(v.abs().flatten().kthvalue(v.numel() - max(1, round(density * v.numel()))).values)
            yield name, name, {"tau": tau}, 0, f"tau = {tau:.3g} (sends ~{density:g})"
        elif name == "dgc":
            cls = REGISTRY["compressor"][name]
            W = cls.defaults()["warmup_rounds"]
            yield name, name, {}, W, f"after warm-up (round {W})"
            yield "dgc@warm-up", name, {}, 0, f"warm-up round 0 (density {warmup_density(density, 0, W):.3g})"
        else:
            yield name, name, {}, 0, ""


def main() -> None:
    load_parts()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vgg16-15m")
    ap.add_argument("--compressors", default=",".join(sorted(REGISTRY["compressor"])))
    ap.add_argument("--sparsity", type=float, default=0.999, help="for the compressors that use it")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time or wall-clock time")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model)
    layout = Layout.of(model)
    step = train_step_fn(model)
    v = torch.randn(1, layout.num_params)
    density = 1.0 - args.sparsity
    lines, steps = [], []
    for label, name, params, round_idx, setting in rows(args.compressors.split(","), v, density):
        comp = REGISTRY["compressor"][name](PartContext(layout, 1, sparsity=args.sparsity, seed=0), **params)
        ctx = RoundContext(round_idx, [0], seed=0)
        row = torch.empty(layout.num_params)  # the server's row for this client (allocated once, as in a run)
        nbytes, _ = one_client_round(comp, v, ctx, row)  # warm-up
        t_step, t_comp = [], []
        for _ in range(args.reps):
            for fn, out in ((step, t_step), (lambda: one_client_round(comp, v, ctx, row), t_comp)):
                t0 = clock()
                fn()
                out.append(1e3 * (clock() - t0))
        steps += t_step
        ms, share = statistics.median(t_comp), statistics.median(t_comp) / statistics.median(t_step)
        lines.append(f"| {label} | {setting} | {nbytes / 1024:,.1f} | {8 * nbytes / layout.num_params:.4g} | "
                     f"{ms:,.1f} | {100 * share:.1f}% |")
    print(f"{args.model}: {layout.num_params:,} entries in {len(layout)} tensors; one training step (batch 32, "
          f"{args.threads} thread(s)): {statistics.median(steps):.0f} ms {args.clock} time (median of {len(steps)}); "
          f"sparsity {args.sparsity} for the sparsifiers\n")
    print("| compressor | setting | uplink KiB | bits/entry | compress+encode+decode+reconstruct ms | share of a step |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
