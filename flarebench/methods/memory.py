"""Memories (GRACE's 'memory'): what a client adds to its update before compressing, and keeps after.

A memory's per-client state is explicit: :meth:`Memory.init_state` gives one client's tensors (each
``[P]`` float32); the round passes the participating clients' rows stacked, ``state[name]`` ``[K, P]``,
and the memory updates them in place. Where the rows live is the backend's business (the local
backend keeps ``[C, P]`` per name; a Flower node keeps its own ``[1, P]``), so a client that sits a
round out keeps its memory.

- ``none``: ``v = d``; nothing kept.
- ``residual`` (EC / top-k EF): ``v = d + A_i``; after sending ``s``: ``A_i <- v - s``.
- ``ef21`` (Richtarik et al. 2021): ``v = d - g_i``; after sending ``c = C(v)``: ``g_i <- g_i + c``.
  The server keeps the same ``g_i`` (aggregation.EF21Aggregator), so only ``c`` travels.
- ``momentum`` (signum): ``m_i <- beta m_i + (1 - beta) d``; ``v = m_i``; not error feedback.
- ``dgc``: DGC's momentum correction with factor masking and optional clipping (see the class).

The error-feedback invariant of the EF memories: after ``update``, ``v == sent + remainder`` where
the remainder is what the memory carries into the next round (tests: test_methods.py, test_run.py,
test_dgc_stc.py and test_sign_compressors.py check it).
"""

from __future__ import annotations

import torch

from .registry import FLOAT32_MAX, Param, Part, float32_or_zero, in_unit_interval, register

State = dict[str, torch.Tensor]


class Memory(Part):
    """Base of the memories; also the ``none`` memory: no error feedback, no state."""

    kind = "memory"
    name = "none"
    summary = "no memory: the client compresses its update d as it is"
    error_feedback = False  # whether what was not sent is carried to later rounds
    has_residual = False  # whether residual() gives the unsent remainder (FLARE's anchor needs it)

    def init_state(self, num_params: int) -> State:
        """One client's state at the start of the run: ``{name: [P] float32}``."""
        return {}

    def compensate(self, d: torch.Tensor, state: State, ctx) -> torch.Tensor:
        """``d`` ``[K, P]`` local updates of the round's clients -> ``v`` ``[K, P]`` to compress."""
        return d

    def update(self, v: torch.Tensor, sent: torch.Tensor, state: State, ctx) -> None:
        """After compressing ``v``; ``sent`` ``[K, P]`` is exactly what the server decoded (the engine's buffer,
        rewritten next round: copy what you keep). Updates ``state`` in place."""

    def residual(self, state: State) -> torch.Tensor | None:
        """``[K, P]`` the unsent remainder (FLARE's accumulator A_i), or None when the memory has none."""
        return None


register(Memory)


@register
class ResidualMemory(Memory):
    """EC's accumulator ``A_i`` (zeros at start): ``v = d + A_i``; ``A_i <- v - sent``."""

    name = "residual"
    summary = "error feedback: v = d + A, A <- v - sent (EC)"
    paper = "Seide et al. 2014; Stich et al., NeurIPS 2018; Karimireddy et al., ICML 2019"
    error_feedback = has_residual = True

    def init_state(self, num_params):
        return {"acc": torch.zeros(num_params, dtype=torch.float32)}

    def compensate(self, d, state, ctx):
        return d + state["acc"]

    def update(self, v, sent, state, ctx):
        state["acc"].copy_(v - sent)

    def residual(self, state):
        return state["acc"]


@register
class EF21Memory(Memory):
    """EF21's client-side estimate ``g_i`` of its own update (zeros at start): ``v = d - g_i``; ``g_i <- g_i + sent``.

    ``residual`` is None: ``g_i`` is not an unsent remainder, so FLARE's anchor does not apply.
    Needs the ``ef21`` aggregator (the server's copy of ``g_i``).
    """

    name = "ef21"
    summary = "EF21: compress d - g, g <- g + sent (server keeps the same g)"
    paper = "Richtarik et al., NeurIPS 2021"
    error_feedback = True

    def init_state(self, num_params):
        return {"g": torch.zeros(num_params, dtype=torch.float32)}

    def compensate(self, d, state, ctx):
        return d - state["g"]

    def update(self, v, sent, state, ctx):
        state["g"].add_(sent)

    @classmethod
    def check(cls, parts):
        if parts.aggregator.name != "ef21":
            return "memory ef21 needs the ef21 aggregator (the server keeps the same g_i): add --aggregator ef21"
        return None


@register
class MomentumMemory(Memory):
    """Client momentum across rounds (signum): ``m_i <- beta m_i + (1 - beta) d``; compresses ``v = m_i``.

    Not error feedback: ``m_i`` is kept whatever was sent.
    """

    name = "momentum"
    summary = "client momentum over rounds: m <- beta m + (1 - beta) d, compress m (signum)"
    paper = "Bernstein et al., ICML 2018 (signum)"
    params = (Param("beta", float, 0.9, "momentum factor", check=in_unit_interval, rule="in [0, 1)", paper="Bernstein et al. 2018"),)

    def init_state(self, num_params):
        return {"m": torch.zeros(num_params, dtype=torch.float32)}

    def compensate(self, d, state, ctx):
        state["m"].mul_(self.beta).add_(d, alpha=1.0 - self.beta)
        return state["m"].clone()


@register
class DGCMemory(Memory):
    """Deep Gradient Compression's momentum correction (Lin et al., ICLR 2018), on the round's update.

    ``d`` (optionally clipped to l2 norm ``clip``) -> ``u <- m u + d``; ``v <- v + u``; compress ``v``.
    After sending: momentum factor masking, ``u`` and ``v`` zeroed where entries were sent
    (``sent != 0``), i.e. ``v <- v - sent`` there. ``m`` = 0 is plain error feedback.
    Deviation: DGC clips each local gradient; here ``clip`` bounds the round's update d (per client).
    """

    name = "dgc"
    summary = "DGC: u <- m u + d, v <- v + u, compress v, zero u and v where sent (momentum factor masking)"
    paper = "Lin et al., ICLR 2018"
    error_feedback = has_residual = True
    params = (
        Param("momentum", float, 0.9, "momentum correction factor m", check=in_unit_interval, rule="in [0, 1)", paper="Lin et al. 2018"),
        Param("clip", float, 0.0, "clip the round's update d to this l2 norm per client (0: no clipping)", unit="l2 norm",
              check=float32_or_zero, rule=f"in [0, {FLOAT32_MAX:.3g}] (a float32)"),
    )

    def init_state(self, num_params):
        return {"u": torch.zeros(num_params, dtype=torch.float32), "v": torch.zeros(num_params, dtype=torch.float32)}

    def compensate(self, d, state, ctx):
        if self.clip > 0:
            norms = d.norm(dim=1, keepdim=True)
            d = d * torch.clamp(self.clip / norms.clamp_min(1e-30), max=1.0)
        state["u"].mul_(self.momentum).add_(d)
        state["v"].add_(state["u"])
        return state["v"].clone()

    def update(self, v, sent, state, ctx):
        state["v"].copy_(v - sent)  # = v zeroed where sent (exactly so with a lossless value codec)
        state["u"].masked_fill_(sent != 0, 0.0)

    def residual(self, state):
        return state["v"]


__all__ = ["Memory", "ResidualMemory", "EF21Memory", "MomentumMemory", "DGCMemory", "State"]
