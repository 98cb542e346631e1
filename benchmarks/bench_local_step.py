"""Local training of one round of a config: flarebench's sequential engine vs plain PyTorch on the same samples.

    python benchmarks/bench_local_step.py                                   # the paper's unavail_cnn_k7 round
    python benchmarks/bench_local_step.py --config baselines/mnist_cnn_flare.toml --reps 5 --compile

Times the local training of the round's participants (no compression, no evaluation), interleaved rep by
rep, best of ``--reps`` (seconds, CUDA synchronised):

- ``flarebench``: ``SequentialEngine.train`` (functional_call on views of one flat ``[P]`` vector,
  ``torch.autograd.grad``, flarebench's flat SGD), the engine every baseline config pins;
- ``plain``: for each client, ``model.load_state_dict`` of the round's start, then the same batches
  through ``nn.Module`` forward, ``loss.backward()`` and ``torch.optim.SGD(lr, momentum)``: what a
  hand-written PyTorch FL loop does;
- ``compiled`` (``--compile``): the sequential engine with its step under ``torch.compile`` (what
  ``flarebench bench --compile`` calls ``sequential+compile``); its first round (compilation) is
  reported apart.

Ratios are ``plain / this``: above 1 is faster than plain PyTorch. No regularizer term is timed
(round 0's anchor is off for FLARE's pull at ``w``); the point is the training loop's overhead.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from flarebench.config import make_config
from flarebench.engine import select
from flarebench.engine.sequential import SequentialEngine, batch_order
from flarebench.runner import setup


def plain_round(model: torch.nn.Module, layout, w: torch.Tensor, x, y, indices, ids, spec, round_idx: int) -> torch.Tensor:
    """Train each client from ``w`` with nn.Module + torch.optim.SGD on the engine's batches; ``[K, P]``."""
    start = {k: v.clone() for k, v in layout.unflatten(w).items()}
    out = []
    for cid, idx in zip(ids, indices):
        model.load_state_dict(start, strict=False)
        opt = torch.optim.SGD(model.parameters(), lr=spec.optimizer.lr, momentum=spec.optimizer.momentum)
        model.train()
        for epoch in range(spec.epochs):
            order = batch_order(len(idx), spec, round_idx, cid, epoch).to(idx.device)
            for s in range(0, len(idx), spec.batch_size):
                rows = idx[order[s : s + spec.batch_size]]
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[rows]), y[rows]).backward()
                opt.step()
        out.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="baselines/flare_paper/unavail_cnn_k7.toml")
    ap.add_argument("--method", default="topk-ef", help="Method of the config to build (its local step is what is timed).")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--compile", action="store_true", help="Also time the engine's step under torch.compile.")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = make_config(args.config, method=args.method, engine="sequential", device="cpu")
    s = setup(cfg)
    fed = s.federation
    ids = list(range(cfg.participants()))
    indices = [fed.client_indices[c] for c in ids]
    x, y, w, spec = fed.clients.x, fed.clients.y, fed.w, fed.spec
    engines = {"flarebench": SequentialEngine(fed.model, fed.layout, fed.parts.regularizer)}
    if args.compile:
        engines["compiled"] = SequentialEngine(fed.model, fed.layout, fed.parts.regularizer, compile=True)
    fns = {name: (lambda e=e: e.train(w, x, y, indices, ids, None, spec, 0)[0]) for name, e in engines.items()}
    fns["plain"] = lambda: plain_round(fed.model, fed.layout, w, x, y, indices, ids, spec, 0)
    first = {}
    for name, fn in fns.items():  # warm-up (and compilation)
        select._sync(s.device)
        t0 = time.perf_counter()
        fn()
        select._sync(s.device)
        first[name] = time.perf_counter() - t0
    best = {name: float("inf") for name in fns}
    for _ in range(args.reps):
        for name, fn in fns.items():
            select._sync(s.device)
            t0 = time.perf_counter()
            fn()
            select._sync(s.device)
            best[name] = min(best[name], time.perf_counter() - t0)
    ref = fns["plain"]()
    print(f"{cfg.model}, {len(ids)} clients x {len(indices[0])} samples, batch {spec.batch_size}, "
          f"{spec.epochs} epoch(s), {torch.get_num_threads()} thread(s), best of {args.reps}")
    print(f"{'':12s} {'s/round':>8s} {'plain/this':>10s} {'first round s':>14s} {'max|w - plain|':>15s}")
    for name, fn in fns.items():
        diff = (fn() - ref).abs().max().item()
        print(f"{name:12s} {best[name]:8.3f} {best['plain'] / best[name]:10.3f} {first[name]:14.1f} {diff:15.1e}")


if __name__ == "__main__":
    main()
