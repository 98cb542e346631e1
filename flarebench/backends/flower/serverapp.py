"""flarebench's Flower ServerApp: a flarebench run whose clients are Flower nodes.

:func:`run_on_grid` is the whole server side: it builds what the server needs (data for the test set
and the client sizes, the model, the parts), wraps it in a :class:`FlowerFederation` and hands it to
``runner.execute``, which writes ``OUT/NAME/`` (config.json, metrics.csv with the transport columns,
checkpoint.pt) as for a local run. ``app`` is the ServerApp of the Flower app in ``app/`` (deployed
with ``flwr run``); it reads these run-config keys:

    config-file     a flarebench TOML config, a path on the SuperLink's host ("": none)
    config-json     flarebench run options as a JSON object, applied over config-file
                    (e.g. '{"method": "topk-ef", "rounds": 2, "out": "/abs/results"}')
    resume          a run directory to continue ("": a new run); overwrite: replace OUT/NAME
    reply-timeout, straggler-timeout, min-clients, node-timeout, client-threads: federation.FlowerOptions
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Callable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from ...config import RunConfig, make_config
from ...errors import ConfigError, FlarebenchError
from .federation import FlowerFederation, FlowerOptions
from .node import node_setup

EVENTS_FILE = "flower-events.log"  # in the run directory: node losses, timeouts, lost client states


def run_on_grid(grid: Grid, cfg: RunConfig, options: FlowerOptions, *, on_round: Callable | None = None,
                overwrite: bool = False, resume: str | Path | None = None, on_divergence: str = "continue"):
    """Run ``cfg`` (named, its output checked: launch.prepare) with the nodes of ``grid`` as its clients;
    -> runner.RunResult.

    The state is saved after every round: a client commits a round when the server has used it and saved
    it, so a resumed run matches an uninterrupted one.
    """
    from ... import runner

    run_dir = Path(resume) if resume is not None else Path(cfg.out).expanduser() / cfg.name
    events = run_dir / EVENTS_FILE
    if resume is None and events.exists() and overwrite:
        events.unlink()
    node = node_setup(cfg)
    fed = FlowerFederation(node, grid, options, events)
    prepared = runner.Setup(cfg, node.device, node.data, node.layout, fed)
    return runner.execute(prepared, on_round=on_round, overwrite=overwrite, resume=resume, checkpoint_every=1,
                          on_divergence=on_divergence)


def check_checkpoint_every(every: int | None) -> None:
    """ConfigError unless ``every`` is None or 1: the flower backend saves after every round."""
    if every not in (None, 1):
        raise ConfigError("the flower backend saves its state after every round (clients commit a round once the "
                          "server has saved it); drop --checkpoint-every")


def config_from_run_config(rc) -> tuple[RunConfig, str | None, bool]:
    """(config, resume dir or None, overwrite) from a Flower run config; ConfigError on bad input."""
    from ...checkpoint import resume_config

    try:
        options = json.loads(str(rc.get("config-json") or "{}"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"run-config config-json is not JSON ({e})") from None
    if not isinstance(options, dict):
        raise ConfigError("run-config config-json must be a JSON object of flarebench run options")
    toml = str(rc.get("config-file") or "") or None
    resume = str(rc.get("resume") or "") or None
    if resume is not None:
        if toml is not None:
            raise ConfigError("resume takes the run's own config.json; drop config-file")
        cfg = resume_config(resume, **options)
    else:
        cfg = make_config(toml, **options)
    return cfg.replace(backend="flower"), resume, bool(rc.get("overwrite", False))


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """The deployed ServerApp: a flarebench run as the run config says (errors: one line, then raised)."""
    logging.getLogger("flarebench").setLevel(logging.INFO)
    try:
        from ...launch import prepare

        cfg, resume, overwrite = config_from_run_config(context.run_config)
        cfg = prepare(cfg, overwrite, resume)
        options = FlowerOptions.from_run_config(context.run_config)
        result = run_on_grid(grid, cfg, options, overwrite=overwrite, resume=resume,
                             on_round=lambda row, stats: print(_progress(row, cfg), flush=True))
    except FlarebenchError as e:
        print(f"flarebench: error: {e}", file=sys.stderr, flush=True)
        raise
    print(f"done: {result.path}  final test accuracy {result.final_accuracy}  total uplink {result.total_uplink_bits} bits", flush=True)


def _progress(row: dict, cfg: RunConfig) -> str:
    acc = "" if row.get("test_accuracy") is None else f"  test accuracy {row['test_accuracy']:.4f}"
    return f"round {row['round']}/{cfg.rounds}: {row['clients']} clients{acc}"


__all__ = ["app", "run_on_grid", "config_from_run_config", "check_checkpoint_every", "EVENTS_FILE"]
