"""The launcher: the one place a run starts and its backend is chosen. The CLI, :func:`flarebench.run`,
sweeps (local processes and Ray workers) and Flower's deployed ServerApp all come through here.

:func:`prepare` runs once per run, before anything is loaded: every check of the output directory
(runner.check_output), of ``checkpoint_every``, and the default name stamped. :func:`run` then starts the
backend: ``local`` sets the run up (world.py, runner.setup) and runs runner.execute; ``flower`` starts
Flower's simulation (backends/flower), whose ServerApp builds the same world and calls runner.execute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .checkpoint import Checkpointer, check_resumable, pin_engine
from .config import RunConfig
from .divergence import POLICIES
from .errors import ConfigError
from .tblog import LOGS, TensorBoardLog, require_tensorboard

BACKENDS = ("local", "flower")  # local: runner.execute in this process | flower: backends/flower
from .runner import RunResult, Setup, check_output, execute, setup, stamp_name
from .world import resolve_device


def prepare(cfg: RunConfig, overwrite: bool = False, resume: str | Path | None = None,
            checkpoint_every: int | None = None) -> RunConfig:
    """``cfg`` named, after the checks of its output (FlarebenchError before anything is written or loaded)."""
    check_output(cfg, overwrite, resume)
    if resume is not None:
        check_resumable(resume, cfg.rounds)  # a complete run: said before anything is loaded or timed
    Checkpointer.check_every(checkpoint_every)
    resolve_device(cfg.device)  # e.g. cuda on a machine without it: one line, before data, Ray or Flower start
    if cfg.backend == "flower":
        from .backends.flower.serverapp import check_checkpoint_every

        check_checkpoint_every(checkpoint_every)
    return stamp_name(cfg)


def run(
    cfg: RunConfig,
    *,
    on_round: Callable | None = None,
    overwrite: bool = False,
    prepared: Setup | None = None,
    resume: str | Path | None = None,
    checkpoint_every: int | None = None,
    on_setup: Callable[[Setup], None] | None = None,
    checked: bool = False,
    on_divergence: str = "continue",
    log: str = "none",
) -> RunResult:
    """Run ``cfg`` on its backend and write ``cfg.out/NAME/{config.json,metrics.csv,checkpoint.pt}``.

    ``on_round(row, stats)``: after each metrics row is written (row 0: the initial model, stats None).
    ``resume``: an interrupted run's directory (``cfg`` = checkpoint.resume_config of it); more ``cfg.rounds``
    than it had extends it. ``checkpoint_every``: rounds between saved states (None: auto). ``prepared``: a
    local run already set up (runner.setup of this cfg). ``on_setup(s)``: called once a local run is set up,
    before its first round (the CLI prints the engine). ``checked``: ``cfg`` is :func:`prepare`'s result
    already (the CLI prepares first, to name the run directory). ``on_divergence``: ``continue`` or ``stop``
    once the run has diverged (divergence.py; recorded in config.json either way). ``log``: ``tensorboard``
    also writes every row to a TensorBoard event file in the run directory (tblog.py). Bad input raises a FlarebenchError before
    anything is written.
    """
    if on_divergence not in POLICIES:
        raise ConfigError(f"on_divergence takes {' or '.join(POLICIES)}, got {on_divergence!r}")
    if log not in LOGS:
        raise ConfigError(f"log takes {' or '.join(LOGS)}, got {log!r}")
    if log == "tensorboard":
        require_tensorboard()
    if not checked:
        cfg = prepare(cfg, overwrite, resume, checkpoint_every)
    if log == "tensorboard":
        with TensorBoardLog(resume or Path(cfg.out).expanduser() / cfg.name, cfg.to_dict()) as tb:
            return run(cfg, on_round=both(on_round, tb), overwrite=overwrite, prepared=prepared, resume=resume,
                       checkpoint_every=checkpoint_every, on_setup=on_setup, checked=True, on_divergence=on_divergence)
    if cfg.backend == "flower":  # Flower's simulation engine runs the rounds (backends/flower)
        from .backends.flower.simulation import run_simulated

        return run_simulated(cfg, on_round=on_round, overwrite=overwrite, resume=resume, on_divergence=on_divergence)
    s = prepared or setup(cfg if resume is None else pin_engine(cfg, resume))
    s.cfg = cfg
    if on_setup:
        on_setup(s)
    return execute(s, on_round=on_round, overwrite=overwrite, resume=resume, checkpoint_every=checkpoint_every,
                   on_divergence=on_divergence)


def both(first: Callable | None, second: Callable) -> Callable:
    """One ``on_round`` callback calling ``first`` (if any), then ``second``."""
    if first is None:
        return second

    def call(row: dict, stats=None) -> None:
        first(row, stats)
        second(row, stats)

    return call


__all__ = ["prepare", "run", "both", "BACKENDS"]
