"""``flarebench run --backend flower``: the run on Flower's simulation engine, on this machine, offline.

One virtual SuperNode per flarebench client (partition-id = client id), the ClientApp in Ray actors,
flarebench's ServerApp in this process (so progress and errors reach the caller as for a local run).
Ray starts its own local instance (never joins a running cluster), without dashboard or usage stats.

Clients train with this process's torch thread count, so that on the same machine the run computes
what ``--backend local`` computes; each actor gets that many CPUs (actors = CPUs / threads).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Callable

import torch

from ...config import RunConfig
from . import require_flower, stay_offline


class _DropDeprecation(logging.Filter):
    """Flower deprecates ``run_simulation`` in favour of its CLI; flarebench's users call neither."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED FEATURE" not in record.getMessage()


def backend_config(cfg: RunConfig, threads: int) -> dict:
    """Ray's share of this machine: ``threads`` CPUs per actor, a private local instance, nothing else started."""
    cpus = max(os.cpu_count() or 1, threads)
    resources = {"num_cpus": threads, "num_gpus": 0.0}
    if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()):
        resources["num_gpus"] = 1.0 / max(1, min(cfg.clients, cpus // threads))
    return {
        "client_resources": resources,
        "init_args": {"address": "local", "num_cpus": cpus, "include_dashboard": False,
                      "logging_level": "ERROR", "log_to_driver": True},
    }


def run_simulated(cfg: RunConfig, *, on_round: Callable | None = None, overwrite: bool = False,
                  resume: str | Path | None = None, on_divergence: str = "continue"):
    """Run ``cfg`` (named, its output checked: launch.prepare) on Flower's simulation engine; -> runner.RunResult
    (the same run directory as a local run)."""
    require_flower()
    from .federation import FlowerOptions
    from .serverapp import run_on_grid

    threads = torch.get_num_threads()
    options = FlowerOptions(client_threads=threads)
    result: dict = {}

    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from .clientapp import app as client_app

    stay_offline()
    server_app = ServerApp()

    @server_app.main()
    def _main(grid, context) -> None:
        result["run"] = run_on_grid(grid, cfg, options, on_round=on_round, overwrite=overwrite, resume=resume,
                                    on_divergence=on_divergence)

    flwr_log = logging.getLogger("flwr")
    drop, level = _DropDeprecation(), flwr_log.level
    flwr_log.addFilter(drop)
    flwr_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Tip: In future versions of Ray")  # a note for Ray's own users
            run_simulation(server_app, client_app, num_supernodes=cfg.clients, backend_config=backend_config(cfg, threads))
    finally:
        flwr_log.removeFilter(drop)
        flwr_log.setLevel(level)
    if "run" not in result:  # the ServerApp raised: run_simulation re-raises it; this is a safety net
        raise RuntimeError("Flower's simulation ended without finishing the run")
    return result["run"]


__all__ = ["run_simulated", "backend_config"]
