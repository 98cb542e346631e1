"""Aggregators: the server's combination of the round's K decoded client messages into one update ``[P]``.

The server calls :meth:`Aggregator.aggregate_payloads` with the decoded payloads; the default
reconstructs each client's dense contribution (``compressor.contribution``) and hands the stack
``[K, P]`` to :meth:`Aggregator.aggregate`. An aggregator that works in the compressor's own space
(FetchSGD's sketches) overrides ``aggregate_payloads`` instead.

- ``weighted-mean``: FedAvg's sample-weighted mean of what the clients sent.
- ``ef21``: the server's copy of EF21's ``g_i``: ``g_i <- g_i + c_i`` for the participants, then
  the sample-weighted mean of their ``g_i`` (stateful, ``[C, P]``).
- ``majority-vote``: ``step * sign(sum_k sign(s_k))`` (signSGD with majority vote).
- ``stc``: STC's server: its own residual, the update compressed again for the downlink, catch-up bits.
- ``fetchsgd``: sums count sketches; momentum and error accumulation in sketch space; top-k unsketched.
"""

from __future__ import annotations

from typing import Any

import torch

from ..wire.codecs import POSITION_CODECS
from .compressors.base import contribution_into, reused_rows
from .registry import FLOAT32_RULE, Param, Part, in_unit_interval, positive_float32, register


class Aggregator(Part):
    """Base, and ``weighted-mean``: ``sum_k w_k s_k / sum_k w_k`` with ``w_k`` the clients' sample counts."""

    kind = "aggregator"
    name = "weighted-mean"
    summary = "sample-weighted mean of the decoded client updates (FedAvg)"
    paper = "McMahan et al., AISTATS 2017"

    def aggregate_payloads(self, compressor, payloads: list[list[Any]], broadcasts: list[Any], weights: torch.Tensor,
                           ids: list[int], ctx, device=None) -> torch.Tensor:
        """``payloads[k][p]``: client k's decoded payload of phase p -> the update ``[P]``."""
        received = reused_rows(self, "_received", len(payloads), self.ctx.num_params, device)
        for k, p in enumerate(payloads):
            contribution_into(compressor, p, broadcasts, received[k])
        return self.aggregate(received, weights, ids, ctx)

    def aggregate(self, received: torch.Tensor, weights: torch.Tensor, ids: list[int], ctx) -> torch.Tensor:
        """``received``: ``[K, P]`` dense decoded updates (the server's buffer, rewritten next round: an
        aggregator that keeps rows copies them); ``weights``: ``[K]`` -> ``[P]``."""
        w = weights.to(received.dtype) / weights.sum()
        return w @ received

    def downlink(self, update: torch.Tensor, ids: list[int], ctx) -> tuple[torch.Tensor, int, Any] | None:
        """An aggregator that compresses the server -> clients broadcast itself (STC) returns
        ``(update the clients apply [P], downlink bits, encoded broadcast or None)``; None: the run's ``--downlink``."""
        return None


register(Aggregator)


@register
class EF21Aggregator(Aggregator):
    """EF21's server side: keeps ``g_i`` ``[C, P]`` (zeros at start) in step with the clients' copies.

    ``received`` holds the decoded innovations ``c_i``; returns ``sum_k w_k g_k / sum_k w_k`` over
    the round's participants after ``g_k <- g_k + c_k`` (absent clients' ``g`` is kept, not averaged in).
    """

    name = "ef21"
    summary = "server keeps g_i <- g_i + c_i, applies the sample-weighted mean of the participants' g_i"
    paper = "Richtarik et al., NeurIPS 2021"

    def __init__(self, ctx, **params):
        super().__init__(ctx, **params)
        self.g = torch.zeros(ctx.num_clients, ctx.num_params, dtype=torch.float32, device=ctx.device)

    def aggregate(self, received, weights, ids, ctx):
        self.g[ids] = self.g[ids] + received
        return super().aggregate(self.g[ids], weights, ids, ctx)

    @classmethod
    def check(cls, parts):
        if parts.memory.name != "ef21":
            return "aggregator ef21 needs the ef21 memory (clients keep the same g_i): add --memory ef21"
        return None

    def state_dict(self):
        return {"g": self.g}

    def load_state_dict(self, state):
        self.g.copy_(state["g"])




