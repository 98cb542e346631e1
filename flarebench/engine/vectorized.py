"""The vectorized engine: all K clients of a round train together on one stacked ``[K, P]`` tensor.

Each local step evaluates ``vmap(grad(loss + penalty))`` over the clients' rows of ``theta`` and
their minibatches ``[K, B, ...]`` (``torch.func``: functional_call on views of a flat vector, the same
``data_loss`` as the sequential engine). The math is the sequential engine's, client by client:

- the same batches (``sequential.client_plan``): the same order, the same boundaries;
- clients with fewer steps simply stop: clients are sorted by step count (descending), so the clients
  still training at step s are a prefix of the stack and the optimizer updates only that prefix;
- a step where active clients hold batches of different sizes (a last partial batch) is split into one
  vmapped call per batch size, so every client's loss is the exact mean over its own batch;
- the regularizer's penalty is vmapped with each client's Anchor row, active for steps < anchor.steps
  (every client is at local step s at global step s, so "active" is the same for all of them).

Results equal the sequential engine's up to float rounding (batched kernels sum in another order).
Dropout draws differ (one vmapped draw per step instead of one per client), so equality with dropout
is only in distribution. ``client_chunk`` trains the clients in chunks of that many (memory bound).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import grad_and_value, vmap

from ..flat import Layout
from ..methods.regularizers import Anchor, Regularizer
from .sequential import ClientPlan, Engine, LocalSpec, step_objective


class VectorizedEngine(Engine):
    """Local training of K clients at once (``torch.func.vmap`` over the client dimension)."""

    name = "vectorized"

    def __init__(self, model: nn.Module, layout: Layout, regularizer: Regularizer, client_chunk: int | None = None, compile: bool = False):
        """``client_chunk``: clients per vmapped batch (None: all); ``compile``: torch.compile the step."""
        super().__init__(model, layout, regularizer, compile)
        self.client_chunk = client_chunk
        self.randomness = "different"  # dropout (module or functional): independent draws per client; no-op otherwise
        self._step_fns: dict[tuple[bool, bool], object] = {}

    # ------------------------------------------------------------------ one vmapped step
    def _step_fn(self, penalized: bool, weighted: bool):
        """``(theta [n,P], x [n,b,...], y [n,b], target, weight, tau) -> (grad [n,P], loss [n])``."""
        key = (penalized, weighted)
        if key in self._step_fns:
            return self._step_fns[key]
        total = step_objective(self.model, self.layout, self.regularizer, penalized)
        in_dims = (0, 0, 0, 0 if penalized else None, 0 if weighted else None, None)
        fn = vmap(grad_and_value(total, has_aux=True), in_dims=in_dims, randomness=self.randomness)
        if self.compile:
            fn = torch.compile(fn, dynamic=None)
        self._step_fns[key] = fn
        return fn

    # ------------------------------------------------------------------ training
    def _train(self, w, x, y, plans, anchor, spec, momentum):
        """All clients, most steps first, ``client_chunk`` at a time (``Engine.train``'s contract)."""
        K, P = len(plans), w.numel()
        order = sorted(range(K), key=lambda k: -len(plans[k].sizes))  # stable: most steps first
        out = torch.empty(K, P, dtype=w.dtype, device=w.device)
        losses: list[list[float]] = [[] for _ in range(K)]  # per client: its step losses
        chunk = self.client_chunk or K
        for start in range(0, K, chunk):
            ks = order[start : start + chunk]
            theta, step_losses = self._train_chunk(w, x, y, [plans[k] for k in ks], ks, anchor, spec, momentum)
            out.index_copy_(0, torch.tensor(ks, device=w.device), theta)
            for j, k in enumerate(ks):
                losses[k] = step_losses[j, : len(plans[k].sizes)].tolist()
        return out, losses

    def _train_chunk(self, w, x, y, plans: list[ClientPlan], ks: list[int], anchor: Anchor | None, spec: LocalSpec, momentum):
        """Train the clients ``ks`` (sorted by step count, descending). Returns ``theta`` ``[n, P]``, losses ``[n, S]``."""
        n, P, B = len(ks), w.numel(), spec.batch_size
        dev = w.device
        steps = [len(p.sizes) for p in plans]
        S = steps[0] if steps else 0
        rows = torch.zeros(n, S, B, dtype=torch.long, device=dev)
        for j, p in enumerate(plans):
            rows[j, : steps[j]] = p.rows
        sel = torch.tensor(ks, device=dev)
        theta = w.unsqueeze(0).repeat(n, 1)
        opt = spec.optimizer
        buf = None
        if opt.momentum:
            buf = momentum.index_select(0, sel) if momentum is not None else torch.zeros(n, P, dtype=w.dtype, device=dev)
        target = weight = None
        tau = 0.0
        if anchor is not None:
            target = anchor.target.index_select(0, sel)
            weight = None if anchor.weight is None else anchor.weight.index_select(0, sel)
            tau = anchor.tau
        step_losses = torch.zeros(n, S, dtype=torch.float32, device=dev)
        active = n
        for s in range(S):
            while active and steps[active - 1] <= s:
                active -= 1  # clients are sorted by step count: the ones still training are a prefix
            penalized = anchor is not None and anchor.active(s)
            fn = self._step_fn(penalized, weight is not None)
            sizes = [plans[j].sizes[s] for j in range(active)]
            groups: dict[int, list[int]] = {}
            for j, b in enumerate(sizes):
                groups.setdefault(b, []).append(j)
            if len(groups) == 1:  # the common case: one batch size, the whole prefix at once
                b = sizes[0]
                r = rows[:active, s, :b]
                grad, (_, loss) = fn(
                    theta[:active], x[r], y[r],
                    None if target is None else target[:active], None if weight is None else weight[:active], tau,
                )
                step_losses[:active, s] = loss.detach()
            else:  # some clients are at a last partial batch: one call per batch size, exact means
                grad = torch.empty(active, P, dtype=w.dtype, device=dev)
                for b, js in groups.items():
                    g = torch.tensor(js, device=dev)
                    r = rows[g, s, :b]
                    grad_g, (_, loss) = fn(
                        theta[g], x[r], y[r],
                        None if target is None else target[g], None if weight is None else weight[g], tau,
                    )
                    grad.index_copy_(0, g, grad_g)
                    step_losses[g, s] = loss.detach()
            opt.step(theta[:active], grad, buf[:active] if buf is not None else None)
        if buf is not None and momentum is not None:
            momentum.index_copy_(0, sel, buf)
        return theta, step_losses
