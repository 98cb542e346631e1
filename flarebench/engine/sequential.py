"""The sequential engine: clients train one after another on one functional model.

Parameters are a flat ``[P]`` tensor; the model is evaluated with ``torch.func.functional_call``
on views into it, so the same loss serves the vectorized engine. What every engine shares is here too:
:class:`LocalSpec`, the clients' batches (:func:`client_plan`), the step's objective and :class:`Engine`
(``train``: the contract, and the loss sums added up in one order for every engine).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value

from ..flat import Layout
from ..methods.regularizers import Anchor, Regularizer
from .optim import FlatSGD
from .seeds import generator


@dataclass
class LocalSpec:
    """How a client trains: epochs, batch size, optimizer, data shuffling."""

    epochs: int
    batch_size: int
    optimizer: FlatSGD
    shuffle: bool
    seed: int


def batch_order(num_samples: int, spec: LocalSpec, round_idx: int, client: int, epoch: int) -> torch.Tensor:
    """Sample order of one local epoch (seeded by run seed, round, client, epoch)."""
    if not spec.shuffle:
        return torch.arange(num_samples)
    return torch.randperm(num_samples, generator=generator(spec.seed, "shuffle", round_idx, client, epoch))


def data_loss(model: nn.Module, layout: Layout, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the model with flat weights ``theta`` ``[P]`` on a batch."""
    logits = functional_call(model, layout.unflatten(theta), (x,))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def step_objective(model: nn.Module, layout: Layout, regularizer: Regularizer, penalized: bool):
    """``(theta [P], x, y, target, weight, tau) -> (total, data loss)``: one local step's objective, data
    loss plus the regularizer's penalty when ``penalized``, as a pure function for ``torch.func``."""
    penalty = regularizer.penalty

    def total(theta, xb, yb, target, weight, tau):
        loss = data_loss(model, layout, theta, xb, yb)
        if penalized:
            return loss + penalty(theta, target, weight, tau), loss
        return loss, loss

    return total


def mean_loss(sums: list[tuple[float, int]]) -> float:
    """The round's mean local loss from per-client ``(loss sum, samples)``, added client by client in
    order: the same expression on every backend (a Flower server receives the same per-client sums)."""
    return sum(s for s, _ in sums) / max(sum(n for _, n in sums), 1)


@dataclass
class ClientPlan:
    """One client's local training: ``rows`` int64 ``[S, B]`` sample rows per step (a last partial batch padded
    with the client's first row: padded entries are never read) and ``sizes``, the real batch size per step."""

    rows: torch.Tensor
    sizes: list[int]


def client_plan(idx: torch.Tensor, spec: LocalSpec, round_idx: int, cid: int) -> ClientPlan:
    """The batches of client ``cid`` (rows ``idx`` of the training set) in a round: for each epoch,
    :func:`batch_order`, cut into batches of ``spec.batch_size`` (the last may be smaller)."""
    n, B = len(idx), spec.batch_size
    full, rest = divmod(n, B)
    per_epoch = [B] * full + ([rest] if rest else [])
    blocks = []
    for epoch in range(spec.epochs):
        rows = idx[batch_order(n, spec, round_idx, cid, epoch).to(idx.device)]
        if rest:
            rows = torch.cat([rows, rows[:1].expand(B - rest)])
        blocks.append(rows.view(-1, B))
    return ClientPlan(torch.cat(blocks), per_epoch * spec.epochs)


