"""Which local-training engine a run uses: ``--engine sequential | vectorized | auto``.

``auto`` predicts a round of local training for both engines on the run's shape (one and then up
to three local steps per client, extrapolated to the round's step count: :func:`round_estimate`; on
throwaway copies of the weights, with the global RNG saved and restored, so the run's results do
not depend on the timing), picks the faster, logs the choice, and caches it per shape: in-process
and in a small JSON file (``~/.cache/flarebench/engine-choice.json``; env
``FLAREBENCH_ENGINE_CACHE`` = another path, or ``off``). The choice goes into config.json
(``engine_resolved``).

Models that vmap cannot batch well (nn.GRU/LSTM/RNN: the fused kernel has no batching rule and
vmap loops over clients; BatchNorm: in-place running statistics) fall back to sequential with a
logged reason.
"""

from __future__ import annotations

import json
import logging
import os
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..flat import Layout
from ..methods.regularizers import Regularizer
from .sequential import LocalSpec, SequentialEngine
from .vectorized import VectorizedEngine

log = logging.getLogger("flarebench.engine")

ENGINES = ("auto", "sequential", "vectorized")
CACHE_ENV = "FLAREBENCH_ENGINE_CACHE"
_MEMO: dict[str, dict] = {}  # shape key -> cache entry, for this process


@dataclass
class EngineChoice:
    """What ``--engine`` resolved to, and why (written to config.json as ``engine_resolved``)."""

    requested: str
    engine: str  # sequential | vectorized
    reason: str
    client_chunk: int | None = None  # vectorized: clients per vmapped batch (None: all)
    timings_s: dict[str, float] | None = None  # auto: seconds of one warm-up step per client, per engine
    key: str | None = None  # auto: the shape the choice is cached under

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for logs, e.g. ``vectorized (auto: measured sequential 0.12 s, vectorized 0.03 s)``."""
        chunk = f", client chunk {self.client_chunk}" if self.engine == "vectorized" and self.client_chunk else ""
        return f"{self.engine} ({self.requested}: {self.reason}{chunk})"


def vectorization_blocker(model: nn.Module) -> str | None:
    """Why the vectorized engine should not run this model, or None when it can."""
    for name, m in model.named_modules():
        if isinstance(m, nn.RNNBase):
            return f"{name or 'model'} is nn.{type(m).__name__}: its fused kernel has no vmap batching rule (vmap would loop over clients)"
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            return f"{name or 'model'} is nn.{type(m).__name__}: it updates running statistics in place, which vmap cannot batch"
    return None


MARGIN = 0.10  # another engine must be predicted this much faster than sequential to be picked


def choose(timings: dict[str, float], margin: float = MARGIN) -> str:
    """The engine with the smallest predicted time, counting sequential's as ``1 / (1 + margin)`` of it:
    sequential stays unless another is predicted more than ``margin`` faster (predicted regret <= margin).

    Sequential is the reference engine; a predicted gain under ``margin`` is within the probe's
    noise on a shared CPU (repeated rounds of one engine vary by 10-30% there), and taking it risks
    a slower run more than it promises a faster one.
    """
    def cost(n: str) -> float:
        return timings[n] / (1.0 + margin) if n == "sequential" else timings[n]

    return min(sorted(timings), key=lambda n: (cost(n), n != "sequential"))


# ---------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    engines: dict[str, object],
    w: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    client_indices: list[torch.Tensor],
    regularizer: Regularizer,
    spec: LocalSpec,
    steps: int = 1,
    reps: int = 3,
    warmup: bool = True,
) -> dict[str, float]:
    """Seconds for ``steps`` local steps of every client, per engine (best of ``reps``, after a warm-up call).

    Runs on a copy of ``w`` with a zero residual, one epoch, ``steps * B`` samples per client; the
    global RNG is restored afterwards, so nothing the run draws later changes.
    """
    device = w.device
    K, P = len(client_indices), w.numel()
    sub = [idx[: min(len(idx), steps * spec.batch_size)] for idx in client_indices]
    short = LocalSpec(1, spec.batch_size, spec.optimizer, spec.shuffle, spec.seed)
    ids = list(range(K))
    w0 = w.detach().clone()
    best = {name: float("inf") for name in engines}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        anchor = regularizer.anchor(w0, torch.zeros(K, P, dtype=w0.dtype, device=device), 0, K)
        for rep in range(0 if warmup else 1, reps + 1):
            for name, engine in engines.items():
                _sync(device)
                t0 = time.perf_counter()
                engine.train(w0, x, y, sub, ids, anchor, short, 0, None)
                _sync(device)
                if rep:  # rep 0 is the warm-up
                    best[name] = min(best[name], time.perf_counter() - t0)
    return best


def round_estimate(
    engines: dict[str, object],
    w: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    client_indices: list[torch.Tensor],
    regularizer: Regularizer,
    spec: LocalSpec,
    reps: int = 2,
) -> dict[str, float]:
    """Predicted seconds of one round's local training per engine: ``t1 + (S - 1) * slope``.

    ``t1``: every client's first local step (with the engine's per-round set-up, e.g. stacking the
    clients' batches); ``slope``: the cost of one more step, from timing ``m = min(S, 3)`` steps;
    ``S``: local epochs x the most batches any client has. Timing one step alone would charge the
    vectorized engine's set-up to a single step and undervalue it on rounds of many steps.
    """
    steps = spec.epochs * max(math.ceil(len(i) / spec.batch_size) for i in client_indices)
    one = measure(engines, w, x, y, client_indices, regularizer, spec, steps=1, reps=reps)
    m = min(steps, 3)
    if m == 1:
        return one
    more = measure(engines, w, x, y, client_indices, regularizer, spec, steps=m, reps=reps, warmup=False)
    return {n: one[n] + (steps - 1) * max(0.0, more[n] - one[n]) / (m - 1) for n in engines}


def auto_chunk(engine: VectorizedEngine, w, x, y, client_indices, regularizer: Regularizer, spec: LocalSpec) -> int | None:
    """Clients per vmapped batch: None (all) off CUDA; on CUDA, from a measured 2-client step and free memory.

    Budget: half the free memory (the round keeps ``[K, P]`` tensors of its own outside the engine).
    """
    device = w.device
    K = len(client_indices)
    if device.type != "cuda" or K <= 2:
        return None
    n = 2
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    probe = VectorizedEngine(engine.model, engine.layout, regularizer, None)
    measure({"probe": probe}, w, x, y, client_indices[:n], regularizer, spec, steps=1, reps=0)
    per_client = max(1, (torch.cuda.max_memory_allocated(device) - base) / n)
    free, _ = torch.cuda.mem_get_info(device)
    chunk = int(0.5 * free // per_client)
    return None if chunk >= K else max(1, chunk)


# ---------------------------------------------------------------------- the cache
def cache_path() -> Path | None:
    """The JSON cache file, or None when caching to disk is off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in {"", "off", "0", "none"} else Path(value).expanduser()
    return Path("~/.cache/flarebench/engine-choice.json").expanduser()


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def lookup(key: str) -> dict | None:
    """A cached choice for ``key`` (this process first, then the file)."""
    if key in _MEMO:
        return _MEMO[key]
    path = cache_path()
    entry = _read_cache(path).get(key) if path is not None else None
    if isinstance(entry, dict) and entry.get("engine") in ("sequential", "vectorized"):
        _MEMO[key] = entry
        return entry
    return None


