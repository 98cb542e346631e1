"""A run's setup and its rounds: :func:`setup` (world + parts + federation), :func:`execute` (the rounds,
the metrics and checkpoints written). Backends are chosen by the launcher (launch.py), which every entry
point calls; this module knows no backend.

    from flarebench import make_config, run   # run is launch.run
    result = run(make_config(method="flare", sparsity=0.999, rounds=20))
    result.final_accuracy, result.total_uplink_bits, result.path
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch

from . import __version__
from .config import RunConfig, default_name
from .divergence import Divergence, DivergenceCheck, watched_loss
from .data import Dataset
from .engine.round import Federation, RoundStats
from .engine.sequential import evaluate
from .errors import ConfigError
from .flat import Layout
from .methods.presets import build_parts, get_preset
from .checkpoint import Checkpointer, Resumed, resume_run
from .rundir import locked_run
from .world import build_world
from .results import COLUMNS, RunWriter, check_new_run_dir, check_writable, git_commit

log = logging.getLogger("flarebench")


@dataclass
class Setup:
    """Everything a run needs, built from a config; nothing written to disk yet."""

    cfg: RunConfig
    device: torch.device
    dataset: Dataset
    layout: Layout
    federation: Federation

    def meta(self) -> dict:
        """The content of config.json."""
        return {
            "config": self.cfg.to_dict(),
            "method_description": get_preset(self.cfg.method).description,
            "num_params": self.layout.num_params,
            "tensors": self.layout.describe(),
            "client_samples": [int(n) for n in self.federation.client_sizes.tolist()],
            "test_samples": int(len(self.dataset.y_test)),
            "validation_samples": int(len(self.federation.y_val)),
            "device": str(self.device) if self.device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(self.device)})",
            "engine_resolved": self.federation.engine_choice.to_dict(),
            "flarebench_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "git_commit": git_commit(),
            "columns": COLUMNS + list(getattr(self.federation, "extra_columns", [])),  # a backend may add columns
            "status": "running",
        }


def setup(cfg: RunConfig) -> Setup:
    """Load data, build the model, the method's parts and the federation (seeded by ``cfg.seed``)."""
    w = build_world(cfg)
    layout = Layout.of(w.model)
    parts = build_parts(cfg, layout, w.device)
    fed = Federation(cfg, w.model, layout, parts, w.data, w.clients, w.device, w.validation)
    return Setup(cfg, w.device, w.data, layout, fed)


@dataclass
class RunResult:
    """What a finished run returns (the same numbers are in its metrics.csv)."""

    path: Path
    rows: list[dict]
    wall_time_s: float
    diverged: Divergence | None = None  # where and why the run diverged (divergence.py), if it did

    @property
    def final_accuracy(self) -> float | None:
        evals = [r["test_accuracy"] for r in self.rows if r.get("test_accuracy") is not None]
        return evals[-1] if evals else None

    @property
    def total_uplink_bits(self) -> int:
        return self.rows[-1]["cumulative_uplink_bits"] if self.rows else 0


def execute(
    s: Setup,
    *,
    on_round: Callable[[dict, RoundStats | None], None] | None = None,
    overwrite: bool = False,
    resume: str | Path | None = None,
    checkpoint_every: int | None = None,
    on_divergence: str = "continue",
) -> RunResult:
    """Run the rounds of a set-up run ``s`` (``s.cfg`` named and its output checked: launch.prepare) and write
    ``OUT/NAME/{config.json,metrics.csv,checkpoint.pt}``. The launcher (launch.py) calls this for every backend:
    ``s.federation`` is the local Federation or a backend's (Flower's) with the same interface.

    ``on_round(row, stats)`` is called after each row is written (row 0: initial model, stats None).
    ``resume``: an interrupted run's directory; ``s.cfg`` must be its config (checkpoint.resume_config);
    it continues after its checkpoint; with more ``cfg.rounds`` than the run had, it extends the run
    (a complete one too). ``checkpoint_every``: save the state every N rounds (None: auto, at most
    ~2.4% of run time (1/41)); the state after the last round is kept in checkpoint.pt for extending.
    ``on_divergence``: ``continue`` or ``stop`` after the round where the run diverged (divergence.py);
    either way a warning is logged and config.json records ``diverged``.
    """
    cfg = s.cfg
    watch = DivergenceCheck(on_divergence)
    if not cfg.name:
        raise ValueError("runner.execute needs a named config (launch.prepare stamps the default name)")
    writer, resumed = _open_writer(s, Path(cfg.out).expanduser() / cfg.name, overwrite, resume)
    saver = Checkpointer(writer.dir, checkpoint_every)
    if resumed:
        saver.saved_round = resumed.checkpoint.round
    fed, t0 = s.federation, time.perf_counter() - (resumed.checkpoint.elapsed_s if resumed else 0.0)
    rows: list[dict] = list(resumed.rows) if resumed else []
    discard: Path | None = None
    up, down = (rows[-1]["cumulative_uplink_bits"], rows[-1]["cumulative_downlink_bits"]) if resumed else (0, 0)
    watch.start(rows, float(torch.linalg.vector_norm(fed.w.float())))
    if writer.meta.get("diverged"):  # a resumed run that had diverged already: said once
        watch.found = Divergence(**writer.meta["diverged"])
    try:
        if not resumed:
            scores = evaluate_all(fed)
            row = {"round": 0, "clients": 0, **scores, "nnz": 0, "uplink_bits": 0,
                   "uplink_bound_bits": 0.0, "cumulative_uplink_bits": 0, "downlink_bits": 0, "cumulative_downlink_bits": 0,
                   "position_codecs": "", "wall_time_s": time.perf_counter() - t0}
            writer.append(row)
            rows.append(row)
            _watch(watch, writer, 0, test_loss=watched_loss(scores), w=fed.w)
            saver.save(0, fed, _cumulative(row), time.perf_counter() - t0)
            if on_round:
                on_round(row, None)
        for r in range(rows[-1]["round"], cfg.rounds):
            if watch.stopping:
                break
            stats = fed.run_round(r)
            up += stats.uplink_bits
            down += stats.downlink_bits
            _watch(watch, writer, stats.round, train_loss=stats.train_loss, w=fed.w)
            evaluate_now = stats.round % cfg.eval_every == 0 or stats.round == cfg.rounds or watch.stopping
            scores = evaluate_all(fed) if evaluate_now else {}
            _watch(watch, writer, stats.round, test_loss=watched_loss(scores))
            row = {
                "round": stats.round,
                "clients": len(stats.clients),
                "train_loss": stats.train_loss,
                **{c: scores.get(c) for c in EVALUATION_COLUMNS},
                "nnz": stats.nnz,
                "uplink_bits": stats.uplink_bits,
                "uplink_bound_bits": stats.uplink_bound_bits,
                "cumulative_uplink_bits": up,
                "downlink_bits": stats.downlink_bits,
                "cumulative_downlink_bits": down,
                "position_codecs": ";".join(f"{k}:{v}" for k, v in sorted(stats.codecs.items())),
                "wall_time_s": time.perf_counter() - t0,
                **getattr(stats, "extra", {}),  # a backend's own columns (Flower: transport bits)
            }
            writer.append(row)
            rows.append(row)
            if saver.due(stats.round, cfg.rounds):
                saver.save(stats.round, fed, _cumulative(row), time.perf_counter() - t0)
            if on_round:
                on_round(row, stats)
        if rows[-1]["round"] != saver.saved_round:  # the final state, kept so that --resume --rounds N can extend the run
            saver.save(rows[-1]["round"], fed, _cumulative(rows[-1]), time.perf_counter() - t0)
        writer.set_status("complete", wall_time_s=time.perf_counter() - t0, **saver.summary())
    except BaseException as e:  # Ctrl-C -> "interrupted", an error -> "failed"; resumable from the checkpoint
        writer.set_status("interrupted" if isinstance(e, KeyboardInterrupt) else "failed", **saver.summary())
        if isinstance(e, ConfigError) and not resumed and (not rows or rows[-1]["round"] == 0):
            discard = writer.dir  # bad input found by the first round (a user compressor's wire check): leave nothing
        raise
    finally:
        writer.close()
        saver.close()
        if discard is not None:
            shutil.rmtree(discard, ignore_errors=True)
    return RunResult(writer.dir, rows, time.perf_counter() - t0, watch.found)