@register
class MajorityVote(Aggregator):
    """signSGD's majority vote (Bernstein et al., ICLR 2019): ``step * sign(sum_k sign(s_k))`` ``[P]``.

    ``received`` ``[K, P]``: the decoded updates (+-1 from the ``sign`` compressor; any compressor's
    decoded values vote by their sign, a 0 abstains). One vote per client whatever its sample count
    (the paper's); a tie (possible with an even K) gives 0. ``step`` is the server's step in weight
    units per round (the run's ``server_lr``, 1 by default, multiplies it). The paper's step is for
    per-minibatch gradients; in the FL setting the sign is of the round's update d, so the default
    0.003 was chosen on the main job (mlp, mnist-embedded, 10 clients, 200 rounds: signsgd 0.9575 final
    accuracy; steps 0.0003 / 0.001 / 0.01 gave 0.9335 / 0.9555 / 0.9495; signum 0.947, 0.9505 at 0.001).
    """

    name = "majority-vote"
    summary = "step * sign(sum of the clients' signs) per entry; ties give 0 (signSGD with majority vote)"
    paper = "Bernstein et al., ICLR 2019"
    params = (Param("step", float, 0.003, "the server's step per entry and round (its learning rate)",
                    unit="weight units per round", check=positive_float32, rule=FLOAT32_RULE,
                    paper="Bernstein et al. 2018 (value chosen for the main job)"),)

    def aggregate(self, received, weights, ids, ctx):
        return self.step * torch.sign(torch.sign(received).sum(0))