class Engine(ABC):
    """What a local-training engine does (:class:`SequentialEngine`, ``vectorized.VectorizedEngine``):
    :meth:`train`, the same contract and results up to float rounding. An engine implements ``_train``."""

    name = ""

    def __init__(self, model: nn.Module, layout: Layout, regularizer: Regularizer, compile: bool = False):
        self.model, self.layout, self.regularizer = model, layout, regularizer
        self.compile = compile

    def train(
        self,
        w: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        client_indices: list[torch.Tensor],
        client_ids: list[int],
        anchor: Anchor | None,
        spec: LocalSpec,
        round_idx: int,
        momentum: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[tuple[float, int]]]:
        """Train each client from ``w`` ``[P]``; returns final weights ``[K, P]`` and, per client, the sum of
        its steps' data loss x batch size and its sample count (:func:`mean_loss` of them: the round's loss).

        ``client_indices[k]``: int64 rows of ``x``/``y`` held by client k; ``momentum``: ``[K, P]``
        buffers to start from and update in place (zeros = fresh optimizer), or None.
        """
        self.model.train()
        plans = [client_plan(idx, spec, round_idx, cid) for cid, idx in zip(client_ids, client_indices)]
        out, step_losses = self._train(w, x, y, plans, anchor, spec, momentum)
        sums = []  # client by client, step by step, in Python floats: the same sums from every engine
        for values, plan in zip(step_losses, plans):
            loss_sum, loss_count = 0.0, 0
            for value, size in zip(values, plan.sizes):
                loss_sum += value * size
                loss_count += size
            sums.append((loss_sum, loss_count))
        return out, sums

    @abstractmethod
    def _train(self, w, x, y, plans: list[ClientPlan], anchor: Anchor | None, spec: LocalSpec,
               momentum: torch.Tensor | None) -> tuple[torch.Tensor, list[list[float]]]:
        """Final weights ``[K, P]`` and each client's data loss per step (mean over its batch)."""


class SequentialEngine(Engine):
    """Local training of K clients, one at a time.

    ``compile``: run each step's gradient through ``torch.compile(grad_and_value(objective))`` instead of
    eager autograd (``flarebench bench --compile`` only: on CPU it did not pay, see the README).
    """

    name = "sequential"

    def __init__(self, model: nn.Module, layout: Layout, regularizer: Regularizer, compile: bool = False):
        super().__init__(model, layout, regularizer, compile)
        self._objectives = {p: step_objective(model, layout, regularizer, p) for p in (False, True)}
        self._step_fns: dict[bool, object] = {}

    def _compiled_step(self, penalized: bool):
        """``(theta [P], x, y, target, weight, tau) -> (grad [P], (total, data loss))``, compiled once per flag."""
        if penalized not in self._step_fns:
            fn = grad_and_value(self._objectives[penalized], has_aux=True)
            self._step_fns[penalized] = torch.compile(fn, dynamic=None)
        return self._step_fns[penalized]

    def _train(self, w, x, y, plans, anchor, spec, momentum):
        out = torch.empty(len(plans), w.numel(), dtype=w.dtype, device=w.device)
        losses = []
        for k, plan in enumerate(plans):
            theta = w.clone().requires_grad_(True)
            buf = momentum[k] if momentum is not None else torch.zeros_like(w)
            row = anchor.rows(k) if anchor is not None else None
            values = []
            for step, size in enumerate(plan.sizes):
                rows = plan.rows[step, :size]
                xb, yb = x[rows], y[rows]
                penalized = row is not None and row.active(step)
                args = (row.target, row.weight, row.tau) if penalized else (None, None, 0.0)
                if self.compile:
                    grad, (_, loss) = self._compiled_step(penalized)(theta.detach(), xb, yb, *args)
                else:
                    total, loss = self._objectives[penalized](theta, xb, yb, *args)
                    (grad,) = torch.autograd.grad(total, theta)
                spec.optimizer.step(theta.data, grad, buf if spec.optimizer.momentum else None)
                values.append(loss.item())
            out[k] = theta.detach()
            losses.append(values)
        return out, losses


@torch.no_grad()
def evaluate(model: nn.Module, layout: Layout, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) of flat weights ``w`` on ``(x, y)``."""
    model.eval()
    params = layout.unflatten(w)
    loss_sum, correct, count = 0.0, 0, 0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = functional_call(model, params, (xb,))
        logits = logits.reshape(-1, logits.shape[-1])
        yb = yb.reshape(-1)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(dim=1) == yb).sum().item()
        count += yb.numel()
    return loss_sum / count, correct / count