EVALUATION_COLUMNS = ("test_loss", "test_accuracy", "val_loss", "val_accuracy")


def evaluate_all(fed) -> dict[str, float | None]:
    """``{test_loss, test_accuracy, val_loss, val_accuracy}`` of the global model: the test set unless
    ``cfg.evaluate_test`` is off, the validation rows (``fed.x_val``) where the run holds some out; None
    for what is not evaluated. ``fed``: the local Federation or a backend's (both evaluate on the server)."""
    out = dict.fromkeys(EVALUATION_COLUMNS)
    if fed.cfg.evaluate_test:
        out["test_loss"], out["test_accuracy"] = fed.evaluate()
    if len(fed.y_val):
        out["val_loss"], out["val_accuracy"] = evaluate(fed.model, fed.layout, fed.w, fed.x_val, fed.y_val, fed.cfg.eval_batch_size)
    return out


def _watch(watch: DivergenceCheck, writer: RunWriter, rnd: int, **seen) -> None:
    """Check round ``rnd``'s losses / weights for divergence; when first found: a logged warning and
    config.json's ``diverged`` (written before the round's row, so a kill leaves it recorded)."""
    had = watch.found
    found = watch.check(rnd, **seen)
    if found and not had:
        log.warning("run %s %s", writer.dir.name, found.describe())
        writer.set_status(writer.meta["status"], diverged=found.to_dict())


def stamp_name(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its default name (method, sparsity, dataset, model, start time) where it has none."""
    return cfg if cfg.name else cfg.replace(name=default_name(cfg, datetime.now().strftime("%Y%m%d-%H%M%S")))


def check_output(cfg: RunConfig, overwrite: bool = False, resume: str | Path | None = None) -> None:
    """ResultsError now, before the data is loaded, if the run could not be written: ``cfg.out``
    cannot be created or written, or ``OUT/NAME`` is a file or (without ``overwrite``) an existing run."""
    if resume is not None:
        if overwrite:
            raise ConfigError("--resume continues a run and --overwrite starts it over: give one of them")
        return
    out = Path(cfg.out).expanduser()
    check_writable(out, create=False)
    if cfg.name:
        check_new_run_dir(out / cfg.name, overwrite)


def _open_writer(s: Setup, run_dir: Path, overwrite: bool, resume: str | Path | None) -> tuple[RunWriter, Resumed | None]:
    """A new run directory, or (``resume``) an interrupted run reopened at its checkpoint with state restored.
    Either way the run directory's lock is taken before anything is written (kept by the run's Checkpointer)."""
    if resume is None:
        check_writable(run_dir.parent)
        check_new_run_dir(run_dir, overwrite)
        run_dir.mkdir(exist_ok=True)
        with locked_run(run_dir):  # another process still running this run keeps its files
            return RunWriter(run_dir, s.meta(), overwrite=overwrite), None
    resumed = resume_run(s, resume)
    return resumed.writer, resumed


def _cumulative(row: dict) -> dict[str, int]:
    """The running counters of a metrics row (checkpointed with the state after that round)."""
    return {k: v for k, v in row.items() if k.startswith("cumulative_")}
