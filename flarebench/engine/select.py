"""Which local-training engine a run uses: ``--engine sequential | vectorized | auto``.

``auto`` predicts a round of local training for both engines on the run's shape (one and then up
to three local steps per client, extrapolated to the round's step count: :func:`round_estimate`; on
throwaway copies of the weights, with the global RNG saved and restored, so the run's results do
not depend on the timing), picks the faster, logs the choice, and caches it per shape: in-process
and in a small JSON file (``~/.cache/flarebench/engine-choice.json``; env
``FLAREBENCH_ENGINE_CACHE`` = another path, or ``off``). The choice goes into config.json
(``engine_resolved``). The probe is bounded (:func:`probe_budget`: at most PROBE_SHARE = 5% of the
planned run as sequential rounds, never more than one sequential round), stops timing an engine as
soon as one step of it costs more than another's whole round, and says what it does on the logger
``flarebench.engine.probe`` (the CLI's status line).

The shape is what the speed depends on: device, torch, model, input, clients, batch size, chunk;
never the method. Local training is timed without any regularizer term, so two methods compared
on one shape run on the same engine (engines differ in float rounding, which would otherwise mix
into the comparison). A cache entry records when and under which conditions it was measured (torch
threads, load average); an entry that is malformed or implausible (:func:`implausible`) is measured
again, and a malformed cache file is ignored.

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
from typing import Callable

import torch
from torch import nn

from ..flat import Layout
from ..methods.regularizers import Regularizer
from .sequential import LocalSpec, SequentialEngine
from .vectorized import VectorizedEngine

log = logging.getLogger("flarebench.engine")
probe_log = logging.getLogger("flarebench.engine.probe")  # what auto's probe is doing (a status line: progress.py)
probe_log.setLevel(logging.DEBUG)  # info: the probe starts and ends; debug: each timed call

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
    timings_s: dict[str, float] | None = None  # auto: predicted seconds of one round's local training, per engine
    key: str | None = None  # auto: the shape the choice is cached under
    conditions: dict | None = None  # auto: when and under what load the timings were measured

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


def vmap_failure(model: nn.Module, x: torch.Tensor) -> str | None:
    """Why ``torch.func.vmap`` cannot run ``model`` over two stacked copies of its weights (a forward pass on
    the samples ``x``; no gradients, the RNGs untouched), or None when it can."""
    from torch.func import functional_call, vmap

    stacked = {n: torch.stack([p.detach(), p.detach()]) for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            vmap(lambda p: functional_call(model, {**p, **buffers}, (x,)), randomness="different")(stacked)
    except Exception as e:  # whatever vmap raises for this model's code
        first = (str(e).strip().splitlines() or [""])[0][:160]
        return f"vmap cannot batch the model ({type(e).__name__}: {first})"
    return None


def _is_user_model(cfg) -> bool:
    from ..references import source_of

    return source_of("model", getattr(cfg, "model", "mlp")) is not None


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
    spec: LocalSpec,
    steps: int = 1,
    reps: int = 3,
    warmup: bool = True,
) -> dict[str, float]:
    """Seconds for ``steps`` local steps of every client, per engine (best of ``reps``, after a warm-up call;
    ``reps=0``: the warm-up call only).

    Runs on a copy of ``w``, one epoch, ``steps * B`` samples per client, with no regularizer term
    (the choice must not depend on the method); the global RNG is restored afterwards, so nothing
    the run draws later changes.
    """
    device = w.device
    K = len(client_indices)
    sub = [idx[: min(len(idx), steps * spec.batch_size)] for idx in client_indices]
    short = LocalSpec(1, spec.batch_size, spec.optimizer, spec.shuffle, spec.seed)
    ids = list(range(K))
    w0 = w.detach().clone()
    best = {name: float("inf") for name in engines}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for rep in range(0 if warmup else 1, reps + 1):
            for name, engine in engines.items():
                _sync(device)
                t0 = time.perf_counter()
                engine.train(w0, x, y, sub, ids, None, short, 0, None)  # anchor None: no regularizer term
                _sync(device)
                if rep:  # rep 0 is the warm-up
                    best[name] = min(best[name], time.perf_counter() - t0)
    return best


def round_steps(client_indices: list[torch.Tensor], spec: LocalSpec) -> int:
    """Local steps of a round: local epochs x the most batches any client has."""
    return spec.epochs * max(math.ceil(len(i) / spec.batch_size) for i in client_indices)


PROBE_SHARE = 0.05  # auto's probe may take at most this share of the planned run (its predicted sequential rounds)


def probe_budget(seq_round_s: float, rounds: int, share: float = PROBE_SHARE) -> float:
    """Seconds the engine probe may spend: ``share`` of the planned run (``rounds`` sequential rounds of
    ``seq_round_s`` predicted seconds), and never more than one sequential round."""
    return min(share * max(1, rounds) * seq_round_s, seq_round_s)


def round_estimate(
    engines: dict[str, object],
    w: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    client_indices: list[torch.Tensor],
    spec: LocalSpec,
    budget_s: float | Callable[[float], float] = math.inf,
    say: Callable[..., None] | None = None,
) -> dict[str, float]:
    """Predicted seconds of one round's local training per engine: ``t1 + (S - 1) * slope``.

    ``t1``: every client's first local step (with the engine's per-round set-up, e.g. stacking the
    clients' batches; one call after a warm-up call); ``slope``: the cost of one more step, from timing
    ``m = min(S, 3)`` steps (2 where the budget allows no more); ``S``: local epochs x the most batches
    any client has. Timing one step alone would charge the vectorized engine's set-up to a single step and undervalue it on long rounds.

    Bounded: ``budget_s`` seconds in all (or a function of the first engine's predicted round, e.g.
    :func:`probe_budget`), checked before each timed call against that call's predicted cost, so the
    probe exceeds it by at most one call of one step (an engine after the first is warmed up and timed on 2
    clients first, a lower bound of its step over all clients: vmap's cost is mostly per call, so
    scaling it by clients would overstate it). Warm-up calls are not counted: they hold one-off
    costs (lazy initialisation, vmap's tracing of the model: seconds on a loaded CPU) that say nothing of
    a round, and the run pays its engine's at its first round anyway; they are reported apart. Cut short: an engine whose measured time
    already exceeds another's predicted whole round is clearly slower and is not timed further. Where
    the budget stops the slope measurement, every engine is predicted as ``S * t1`` (the same rule for
    all: the set-up is then charged to every step, which favours none but sequential, the first timed).
    ``say(text, final)``: what the probe is doing, for a status line (``final``: its last word).
    """
    say = say or (lambda text, final=False: None)
    steps = round_steps(client_indices, spec)
    t0, budget = time.perf_counter(), budget_s if not callable(budget_s) else math.inf
    one: dict[str, float] = {}
    warmups = 0.0  # seconds of warm-up calls: one-off costs (lazy initialisation, vmap's tracing), not counted

    def spent() -> float:
        return time.perf_counter() - t0 - warmups

    def warm_up(name: str, clients: list[torch.Tensor]) -> None:
        nonlocal warmups
        say(f"engine: warming {name} up on {len(clients)} clients")
        t = time.perf_counter()
        measure({name: engines[name]}, w, x, y, clients, spec, steps=1, reps=0)
        warmups += time.perf_counter() - t

    def timed(name: str, n: int, clients: list[torch.Tensor] = client_indices) -> float:
        limit = f"at most {budget:.1f} s" if math.isfinite(budget) else "no limit"
        say(f"engine: timing {name}, {n} local step{'s' if n > 1 else ''} of {len(clients)} clients "
            f"({spent():.1f} s of {limit})")
        return measure({name: engines[name]}, w, x, y, clients, spec, steps=n, reps=1, warmup=False)[name]

    def fits(cost: float) -> bool:
        return spent() + cost <= budget

    why = ""
    for i, name in enumerate(engines):
        if i:  # a later engine: warmed up and timed on 2 clients first, a lower bound of its step over all clients
            warm_up(name, client_indices[:2])
            at_least = timed(name, 1, client_indices[:2])  # its step over all clients costs at least that
            if not fits(at_least):
                why = f"no time left to time {name} (one step of 2 clients: {at_least:.3g} s)"
                break
        else:
            warm_up(name, client_indices)
        t = timed(name, 1)
        rounds_of_others = [steps * one[n] for n in one]
        if rounds_of_others and t > min(rounds_of_others):  # one step of it > a whole round of another
            one[name] = t
            why = f"{name} is clearly slower: one step {t:.3g} s > another engine's round"
            break
        one[name] = t
        if i == 0 and callable(budget_s):
            budget = budget_s(steps * t)
    if why or steps == 1:
        est = {n: steps * t for n, t in one.items()} if why else one
    else:  # the slope from m steps: 3 where the budget allows, else 2
        m = next((k for k in (min(steps, 3), 2) if fits(sum(k * t for t in one.values()))), None)
        if m is None:
            why = "the budget leaves no time to time several steps: a round predicted as steps x one step"
            est = {n: steps * t for n, t in one.items()}
        else:
            more = {n: timed(n, m) for n in engines}
            est = {n: one[n] + (steps - 1) * max(0.0, more[n] - one[n]) / (m - 1) for n in engines}
    say(f"engine: probe done in {spent():.1f} s of timing and {warmups:.1f} s of warm-up" + (f" ({why})" if why else ""),
        final=True)
    return est


def auto_chunk(engine: VectorizedEngine, w, x, y, client_indices, spec: LocalSpec) -> int | None:
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
    probe = VectorizedEngine(engine.model, engine.layout, engine.regularizer, None)
    measure({"probe": probe}, w, x, y, client_indices[:n], spec, steps=1, reps=0)
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
    """The cache file's entries; {} if it is missing, unreadable, not JSON or not an object."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, UnicodeDecodeError, ValueError):
        return {}


MAX_RATIO = 50.0  # timings further apart than this are taken for a measurement gone wrong (a stall, a busy machine)
BUSY, CALM = 1.0, 0.5  # load average per CPU: an entry measured at >= BUSY is re-measured once the load is below CALM x that


def conditions() -> dict:
    """When and under what load a measurement is taken: local time, torch threads, CPUs, 1-minute load average."""
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover - platforms without a load average
        load = None
    return {"measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "load_avg_1m": load}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def implausible(entry, now: dict | None = None) -> str | None:
    """Why a cache entry is not to be trusted, or None: malformed (not an object; no engine; timings that
    are not positive finite seconds for both engines; no recorded conditions), inconsistent (its engine is
    not what :func:`choose` makes of its timings), implausible (timings more than MAX_RATIO apart), or
    measured on a busy machine that has calmed down since (``now``: the current :func:`conditions`)."""
    if not isinstance(entry, dict):
        return "not an object"
    timings = entry.get("timings_s")
    if not isinstance(timings, dict) or set(timings) != {"sequential", "vectorized"}:
        return "no timings of both engines"
    if not all(_number(t) and math.isfinite(t) and t > 0 for t in timings.values()):
        return f"timings are not positive finite seconds ({timings})"
    if max(timings.values()) > MAX_RATIO * min(timings.values()):
        return f"timings more than {MAX_RATIO:g}x apart ({timings})"
    if entry.get("engine") != choose(timings):
        return f"engine {entry.get('engine')!r} does not follow from its timings"
    then = entry.get("conditions")
    if not isinstance(then, dict) or not isinstance(then.get("measured"), str) or not _number(then.get("torch_threads")):
        return "no record of when and how it was measured"
    load, cpus = then.get("load_avg_1m"), then.get("cpus")
    if now and _number(load) and _number(cpus) and cpus > 0 and _number(now.get("load_avg_1m")):
        if load / cpus >= BUSY and now["load_avg_1m"] < CALM * load:
            return f"measured under load {load:g} on {cpus} CPUs, now {now['load_avg_1m']:g}"
    return None


def lookup(key: str) -> dict | None:
    """A trusted cached choice for ``key`` (this process first, then the file), or None (measure it)."""
    entry = _MEMO.get(key)
    if entry is None:
        path = cache_path()
        entry = _read_cache(path).get(key) if path is not None else None
    if entry is None:
        return None
    why = implausible(entry, conditions())
    if why:
        log.info("engine: cached choice for %s measured again: %s", key, why)
        _MEMO.pop(key, None)
        return None
    _MEMO[key] = entry
    return entry


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


PROBE_VERSION = "probe4"  # how round_estimate times (probe4: without regularizer); a choice made another way is not reused


def shape_key(model_name: str, layout: Layout, x: torch.Tensor, clients: int, spec: LocalSpec, chunk: int | None) -> str:
    """What the speed of local training depends on: device, torch, model, input, K, B, chunk (never the method)."""
    device = x.device
    if device.type == "cuda":
        dev = f"cuda:{torch.cuda.get_device_name(device)}"
    else:
        dev = f"cpu:{platform.machine()}:{platform.processor()}:threads{torch.get_num_threads()}"
    shape = "x".join(str(d) for d in x.shape[1:])
    return "|".join([PROBE_VERSION, dev, f"torch{torch.__version__}", model_name, f"P{layout.num_params}", f"in{shape}",
                     f"K{clients}", f"B{spec.batch_size}", f"chunk{chunk or 'all'}"])


# ---------------------------------------------------------------------- the factory
def _say(text: str, final: bool = False) -> None:
    (probe_log.info if final else probe_log.debug)("%s", text)


def build_engine(cfg, model: nn.Module, layout: Layout, regularizer: Regularizer, x, y, client_indices, spec: LocalSpec):
    """The engine for ``cfg.engine`` and the :class:`EngineChoice` saying why. ``x`` is on the run's device."""
    requested = cfg.engine
    sequential = SequentialEngine(model, layout, regularizer)
    if requested == "sequential":
        return sequential, EngineChoice(requested, "sequential", "as requested")
    blocker = vectorization_blocker(model)
    if blocker is None and _is_user_model(cfg):  # a user's model: try vmap once rather than fail mid-round
        blocker = vmap_failure(model, x[:2])
    if blocker:
        choice = EngineChoice(requested, "sequential", f"fallback: {blocker}")
        (log.warning if requested == "vectorized" else log.info)("engine: %s", choice.describe())
        return sequential, choice
    K = cfg.participants()
    w = layout.flatten(model).to(x.device)
    vectorized = VectorizedEngine(model, layout, regularizer, None)
    chunk = getattr(cfg, "client_chunk", None) or auto_chunk(vectorized, w, x, y, client_indices[:K], spec)
    vectorized.client_chunk = chunk
    if requested == "vectorized":
        return vectorized, EngineChoice(requested, "vectorized", "as requested", chunk)
    key = shape_key(cfg.model, layout, x, K, spec, chunk)
    entry = lookup(key)
    steps_in_run = max(1, int(getattr(cfg, "rounds", 1))) * round_steps(client_indices[:K], spec)
    if entry is None and steps_in_run * PROBE_SHARE < 1:  # one step of timing would exceed the share
        choice = EngineChoice(requested, "sequential", f"not timed: the run has {steps_in_run} local steps, one step "
                              f"of timing would be more than {PROBE_SHARE:.0%} of it", chunk)
        log.info("engine: %s", choice.describe())
        return sequential, choice
    if entry is None:
        probe_log.info("engine: timing sequential and vectorized on this shape (at most %.0f%% of the planned run, "
                       "once per shape)", 100 * PROBE_SHARE)
        t0 = time.perf_counter()
        rounds = max(1, int(getattr(cfg, "rounds", 1)))
        timings = round_estimate({"sequential": sequential, "vectorized": vectorized}, w, x, y, client_indices[:K], spec,
                                 budget_s=lambda seq_round: probe_budget(seq_round, rounds), say=_say)
        entry = {"engine": choose(timings), "timings_s": timings, "conditions": conditions()}
        if len(timings) == 2:  # a probe the budget stopped before timing both engines is not reused
            store(key, entry)
        how = (f"measured in {time.perf_counter() - t0:.1f} s (at most {PROBE_SHARE:.0%} of the planned run), "
               f"once per shape:")
    else:
        c = entry["conditions"]
        how = f"cached, measured {c['measured']} with {c['torch_threads']} threads, load {c.get('load_avg_1m')}:"
    timings = entry["timings_s"]
    shown = ", ".join(f"{n} {t:.4g} s" for n, t in sorted(timings.items()))
    choice = EngineChoice(requested, entry["engine"], f"{how} {shown}", chunk, timings, key, entry["conditions"])
    log.info("engine: %s", choice.describe())
    return (vectorized if choice.engine == "vectorized" else sequential), choice
