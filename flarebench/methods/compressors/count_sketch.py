"""``count-sketch``: FetchSGD's client payload (Rothchild et al., ICML 2020): a count sketch of the whole update.

A sketch ``S`` ``[rows, columns]`` of the flat update ``v`` ``[P]``: ``S[j, h_j(i)] += s_j(i) v_i`` for
every entry i and row j. The bucket ``h_j(i)`` (uniform in ``[0, columns)``) and sign ``s_j(i)`` (+-1)
are drawn once per row from the run seed (generator ``(seed, "count-sketch", j)``), so clients and
server share them and nothing about them travels; clients keep no state. The sketch is linear,
``S(a) + S(b) = S(a + b)``, which is what lets the server add sketches and keep momentum and error in
sketch space (aggregation.FetchSGDAggregator, the ``fetchsgd`` aggregator).

Unsketch ``U(S)``: entry i is estimated as ``median_j s_j(i) S[j, h_j(i)]``; the heavy hitters are the
``k`` entries with the largest ``|estimate|``, ``k = max(1, round(density P))`` from the run's
``--sparsity`` over the whole model (FetchSGD's top-k is global, not per tensor).

Size: ``columns = max(ceil(columns_per_k k), ceil(columns_per_entry P))``. The authors' code sizes the
sketch in absolute terms (CommEfficient: ``--num_rows 5 --num_cols 500000 --k 50000`` for the 6.5M
entries of ResNet-9 on CIFAR-10): 10 columns per heavy hitter and 0.077 columns per entry (13 entries
per cell). Their k was never below 0.77% of the model, so the two ratios agree there; at a smaller k
(``--sparsity 0.999``) 10 k columns alone would put ~100 entries in every cell and the heavy hitters
drown in collisions, so the default keeps the paper's entries per cell as a floor (``columns_per_entry
= 0`` sizes from k alone). Defaults ``rows = 5``, ``columns_per_k = 10``, ``columns_per_entry = 0.077``.
A sketch over ``MAX_CELLS`` cells is refused (ConfigError, one line) when the part is built, before
anything is written. With another aggregator (e.g. ``weighted-mean``),
:meth:`decompress` is the client's own heavy hitters, top-k of ``U(S)``.

Wire: a 2-byte tag + ``rows * columns`` float32 cells (row-major): ``32 rows columns + 16`` bits per
client and round, whatever the update; the sketch's size comes from the layout and the parameters, so
no size travels. ``bound_bits``: 32 bits per cell (fp32 cells; no smaller floor is stated).

Cost: ``rows`` scatter-adds over the P entries per client (the paper's own cost: about a quarter of a
VGG-16 training step on one CPU thread); the server's unsketch reads ``rows`` cells per entry and takes
a median. The hash table is kept as one int32 ``[rows, P]`` code per device (``2 h + sign bit``: 4 rows P
bytes). On CUDA, index_add_ sums with atomics, so sketches may differ in the last bits from run to run.
"""

from __future__ import annotations

import math

import torch

from ...engine.seeds import generator
from ...errors import ConfigError, DecodeError
from ...wire.frame import ByteReader, ByteWriter
from ..registry import Param, PartContext, non_negative, positive, register
from .base import Compressor
from .topk import CHUNK, below, positions_above, prefilter_threshold

TAG = 0x43
MAX_COLUMNS = 2**30  # the hash codes are int32 2 h + sign bit: h < 2^30
MAX_MODELS = 64  # the sketch's memory (hash codes + one sketch) is at most this many times the model's,
MIN_LIMIT_BYTES = 2**26  # or 64 MiB, whichever is larger (a small model may have an exact sketch)
MAX_CELLS = 2**28  # cells per sketch: 1 GiB of fp32 per client (and per server state S_u, S_e)


