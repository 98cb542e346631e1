"""Engine benchmark behind ``flarebench bench``: one round of each engine on the same config, one process.

For every (clients, batch size) pair, each engine gets a fresh :func:`runner.setup` of the same config,
one warm-up round and its state restored; then ``rounds`` timed rounds, interleaved across engines round
by round, and the best (fastest) round is reported (seconds of wall time, CUDA synchronised; on a shared
machine the best of N is the least noisy estimate). Reported per engine: seconds per round, seconds of
local training in that round, samples/s,
the speed-up over the sequential engine, and model FLOP utilisation (MFU):

    MFU = (model FLOPs of the round's local training) / (local-training seconds) / (device peak FLOP/s)

Model FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one forward+backward step
of one client (per sample, times the samples trained in the round). The peak is the fp32 dense datasheet
figure for known GPUs (training runs in fp32), and a measured fp32 matmul rate on CPU; it is stated.
The auto engine choice (select.measure + select.choose, fresh, uncached) is shown per configuration.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import RunConfig, make_config
from .engine import select
from .engine.sequential import SequentialEngine, data_loss
from .engine.vectorized import VectorizedEngine

# name substrings -> (fp32 dense, bf16 dense) TFLOP/s, datasheet figures without sparsity; first match wins
GPU_PEAKS: list[tuple[tuple[str, ...], float, float]] = [
    (("H100", "PCIe"), 51.2, 756.0),
    (("H100", "NVL"), 60.0, 835.0),
    (("H100",), 67.0, 989.4),  # SXM5 (HBM3)
    (("H200", "NVL"), 60.0, 835.0),
    (("H200",), 67.0, 989.4),  # SXM
    (("A100",), 19.5, 312.0),
]


@dataclass
class Peak:
    """The MFU denominator: ``flops`` FLOP/s (None: unknown device) and how it was obtained."""

    device: str
    flops: float | None
    source: str


@dataclass
class BenchRow:
    """One engine on one configuration. Times in seconds per round; flops in FLOP per round."""

    model: str
    clients: int
    batch_size: int
    engine: str
    round_s: float
    train_s: float
    samples: int  # samples trained per round (all clients, all local epochs)
    flops: float  # model FLOPs of the round's local training
    speedup: float | None = None  # sequential round_s / this round_s
    mfu: float | None = None  # fraction of the peak
    max_abs_diff: float | None = None  # max |w - w_sequential| after the timed rounds
    same_bits: bool | None = None  # same per-round nnz and uplink bits as the sequential engine
    auto_pick: bool = False  # the engine auto chose for this configuration
    warmup_s: float | None = None  # the untimed warm-up round (includes torch.compile's compile time)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.round_s


@dataclass
class BenchReport:
    peak: Peak
    rows: list[BenchRow] = field(default_factory=list)
    auto_timings: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)


def gpu_peak(name: str) -> tuple[float, float] | None:
    """(fp32, bf16) dense peak FLOP/s of a GPU by its name, or None when not in :data:`GPU_PEAKS`."""
    for keys, fp32, bf16 in GPU_PEAKS:
        if all(k.lower() in name.lower() for k in keys):
            return fp32 * 1e12, bf16 * 1e12
    return None


def cpu_matmul_peak(n: int = 1024, reps: int = 5) -> float:
    """Measured fp32 FLOP/s of an ``n x n @ n x n`` matmul on CPU (best of ``reps``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def device_peak(device: torch.device) -> Peak:
    """The stated peak of ``device`` (datasheet fp32 dense for known GPUs, measured matmul on CPU)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peaks = gpu_peak(name)
        if peaks is None:
            return Peak(name, None, "unknown GPU: no peak in flarebench.bench.GPU_PEAKS")
        return Peak(name, peaks[0], f"fp32 dense datasheet {peaks[0] / 1e12:.1f} TFLOP/s (bf16 dense {peaks[1] / 1e12:.1f})")
    flops = cpu_matmul_peak()
    name = f"cpu {platform.machine()} {platform.processor()}".strip() + f", {torch.get_num_threads()} threads"
    return Peak(name, flops, f"measured fp32 matmul 1024^3: {flops / 1e9:.1f} GFLOP/s")


def flops_per_sample(fed, batch_size: int) -> float:
    """Model FLOPs of one local step (forward + backward, data loss) per sample, counted on one client batch."""
    idx = fed.client_indices[0][:batch_size]
    theta = fed.w.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        loss = data_loss(fed.model, fed.layout, theta, fed.x_train[idx], fed.y_train[idx])
        torch.autograd.grad(loss, theta)
    return counter.get_total_flops() / len(idx)


class _Timed:
    """Wraps an engine; adds the seconds spent in ``train`` to ``self.seconds`` (CUDA synchronised)."""

    def __init__(self, engine, device: torch.device):
        self.engine, self.device, self.seconds = engine, device, 0.0
        self.name = engine.name

    def train(self, *args, **kwargs):
        select._sync(self.device)
        t0 = time.perf_counter()
        out = self.engine.train(*args, **kwargs)
        select._sync(self.device)
        self.seconds += time.perf_counter() - t0
        return out


def _clone(state):
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return {k: _clone(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_clone(v) for v in state)
    return state


def _prepare(cfg: RunConfig, engine: str):
    """(setup, warm-up seconds) for ``engine``: one untimed round (kernel choice, vmap / compile set-up), state restored."""
    from .runner import setup

    base = engine.split("+")[0]
    s = setup(cfg.replace(engine=base))
    fed = s.federation
    if engine.endswith("+compile") and isinstance(fed.engine, VectorizedEngine):
        fed.engine = VectorizedEngine(fed.model, fed.layout, fed.parts.regularizer, fed.engine.client_chunk, compile=True)
    elif engine.endswith("+compile") and isinstance(fed.engine, SequentialEngine):
        fed.engine = SequentialEngine(fed.model, fed.layout, fed.parts.regularizer, compile=True)
    state0 = _clone(fed.state_dict())
    select._sync(s.device)
    t0 = time.perf_counter()
    fed.run_round(0)
    select._sync(s.device)
    warmup_s = time.perf_counter() - t0
    fed.load_state_dict(_clone(state0))
    fed.engine = _Timed(fed.engine, s.device)
    return s, warmup_s


def _time_rounds(setups: dict, rounds: int) -> dict[str, tuple[list, float, float]]:
    """Rounds 0..rounds-1 of every engine, interleaved round by round (a noisy neighbour slows all engines
    alike). Per engine: (stats, best round seconds, local-training seconds of that round)."""
    out = {name: ([], float("inf"), 0.0) for name in setups}
    for r in range(rounds):
        for name, s in setups.items():
            fed, timed = s.federation, s.federation.engine
            timed.seconds = 0.0
            select._sync(s.device)
            t0 = time.perf_counter()
            st = fed.run_round(r)
            select._sync(s.device)
            dt = time.perf_counter() - t0
            stats, best, train = out[name]
            stats.append(st)
            out[name] = (stats, dt, timed.seconds) if dt < best else (stats, best, train)
    return out


def bench(
    model: str = "cnn",
    clients: list[int] = (10, 100),
    batch_sizes: list[int] = (32, 600),
    device: str = "auto",
    rounds: int = 1,
    dataset: str = "mnist-embedded",
    method: str = "flare",
    samples_per_client: int | None = None,
    local_epochs: int = 1,
    client_chunk: int | None = None,
    compile: bool = False,
    progress=None,
    lr: float | None = None,
) -> BenchReport:
    """Time ``rounds`` rounds of each engine per (clients, batch size); see the module docstring.

    ``compile``: also time both engines with their step under ``torch.compile`` (warm-up round = compile
    time, not counted). ``progress(str)``: called before each measurement. ``lr``: client lr (None: the run default).
    """
    from .world import resolve_device

    dev = resolve_device(device)
    report = BenchReport(device_peak(dev))
    engines = ["sequential", "vectorized"] + (["sequential+compile", "vectorized+compile"] if compile else [])
    for K in clients:
        for B in batch_sizes:
            cfg = make_config(
                model=model, dataset=dataset, method=method, clients=K, batch_size=B, rounds=rounds, device=device,
                samples_per_client=samples_per_client, local_epochs=local_epochs, client_chunk=client_chunk, lr=lr,
            )
            setups, warmups = {}, {}
            for name in engines:
                if progress:
                    progress(f"{model} clients={K} B={B} engine={name} (warm-up round)")
                setups[name], warmups[name] = _prepare(cfg, name)
            if progress:
                progress(f"{model} clients={K} B={B}: {rounds} timed round(s) per engine, interleaved")
            timed = _time_rounds(setups, rounds)
            rows, ref = [], None
            for name, (stats, round_s, train_s) in timed.items():
                fed = setups[name].federation
                samples = sum(int(fed.client_sizes[c].item()) for st in stats for c in st.clients) * cfg.local_epochs // rounds
                label = name if fed.engine_choice.engine == name.split("+")[0] else f"{name} -> {fed.engine_choice.engine}"
                row = BenchRow(model, K, B, label, round_s, train_s, samples, flops_per_sample(fed, B) * samples)
                row.warmup_s = warmups[name]
                if report.peak.flops:
                    row.mfu = row.flops / train_s / report.peak.flops
                if ref is None:
                    ref = (fed.w.clone(), [(st.nnz, st.uplink_bits) for st in stats], round_s)
                row.speedup = ref[2] / round_s
                row.max_abs_diff = (fed.w - ref[0]).abs().max().item()
                row.same_bits = [(st.nnz, st.uplink_bits) for st in stats] == ref[1]
                rows.append(row)
            # what auto would pick here (fresh measurement, same code path as a run)
            sub = fed.client_indices[: cfg.participants()]
            eng = {
                "sequential": SequentialEngine(fed.model, fed.layout, fed.parts.regularizer),
                "vectorized": VectorizedEngine(fed.model, fed.layout, fed.parts.regularizer, client_chunk),
            }
            timings = select.round_estimate(eng, fed.w, fed.x_train, fed.y_train, sub, fed.spec)
            report.auto_timings[(K, B)] = timings
            pick = select.choose(timings)
            for row in rows:
                row.auto_pick = row.engine == pick
            report.rows.extend(rows)
    return report


def auto_regret(report: BenchReport) -> dict[tuple[int, int], float]:
    """Per (clients, B): auto's pick's round time / the fastest uncompiled engine's, minus 1 (0.05 = 5% slower)."""
    out = {}
    for key in report.auto_timings:
        rows = [r for r in report.rows if (r.clients, r.batch_size) == key and not r.engine.endswith("+compile")]
        picked = [r.round_s for r in rows if r.auto_pick]
        if picked:
            out[key] = picked[0] / min(r.round_s for r in rows) - 1.0
    return out