@register
class STCAggregator(Aggregator):
    """STC's server side (Sattler et al., IEEE TNNLS 2019, Algorithm 2): residual, STC downlink, catch-up.

    Round r: ``x = weighted mean of the decoded client updates + R``; ``update = STC(x)`` (per tensor,
    top-k at the run's sparsity or ``sparsity`` (the paper's p_down), +-mu; the ``stc`` compressor); ``R <- x - update`` (``R`` ``[P]``, zeros at
    start); every participant applies ``update`` (``w <- w + server_lr * update`` on both sides).

    Downlink bits of round r, per participant c: the bits of this round's message (8 * its bytes), plus
    the catch-up c downloads before training when it sat out rounds (the paper's partial-participation
    caching): with ``s_c`` the first round whose update c has not applied (0 at start; r + 1 after
    taking part in r), c lacks the updates of rounds s_c .. r-1 and downloads, if s_c < r, the cheaper
    of (a) one message carrying their sum (its non-zero entries: ``position_codec`` positions, fp32
    values, header) and (b) the missed messages themselves (their bits summed). A participant of round
    r-1 downloads just this round's message. The server keeps the broadcasts (flat positions, values,
    round, bits) back to the oldest round some client still lacks; all of it is in ``state_dict``.
    """

    name = "stc"
    summary = "server residual R: update = STC(mean + R), R <- mean + R - update; clients that sat out download the missed updates"
    paper = "Sattler et al., IEEE TNNLS 2019"
    params = (Param("position_codec", str, "golomb", "positions of the downlink and of the catch-up sums (auto: the smallest)",
                    choices=("auto", *POSITION_CODECS),
                    paper="Sattler et al. 2019: Golomb"),
              Param("sparsity", float, 0.0, "downlink sparsity, fraction of entries NOT sent (0: the run's --sparsity)",
                    check=in_unit_interval, rule="in [0, 1)", paper="Sattler et al. 2019: p_down"))

    def __init__(self, ctx, **params):
        super().__init__(ctx, **params)
        import dataclasses

        from ..wire.encoder import WireFormat
        from .compressors.stc import STC

        down = dataclasses.replace(ctx, sparsity=self.sparsity) if self.sparsity > 0 else ctx
        self.stc = STC(down, position_codec=self.position_codec)
        self.catchup_wire = WireFormat(ctx.layout.sizes, self.position_codec, "fp32")
        self.residual = torch.zeros(ctx.num_params, dtype=torch.float32, device=ctx.device)
        self.synced = torch.zeros(ctx.num_clients, dtype=torch.int64)  # s_c
        i64 = dict(dtype=torch.int64)
        self.hist = {"round": torch.zeros(0, **i64), "pos": torch.zeros(0, **i64), "val": torch.zeros(0),
                     "bits_round": torch.zeros(0, **i64), "bits": torch.zeros(0, **i64)}

    def downlink(self, update, ids, ctx):
        from ..wire.encoder import Encoded

        x = update.float() + self.residual
        msg = self.stc.select(x[None], self.stc.counts)[0]
        data = self.stc.encode(msg)
        decoded = self.stc.decode(data)
        applied = self.stc.decompress(decoded, x.device)
        self.residual = x - applied
        bits = 8 * len(data)
        total = bits * len(ids) + self.catch_up(ids, ctx.round_idx)
        self._remember(ctx.round_idx, applied, bits)
        return applied, total, Encoded(data, decoded.position_codec)

    def catch_up(self, ids: list[int], round_idx: int) -> int:
        """Catch-up bits of participants ``ids`` in round ``round_idx`` (before this round's message); marks them synced."""
        synced = self.synced[ids]
        total = 0
        for s in synced.unique().tolist():
            if s < round_idx:
                total += int((synced == s).sum()) * self.missed_bits(s, round_idx)
        self.synced[ids] = round_idx + 1
        return total

    def missed_bits(self, start: int, stop: int) -> int:
        """Bits to send the updates of rounds ``start .. stop-1``: min(one sum message, the messages themselves)."""
        h = self.hist
        sequence = int(h["bits"][(h["bits_round"] >= start) & (h["bits_round"] < stop)].sum())
        if sequence == 0:
            return 0
        from ..wire.downlink import update_message

        keep = (h["round"] >= start) & (h["round"] < stop)
        total = torch.zeros(self.ctx.num_params, dtype=torch.float32).index_add_(0, h["pos"][keep], h["val"][keep])
        summed = 8 * len(self.catchup_wire.encode(update_message(self.catchup_wire.sizes, total)).data)
        return min(summed, sequence)

    def _remember(self, round_idx: int, applied: torch.Tensor, bits: int) -> None:
        """Keep round ``round_idx``'s update (non-zero entries) and bits; drop rounds every client has."""
        applied = applied.detach().float().cpu()
        pos = torch.nonzero(applied, as_tuple=True)[0]
        h, oldest = self.hist, int(self.synced.min())
        new = {"round": torch.full_like(pos, round_idx), "pos": pos, "val": applied[pos],
               "bits_round": torch.tensor([round_idx]), "bits": torch.tensor([bits])}
        for key in h:
            h[key] = torch.cat([h[key], new[key]])
        for keys, by in ((("round", "pos", "val"), "round"), (("bits_round", "bits"), "bits_round")):
            keep = h[by] >= oldest
            for key in keys if not bool(keep.all()) else ():
                h[key] = h[key][keep]

    def state_dict(self):
        return {"residual": self.residual, "synced": self.synced, **{f"hist.{k}": v for k, v in self.hist.items()}}

    def load_state_dict(self, state):
        self.residual = state["residual"].to(self.residual.device, torch.float32)
        self.synced = state["synced"].to(torch.int64).cpu()
        self.hist = {k: state[f"hist.{k}"].cpu() for k in self.hist}



# ------------------------------------------------------------------ FetchSGD (Rothchild et al., ICML 2020)