def median_of(rows: list[torch.Tensor]) -> torch.Tensor:
    """Entry-wise median of ``len(rows)`` tensors of one shape (the lower median for an even count, as
    torch.median), with min/max only (much faster than ``torch.median(dim=0)`` on CPU): a median selection
    network for 3 and 5 rows (4 and 10 min/max), an odd-even transposition sort for the others up to 9,
    torch.median above. Each picks one of its inputs, so every way gives the same value."""
    n = len(rows)
    if n == 3:
        return _median3(*rows)
    if n == 5:  # the median of 5 is the median of e and the 2nd smallest / 2nd largest of the pairs (a, b), (c, d)
        a, b, c, d, e = rows
        lo_ab, hi_ab = torch.minimum(a, b), torch.maximum(a, b)
        lo_cd, hi_cd = torch.minimum(c, d), torch.maximum(c, d)
        return _median3(e, torch.maximum(lo_ab, lo_cd), torch.minimum(hi_ab, hi_cd))
    if n > 9:
        return torch.stack(rows).median(dim=0).values
    x = list(rows)
    for p in range(n):
        for i in range(p % 2, n - 1, 2):
            x[i], x[i + 1] = torch.minimum(x[i], x[i + 1]), torch.maximum(x[i], x[i + 1])
    return x[(n - 1) // 2]


def _median3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.maximum(torch.minimum(a, b), torch.minimum(torch.maximum(a, b), c))


def sketch_columns(num_params: int, k: int, columns_per_k: float, columns_per_entry: float) -> int:
    """Columns of the sketch: ``max(ceil(columns_per_k k), ceil(columns_per_entry num_params), 1)``."""
    return max(1, math.ceil(columns_per_k * k), math.ceil(columns_per_entry * num_params))


@register
class CountSketch(Compressor):
    name = "count-sketch"
    family = "low-rank/sketch"
    summary = "count sketch [rows, columns] of the whole update (shared seeded hashes); linear, so sketches add up"
    paper = "Rothchild et al., ICML 2020 (FetchSGD); Charikar et al. 2002 (count sketch)"
    uses_sparsity = True
    payload_tags = (TAG,)
    params = (
        Param("rows", int, 5, "hash rows of the sketch (the estimate is the median over rows); "
              f"hash codes + sketch at most {MAX_MODELS} times the model's memory or 64 MiB", unit="rows",
              check=positive, rule="> 0", paper="Rothchild et al. 2020 (authors' code: 5)"),
        Param("columns_per_k", float, 10.0, "columns >= ceil(columns_per_k * k), k = heavy hitters from --sparsity",
              unit="columns per heavy hitter", check=lambda x: 0 < x <= MAX_COLUMNS, rule=f"in (0, {MAX_COLUMNS}]",
              paper="Rothchild et al. 2020 (authors' code: 500,000 columns for k = 50,000)"),
        Param("columns_per_entry", float, 0.077, "columns >= ceil(columns_per_entry * P), P = the model's entries "
              "(0: sized from k alone)", unit="columns per model entry", check=non_negative, rule=">= 0",
              paper="Rothchild et al. 2020 (authors' code: 500,000 columns for ResNet-9's 6.5M entries)"),
    )

    def __init__(self, ctx: PartContext, **params):
        super().__init__(ctx, **params)
        self.num_params = ctx.num_params
        self.seed = ctx.seed
        params = {"rows": self.rows, "columns_per_k": self.columns_per_k, "columns_per_entry": self.columns_per_entry}
        self.k, self.columns = self.shape(params, self.num_params, ctx.density)
        problem = self.size_problem(params, self.num_params, ctx.density)
        if problem:
            raise ConfigError(problem)
        self._codes: dict[str, torch.Tensor] = {}

    @staticmethod
    def shape(params: dict, num_params: int, density: float) -> tuple[int, int]:
        """``(k, columns)``: heavy hitters ``k = max(1, round(density P))`` (at most P) and the sketch's columns
        (:func:`sketch_columns`) for the parameters ``params``."""
        k = min(num_params, max(1, int(round(density * num_params))))
        return k, sketch_columns(num_params, k, params["columns_per_k"], params["columns_per_entry"])

    @classmethod
    def size_problem(cls, params: dict, num_params: int, density: float) -> str | None:
        """Why a sketch of ``params`` does not fit, or None: at most ``MAX_COLUMNS`` columns and ``MAX_CELLS`` cells,
        and its memory, int32 hash codes ``[rows, P]`` plus one float32 sketch ``[rows, columns]``, at most
        ``MAX_MODELS`` times the model's float32 ``[P]`` or ``MIN_LIMIT_BYTES``, whichever is larger."""
        rows = params["rows"]
        k, columns = cls.shape(params, num_params, density)
        need, model = 4 * rows * (num_params + columns), 4 * num_params
        if columns <= MAX_COLUMNS and need <= max(MAX_MODELS * model, MIN_LIMIT_BYTES):
            if rows * columns <= MAX_CELLS:
                return None
            return (f"count-sketch: a {rows} x {columns:,} sketch is over {MAX_CELLS:,} cells (1 GiB per client): "
                    "lower compressor.rows, columns_per_k or columns_per_entry")
        return (f"compressor {cls.name}: rows={rows}, columns_per_k={params['columns_per_k']!r}, columns_per_entry="
                f"{params['columns_per_entry']!r} make a sketch of {rows} x {columns} cells (k = {k} of the model's "
                f"{num_params} entries) and {rows} x {num_params} hash codes: {need / 2**20:.3g} MiB, more than "
                f"{MAX_MODELS} times the model ({model / 2**20:.3g} MiB) and more than {MIN_LIMIT_BYTES // 2**20} MiB"
                + (f", and more than {MAX_COLUMNS} columns" if columns > MAX_COLUMNS else "")
                + "; use fewer rows or smaller columns_per_k / columns_per_entry")

    @classmethod
    def check_run(cls, params, cfg):
        """The sketch must fit the run (:meth:`size_problem`), checked with the config, before anything is built."""
        from ...world import num_params_for

        if not params:
            return None
        return cls.size_problem(params, num_params_for(cfg), cfg.density)

    # ------------------------------------------------------------ hashes
    def codes(self, device=None) -> torch.Tensor:
        """int32 ``[rows, P]``: ``2 h_j(i) + (1 if s_j(i) = -1 else 0)``, drawn from (seed, "count-sketch", j)."""
        key = str(torch.device(device) if device is not None else "cpu")
        if key not in self._codes:
            cpu = self._codes.get("cpu")
            if cpu is None:
                rows = []
                for j in range(self.rows):
                    g = generator(self.seed, "count-sketch", j)
                    h = torch.randint(self.columns, (self.num_params,), generator=g, dtype=torch.int32)
                    s = torch.randint(2, (self.num_params,), generator=g, dtype=torch.int32)
                    rows.append(h.mul_(2).add_(s))
                cpu = self._codes["cpu"] = torch.stack(rows)
            self._codes[key] = cpu.to(device)
        return self._codes[key]

    def buckets_signs(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``h`` int64 ``[rows, P]`` and ``s`` float32 ``[rows, P]`` (+-1)."""
        c = self.codes(device).long()
        return c >> 1, 1.0 - 2.0 * (c & 1).float()

    # ------------------------------------------------------------ sketch / unsketch
    def sketch(self, v: torch.Tensor) -> torch.Tensor:
        """``v`` ``[K, P]`` (or ``[P]``) -> sketches ``[K, rows, columns]`` (or ``[rows, columns]``)."""
        single = v.dim() == 1
        v = v.detach().float().reshape(-1, self.num_params)
        codes = self.codes(v.device)
        table = torch.zeros(v.shape[0], self.rows, 2 * self.columns, dtype=torch.float32, device=v.device)
        for k in range(v.shape[0]):  # 1-D scatter-adds per client and row, CHUNK entries (int64 indices) at a time
            for j in range(self.rows):  # the sign bit picks the +/- half of each cell
                for a in range(0, self.num_params, CHUNK):
                    table[k, j].scatter_add_(0, codes[j, a : a + CHUNK].long(), v[k, a : a + CHUNK])
        table = table.view(v.shape[0], self.rows, self.columns, 2)
        out = table[..., 0] - table[..., 1]
        return out[0] if single else out

    def sketch_entries(self, positions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The sketch ``[rows, columns]`` of the vector that is ``values`` at int64 ``positions`` and 0 elsewhere."""
        codes = self.codes(values.device)[:, positions].long()
        h, s = codes >> 1, 1.0 - 2.0 * (codes & 1).float()
        out = torch.zeros(self.rows, self.columns, dtype=torch.float32, device=values.device)
        return out.scatter_add_(1, h, s * values.float())

    def estimate(self, table: torch.Tensor) -> torch.Tensor:
        """``U(S)``: float32 ``[P]``, entry i = ``median_j s_j(i) S[j, h_j(i)]`` (lower median for even rows),
        computed ``CHUNK`` entries at a time on ``table``'s device (its buffers stay small and are reused)."""
        codes = self.codes(table.device)
        signed = torch.stack([table, -table], dim=-1).reshape(self.rows, -1)  # [rows, 2 columns]: cell 2h + bit
        est = torch.empty(self.num_params, dtype=torch.float32, device=table.device)
        cells = torch.empty(self.rows, min(CHUNK, self.num_params), dtype=torch.float32, device=table.device)
        for a in range(0, self.num_params, CHUNK):
            b = min(a + CHUNK, self.num_params)
            for j in range(self.rows):  # int64 indices of one chunk: index_select's fast path on CPU
                torch.index_select(signed[j], 0, codes[j, a:b].long(), out=cells[j, : b - a])
            est[a:b] = median_of(list(cells[:, : b - a]))
        return est

    def heavy_hitters(self, table: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` (default ``self.k``) entries of largest ``|U(S)|``: sorted int64 positions ``[k]``, values ``[k]``.
        Ties (common: entries whose medians come from the same cells) go to the lowest positions, on every device.
        The k-th largest |U(S)| is found among the entries above a sampled threshold (topk.prefilter_threshold),
        or among all where fewer than k pass."""
        est = self.estimate(table)
        k = k or self.k
        cand = None
        if 16 * k <= self.num_params:
            thr = prefilter_threshold(est[None], k)[0]
            cand = positions_above(est, below(thr))  # ascending
            if cand.numel() < k:
                cand = None
        cand_mag = est.abs() if cand is None else est[cand].abs()
        kth = cand_mag.topk(k, sorted=False).values.min()
        above = torch.nonzero(cand_mag > kth).flatten()
        tied = torch.nonzero(cand_mag == kth).flatten()[: k - above.numel()]
        idx = torch.cat([above, tied]).sort().values
        if cand is not None:
            idx = cand[idx]
        return idx, est[idx]

    # ------------------------------------------------------------ the contract
    def compress(self, v, ctx):
        tables = self.sketch(v).cpu()
        return [tables[k].clone() for k in range(tables.shape[0])]

    writes_into = True

    def decompress(self, payload: torch.Tensor, device=None, out=None) -> torch.Tensor:
        """The client's own heavy hitters: top-k of ``U(S)`` as a dense ``[P]``."""
        table = payload.to(device=device, dtype=torch.float32)
        idx, vals = self.heavy_hitters(table)
        out = self.output(device, out, zero=True)
        out[idx] = vals
        return out

    def encode(self, payload: torch.Tensor) -> bytes:
        if tuple(payload.shape) != (self.rows, self.columns):
            raise ValueError(f"count-sketch: a sketch of this run is [{self.rows}, {self.columns}], got {list(payload.shape)}")
        return ByteWriter().tag(TAG).f32(payload.detach().float().cpu().numpy()).getvalue()

    def decode(self, data: bytes) -> torch.Tensor:
        reader = ByteReader(data, "count-sketch")
        reader.tag(TAG)
        cells = self.rows * self.columns
        if reader.remaining != 4 * cells:
            raise DecodeError(f"count-sketch: a sketch of this run has {4 * cells} value bytes, got {reader.remaining}")
        table = torch.from_numpy(reader.f32(cells)).view(self.rows, self.columns)
        reader.end()
        return table

    def nnz(self, payload: torch.Tensor) -> int:
        return int(payload.numel())

    def bound_bits(self, payload: torch.Tensor) -> float:
        return 32.0 * payload.numel()

    def host_bytes_bound(self, payload: torch.Tensor) -> int:
        """The sketch: 4 bytes per cell (``rows * columns`` float32), whatever P."""
        return 4 * self.rows * self.columns


__all__ = ["CountSketch"]
