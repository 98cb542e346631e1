"""The Flower backend: flarebench's methods, bytes and run directory on Flower (flwr >= 1.42).

    simulation.py   ``flarebench run --backend flower``: Flower's simulation engine, this machine
    app/            the Flower app (pyproject.toml) for a real federation: ``flwr run APP_DIR CONNECTION``
    serverapp.py    ServerApp: reads the run config, runs the server side, writes OUT/NAME/
    federation.py   the server half of a round over Flower messages (timeouts, dropped nodes, transport bits)
    clientapp.py    ClientApp: one flarebench client per SuperNode, its state in Flower's context state
    protocol.py     the messages and the commit rule; records.py: flarebench objects <-> Flower records
    node.py         what each node builds from the shared config and seed; localnet.py: a federation on 127.0.0.1

Importing this package turns off Flower's telemetry and update check and Ray's usage stats unless
the environment says otherwise, so nothing tries to reach the network.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import ConfigError

OFFLINE_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_USAGE_STATS_ENABLED": "0"}
for _var, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_var, _value)


def stay_offline() -> None:
    """Apply FLWR_TELEMETRY_ENABLED to a Flower imported before this package set its default (flwr reads it once)."""
    import sys

    telemetry = sys.modules.get("flwr.supercore.telemetry")
    if telemetry is not None:
        telemetry.FLWR_TELEMETRY_ENABLED = os.environ.get("FLWR_TELEMETRY_ENABLED", "1")

APP_DIR = Path(__file__).parent / "app"  # the Flower app: `flwr run APP_DIR CONNECTION --run-config ...`


def require_flower() -> None:
    """ConfigError (one line) unless Flower with its simulation engine is installed."""
    import importlib.util

    if importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None:
        raise ConfigError("the flower backend needs Flower and its simulation engine: pip install 'flarebench[flower]'")


__all__ = ["APP_DIR", "OFFLINE_ENV", "require_flower", "stay_offline"]