@register
class FetchSGDAggregator(Aggregator):
    """FetchSGD's server (the paper's Algorithm 1) in sketch space; needs the ``count-sketch`` compressor.

    With the clients' sketches ``S_k`` ``[rows, columns]`` and sample weights ``w_k``::

        S    = sum_k w_k S_k / sum_k w_k
        S_u <- rho S_u + S                 momentum, in sketch space
        S_e <- S_e + S_u                   error accumulation, in sketch space
        Delta = top-k of U(S_e)            k heavy hitters (compressor.k, from --sparsity), their sketch estimates
        reset = zero:     S_u, S_e <- 0 in the cells where S(Delta) != 0 (the authors' code)
        reset = subtract: S_e <- S_e - S(Delta), S_u kept (the paper's Algorithm 1)
        returns Delta [P]

    The paper's learning rate eta (``S_e += eta S_u``) is the run's ``--server-lr``, applied to Delta by
    the server: for a constant lr the same run (S_e scales with eta and top-k commutes with scaling).
    The values applied are the sketch's estimates: the paper's optional second round trip for the
    exact values of the k entries is not made. ``S_u``, ``S_e`` are the aggregator's state; clients keep none.

    Setting: the paper's clients send the sketch of one minibatch gradient, with no local momentum
    (the authors' code asserts ``local_momentum == 0`` with the error kept at the server), and ``rho = 0.9`` is the only
    momentum. Here S_k sketches a round's local update, which local momentum SGD (the run's
    ``--momentum``) already produced: ``rho = 0.9`` on top of it is momentum twice, as DGC's correction
    was, and on the main job it diverges at ``--sparsity 0.999`` whatever the sketch's size (0.1495 with a
    5 x 6,080 sketch; 0.937 with ``rho = 0``). The ``fetchsgd`` preset therefore sets ``rho = 0``;
    ``-p aggregator.rho=0.9`` is the paper's.
    """

    name = "fetchsgd"
    summary = "FetchSGD: sum sketches, momentum and error accumulation in sketch space, apply the top-k heavy hitters"
    paper = "Rothchild et al., ICML 2020"
    params = (
        Param("rho", float, 0.9, "momentum of the sketched updates (S_u <- rho S_u + S)", check=in_unit_interval,
               rule="in [0, 1)", paper="Rothchild et al. 2020"),
        Param("reset", str, "zero", "what applying Delta does to S_u and S_e: zero = zero both where S(Delta) != 0 "
               "(authors' code); subtract = S_e -= S(Delta) (paper's Algorithm 1)", choices=("zero", "subtract"),
               paper="Rothchild et al. 2020"),
    )

    def __init__(self, ctx, **params):
        super().__init__(ctx, **params)
        self.u: torch.Tensor | None = None  # S_u [rows, columns], allocated at the first round
        self.e: torch.Tensor | None = None  # S_e [rows, columns]

    @classmethod
    def check(cls, parts):
        if parts.compressor.name != "count-sketch":
            return "aggregator fetchsgd works in sketch space: it needs --compressor count-sketch"
        if getattr(parts.memory, "error_feedback", False):
            return "aggregator fetchsgd keeps the error in sketch space at the server (clients keep none): use --memory none"
        return None

    def aggregate_payloads(self, compressor, payloads, broadcasts, weights, ids, ctx, device=None):
        tables = torch.stack([p[0] for p in payloads]).to(device=device, dtype=torch.float32)  # [K, rows, columns]
        w = weights.to(device=device, dtype=torch.float32)
        s = torch.einsum("k,krc->rc", w / w.sum(), tables)
        if self.u is None or self.u.shape != s.shape:
            self.u, self.e = torch.zeros_like(s), torch.zeros_like(s)
        self.u = self.u.to(s.device).mul_(self.rho).add_(s)
        self.e = self.e.to(s.device).add_(self.u)
        idx, vals = compressor.heavy_hitters(self.e)
        applied = compressor.sketch_entries(idx, vals)
        if self.reset == "zero":
            touched = applied != 0
            self.e[touched] = 0.0
            self.u[touched] = 0.0
        else:
            self.e.sub_(applied)
        out = torch.zeros(compressor.num_params, dtype=torch.float32, device=s.device)
        out[idx] = vals
        return out

    def state_dict(self):
        return {} if self.u is None else {"u": self.u, "e": self.e}

    def load_state_dict(self, state):
        if "u" in state:
            self.u = state["u"].float().clone()
            self.e = state["e"].float().clone()


__all__ = ["Aggregator", "EF21Aggregator", "MajorityVote", "STCAggregator", "FetchSGDAggregator"]
