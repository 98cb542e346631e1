"""``powersgd``: PowerSGD (Vogels et al., NeurIPS 2019): one power-iteration step of rank r per matrix, two phases.

Every tensor of >= 2 dims is a matrix ``M [n, m]`` (a conv kernel ``[out, in, kh, kw]`` as
``[out, in*kh*kw]``), compressed at rank ``r_t = min(n, m, rank)``; tensors of < 2 dims (biases) travel
as they are (fp32, in phase 0), as in the reference code (epfml/powersgd, ``RankKReducer``). Clients k
have weights ``w_k`` (samples); ``M_k`` is client k's compensated update (with the ``residual`` memory:
``d_k + e_k``). One round, every transfer counted:

    round start  server -> each participant  Q [m, r] per matrix: the weighted mean of last round's Q_k
                                             (warm start). Round 0, or warm_start = false: Q ~ N(0, 1) drawn
                                             from (seed, round) on both sides: nothing travels.
    phase 0      client k -> server          P_k = M_k Q [n, r] per matrix, and the vectors
                 server                      P_hat = orthonormalise(sum_k w_k P_k / sum_k w_k) (Gram-Schmidt, eps 1e-8)
    phase 1      server -> each participant  P_hat
                 client k -> server          Q_k = M_k^T P_hat [m, r]
    update       server                      P_hat (sum_k w_k Q_k / sum_k w_k)^T per matrix; keeps that mean Q
                                             for the next round (state_dict)

Client k's contribution (what its memory learns the server decoded) is ``P_hat Q_k^T`` (and its vectors
exactly), so the ``weighted-mean`` aggregator gives the update above (the reconstruction is linear in Q_k)
and the residual memory keeps ``e_k = M_k - P_hat Q_k^T``. The reference code keeps
``M_k - P_hat Qbar^T`` instead (every worker subtracts the all-reduced approximation). The weighted sums of
the two residuals over the participants are equal, and P-bar, Q-bar, hence the update, depend on the
clients only through ``sum_k w_k M_k``: with full participation (and no regularizer reading the residual)
the global model follows exactly the same trajectory (tests/test_powersgd_fetchsgd.py checks it). With
partial participation each client's residual stays its own, which the data-centre reference never faces.

Wire: a 2-byte tag (which of the four payloads) + fp32 values; sizes come from the model's layout, so no
size travels (nothing to over-allocate). Per participant and round, with ``r_t (n_t + m_t)`` floats per
matrix and ``n_v`` per vector:

    uplink   = 32 (sum_t r_t n_t + sum_v n_v) + 32 sum_t r_t m_t + 2 * 16 bits
    downlink = 32 sum_t r_t n_t + 16 (P_hat)  [+ 32 sum_t r_t m_t + 16 (Q), rounds with a warm-start Q]

``bound_bits``: 32 bits per float of the payload (fp32 factors; the paper states no smaller floor),
i.e. ``8 len(bytes) - 16``. Default ``rank = 2``: the paper's rank for its CIFAR-10 experiments
("Rank 2" in its tables); ``warm_start = true``: the paper's reuse of the previous Q.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import DecodeError
from ...wire.frame import PAYLOAD_MAGIC, ByteReader, ByteWriter
from ..registry import Param, PartContext, RoundContext, positive, register
from .base import Compressor, MultiPhase

KINDS = {"P": 0x50, "Q": 0x51, "Q-bcast": 0x52, "P-hat": 0x53}  # payload kind -> tag id
_BY_TAG = {v: k for k, v in KINDS.items()}
EPS = 1e-8  # Gram-Schmidt's guard against a zero column (the reference's)


@dataclass(frozen=True, eq=False)
class Factors:
    """One PowerSGD payload: ``kind`` (``P``: phase-0 uplink, P_k of every matrix then the vectors;
    ``Q``: phase-1 uplink Q_k; ``Q-bcast``: the round-start Q; ``P-hat``: the phase-1 broadcast) and its
    float32 ``values`` ``[N]`` (each matrix's factor row-major ``[n, r]`` / ``[m, r]``, in layout order)."""

    kind: str
    values: torch.Tensor

    def __eq__(self, other) -> bool:
        return isinstance(other, Factors) and self.kind == other.kind and torch.equal(self.values, other.values)


@dataclass(frozen=True)
class _Matrix:
    start: int  # in the flat [P] vector
    n: int
    m: int
    r: int


def orthonormalise(p: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt on the columns of ``p`` ``[n, r]`` (a new tensor): column i divided by
    ``||col|| + 1e-8`` then removed from the later columns (the reference's ``orthogonalize``)."""
    p = p.clone()
    for i in range(p.shape[1]):
        col = p[:, i : i + 1]
        col /= col.norm() + EPS
        if i + 1 < p.shape[1]:
            rest = p[:, i + 1 :]
            rest -= (col * rest).sum(dim=0, keepdim=True) * col
    return p


@register
class PowerSGD(MultiPhase, Compressor):
    name = "powersgd"
    family = "low-rank/sketch"
    summary = "rank-r power iteration per matrix: P = MQ up, orthonormal P-hat down, Q = M^T P-hat up; Q warm-started"
    paper = "Vogels et al., NeurIPS 2019"
    phases = 2
    payload_tags = tuple(KINDS.values())
    params = (
        Param("rank", int, 2, "rank r of every matrix's approximation (min(n, m, r) per matrix)", unit="rank",
              check=positive, rule="> 0", paper="Vogels et al. 2019 (rank 2 on CIFAR-10)"),
        Param("warm_start", bool, True, "start each round from last round's mean Q (else a fresh seeded Q, nothing sent)",
              paper="Vogels et al. 2019 (reuse of the previous Q)"),
    )

    def __init__(self, ctx: PartContext, **params):
        super().__init__(ctx, **params)
        self.layout = ctx.layout
        self.matrices: list[_Matrix] = []
        self.vectors: list[tuple[int, int]] = []  # (start, numel) of the tensors of < 2 dims
        for seg in self.layout.segments:
            if len(seg.shape) >= 2 and seg.numel > 0:
                n = seg.shape[0]
                m = seg.numel // n
                self.matrices.append(_Matrix(seg.start, n, m, min(n, m, self.rank)))
            else:
                self.vectors.append((seg.start, seg.numel))
        self.p_size = sum(x.n * x.r for x in self.matrices)  # floats of all P factors
        self.q_size = sum(x.m * x.r for x in self.matrices)  # floats of all Q factors
        self.v_size = sum(n for _, n in self.vectors)
        self.sizes = {"P": self.p_size + self.v_size, "Q": self.q_size, "Q-bcast": self.q_size, "P-hat": self.p_size}
        self.q: torch.Tensor | None = None  # server: the weighted mean Q [q_size] of the last round

    # ------------------------------------------------------------ factors <-> flat
    def _split(self, flat: torch.Tensor, side: str) -> list[torch.Tensor]:
        """``flat`` ``[..., N]`` -> per matrix ``[..., n, r]`` (side ``P``) or ``[..., m, r]`` (side ``Q``)."""
        out, at = [], 0
        for x in self.matrices:
            rows = x.n if side == "P" else x.m
            out.append(flat[..., at : at + rows * x.r].reshape(*flat.shape[:-1], rows, x.r))
            at += rows * x.r
        return out

    def _matrix(self, v: torch.Tensor, x: _Matrix) -> torch.Tensor:
        """Rows of ``v`` ``[K, P]`` -> ``[K, n, m]`` views of matrix ``x``."""
        return v[:, x.start : x.start + x.n * x.m].reshape(v.shape[0], x.n, x.m)

    def seeded_q(self, ctx: RoundContext) -> torch.Tensor:
        """The shared N(0, 1) Q ``[q_size]`` of round ``ctx.round_idx``, from (seed, round) (client and server alike)."""
        g = ctx.server_generator("powersgd-q")
        return torch.cat([torch.randn(x.m * x.r, generator=g) for x in self.matrices] or [torch.zeros(0)])

    # ------------------------------------------------------------ client side
    def compress(self, v, ctx):
        return self.compress_phase(0, v, [None], ctx)

    def compress_phase(self, phase, v, broadcasts, ctx):
        v = v.detach().float()
        K = v.shape[0]
        if phase == 0:
            bq = broadcasts[0] if broadcasts else None
            q = (bq.values if bq is not None else self.seeded_q(ctx)).to(v.device)
            parts = [(self._matrix(v, x) @ qt).reshape(K, -1) for x, qt in zip(self.matrices, self._split(q, "Q"))]
            parts += [v[:, s : s + n] for s, n in self.vectors]
            kind = "P"
        elif phase == 1:
            p_hat = broadcasts[1].values.to(v.device)
            parts = [(pt.T @ self._matrix(v, x)).transpose(1, 2).reshape(K, -1)  # M^T P-hat, as (P-hat^T M)^T: fast
                     for x, pt in zip(self.matrices, self._split(p_hat, "P"))]
            kind = "Q"
        else:
            raise ValueError(f"powersgd has 2 phases, not phase {phase}")
        flat = torch.cat(parts, dim=1) if parts else v.new_zeros(K, 0)
        flat = flat.cpu().contiguous()
        return [Factors(kind, flat[k].clone()) for k in range(K)]

    # ------------------------------------------------------------ server side
    def broadcast(self, phase, received, weights, ctx):
        if phase == 0:
            return Factors("Q-bcast", self.q.clone()) if (self.warm_start and self.q is not None) else None
        w = (weights.float() / weights.sum()).cpu()
        p_bar = sum(wk * client[0].values[: self.p_size] for wk, client in zip(w, received))
        p_hat = [orthonormalise(p) for p in self._split(p_bar, "P")]
        return Factors("P-hat", torch.cat([p.reshape(-1) for p in p_hat] or [torch.zeros(0)]))

    def end_round(self, received, broadcasts, weights, ctx):
        """Keep the weighted mean of the round's Q_k for the next round's warm start. A matrix whose mean Q has
        an all-zero column (it would stay zero for ever) gets that column from the next round's seeded draw."""
        if not self.warm_start or not self.matrices:
            return
        w = (weights.float() / weights.sum()).cpu()
        q = sum(wk * client[1].values for wk, client in zip(w, received))
        fresh = self._split(self.seeded_q(RoundContext(ctx.round_idx + 1, list(ctx.ids), ctx.seed)), "Q")
        for qt, ft in zip(self._split(q, "Q"), fresh):
            dead = qt.norm(dim=0) == 0
            if dead.any():
                qt[:, dead] = ft[:, dead]
        self.q = q.contiguous()

    writes_into = True

    def contribution(self, payloads, broadcasts, device=None, out=None):
        """``P_hat Q_k^T`` per matrix and the vectors as sent: ``[P]`` float32."""
        p_msg, q_msg = payloads
        p_hat = self._split(broadcasts[1].values.to(device), "P")
        qs = self._split(q_msg.values.to(device), "Q")
        out = self.output(device, out)  # every entry written below: a matrix block or a vector
        for x, pt, qt in zip(self.matrices, p_hat, qs):
            torch.mm(pt, qt.T, out=out[x.start : x.start + x.n * x.m].view(x.n, x.m))
        at = self.p_size
        vals = p_msg.values.to(device)
        for s, n in self.vectors:
            out[s : s + n] = vals[at : at + n]
            at += n
        return out

    def decompress(self, payload, device=None):
        raise NotImplementedError("powersgd's update needs both phases and the P-hat broadcast: use contribution()")

    # ------------------------------------------------------------ bytes
    def encode(self, payload: Factors) -> bytes:
        return ByteWriter().tag(KINDS[payload.kind]).f32(payload.values.numpy()).getvalue()

    def decode(self, data: bytes) -> Factors:
        data = bytes(data)
        if len(data) < 2 or data[0] != PAYLOAD_MAGIC or data[1] not in _BY_TAG:
            raise DecodeError("powersgd: not a powersgd payload (bad tag)")
        kind = _BY_TAG[data[1]]
        reader = ByteReader(data, "powersgd")
        reader.tag(KINDS[kind])
        if reader.remaining != 4 * self.sizes[kind]:
            raise DecodeError(f"powersgd: a {kind} payload of this model has {4 * self.sizes[kind]} value bytes, "
                              f"got {reader.remaining}")
        values = torch.from_numpy(reader.f32(self.sizes[kind]))
        reader.end()
        return Factors(kind, values)

    # ------------------------------------------------------------ accounting
    def nnz(self, payload: Factors) -> int:
        return int(payload.values.numel())

    def bound_bits(self, payload: Factors) -> float:
        return 32.0 * payload.values.numel()

    def host_bytes_bound(self, payload: Factors) -> int:
        """The factors: 4 bytes per float32 of the payload (P_k and the vectors, or Q_k)."""
        return 4 * int(payload.values.numel())

    def label(self, payload: Factors) -> str:
        return f"powersgd-{payload.kind}"

    # ------------------------------------------------------------ state
    def state_dict(self):
        return {} if self.q is None else {"q": self.q}

    def load_state_dict(self, state):
        q = state.get("q")
        self.q = None if q is None else q.detach().cpu().float().clone()


__all__ = ["PowerSGD", "Factors", "orthonormalise"]