def store(key: str, entry: dict) -> None:
    """Remember ``entry`` for ``key`` in this process and (best effort) in the file."""
    _MEMO[key] = entry
    path = cache_path()
    if path is None:
        return
    try:
        data = _read_cache(path)
        data[key] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as e:  # a read-only home must not stop a run
        log.debug("engine cache not written: %s", e)


PROBE_VERSION = "probe3"  # how round_estimate times; a cached choice made another way is not reused


def shape_key(model_name: str, layout: Layout, x: torch.Tensor, clients: int, spec: LocalSpec, regularizer: Regularizer, chunk: int | None) -> str:
    """What the speed of local training depends on: device, torch, model, input, K, B, regularizer, chunk."""
    device = x.device
    if device.type == "cuda":
        dev = f"cuda:{torch.cuda.get_device_name(device)}"
    else:
        dev = f"cpu:{platform.machine()}:{platform.processor()}:threads{torch.get_num_threads()}"
    shape = "x".join(str(d) for d in x.shape[1:])
    return "|".join([PROBE_VERSION, dev, f"torch{torch.__version__}", model_name, f"P{layout.num_params}", f"in{shape}",
                     f"K{clients}", f"B{spec.batch_size}", f"reg:{regularizer.name}", f"chunk{chunk or 'all'}"])


# ---------------------------------------------------------------------- the factory
def build_engine(cfg, model: nn.Module, layout: Layout, regularizer: Regularizer, x, y, client_indices, spec: LocalSpec):
    """The engine for ``cfg.engine`` and the :class:`EngineChoice` saying why. ``x`` is on the run's device."""
    requested = cfg.engine
    sequential = SequentialEngine(model, layout, regularizer)
    if requested == "sequential":
        return sequential, EngineChoice(requested, "sequential", "as requested")
    blocker = vectorization_blocker(model)
    if blocker:
        choice = EngineChoice(requested, "sequential", f"fallback: {blocker}")
        (log.warning if requested == "vectorized" else log.info)("engine: %s", choice.describe())
        return sequential, choice
    K = cfg.participants()
    w = layout.flatten(model).to(x.device)
    vectorized = VectorizedEngine(model, layout, regularizer, None)
    chunk = getattr(cfg, "client_chunk", None) or auto_chunk(vectorized, w, x, y, client_indices[:K], regularizer, spec)
    vectorized.client_chunk = chunk
    if requested == "vectorized":
        return vectorized, EngineChoice(requested, "vectorized", "as requested", chunk)
    key = shape_key(cfg.model, layout, x, K, spec, regularizer, chunk)
    entry = lookup(key)
    if entry is None:
        t0 = time.perf_counter()
        timings = round_estimate({"sequential": sequential, "vectorized": vectorized}, w, x, y, client_indices[:K], regularizer, spec)
        entry = {"engine": choose(timings), "timings_s": timings, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
        store(key, entry)
        how = f"measured in {time.perf_counter() - t0:.1f} s, once per shape:"
    else:
        how = "cached"
    timings = entry.get("timings_s") or {}
    shown = ", ".join(f"{n} {t:.4g} s" for n, t in sorted(timings.items()))
    choice = EngineChoice(requested, entry["engine"], f"{how} {shown}".strip(), chunk, timings, key)
    log.info("engine: %s", choice.describe())
    return (vectorized if choice.engine == "vectorized" else sequential), choice
