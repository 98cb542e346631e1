"""A real Flower federation on 127.0.0.1: a SuperLink and SuperNodes as processes (free ports), flarebench's
Flower app submitted with ``flwr run``; insecure, with TLS (certificates made here), and with a SuperNode
killed mid-run. Each SuperNode starts a ClientApp process per message (torch import included), so a round
costs seconds: the runs are 2 rounds of 2 clients."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import FLOWER_MISSING, tiny

pytest.importorskip("flwr", reason=FLOWER_MISSING)
if shutil.which("flower-superlink") is None or shutil.which("flower-supernode") is None or shutil.which("flwr") is None:
    pytest.skip(f"Flower's command-line tools are not on PATH ({FLOWER_MISSING})", allow_module_level=True)

from flarebench import run  # noqa: E402
from flarebench.backends.flower import APP_DIR  # noqa: E402
from flarebench.backends.flower.localnet import LocalNet  # noqa: E402
from flarebench.backends.flower.serverapp import EVENTS_FILE  # noqa: E402
from test_flower import assert_same_metrics  # noqa: E402

pytestmark = pytest.mark.flower

RUN_TIMEOUT = 300  # s for one `flwr run` (2 rounds take ~30 s on 2 idle cores)


def flower_run_config(cfg, **flower) -> dict:
    """The app's run config for flarebench config ``cfg`` (clients compute with this process's torch threads)."""
    return {"config-json": json.dumps({**cfg.to_dict(), "name": "flower"}), "client-threads": torch.get_num_threads(),
            "reply-timeout": 120.0, **flower}


def _submit_and_check(net: LocalNet, cfg, out: Path, **flower):
    result = net.run(APP_DIR, flower_run_config(cfg, **flower), timeout=RUN_TIMEOUT)
    logs = result.stdout[-3000:] + "\n--- supernode0:\n" + net.log("supernode0")[-2000:]
    assert result.returncode == 0, logs
    path = out / "flower" / "config.json"
    assert path.exists(), logs
    assert json.loads(path.read_text())["status"] == "complete", logs
    return result


def test_flwr_run_on_superlink_and_supernodes_matches_local(tmp_path):
    cfg = tiny(method="topk-ef", clients=2, rounds=2, out=str(tmp_path / "results"))
    local = run(cfg.replace(name="local"))
    with LocalNet(tmp_path / "net", nodes=2) as net:
        result = _submit_and_check(net, cfg, tmp_path / "results")
    assert "done:" in result.stdout
    assert_same_metrics(local.path, tmp_path / "results" / "flower")
    m = pd.read_csv(tmp_path / "results" / "flower" / "metrics.csv")
    assert (m.uplink_transport_bits[1:] > m.uplink_bits[1:]).all()


def test_flwr_run_with_tls(tmp_path):
    pytest.importorskip("cryptography", reason="the TLS test makes its certificates with cryptography")
    cfg = tiny(method="topk-ef", clients=2, rounds=2, out=str(tmp_path / "results"))
    local = run(cfg.replace(name="local"))
    with LocalNet(tmp_path / "net", nodes=2, tls=True) as net:
        assert "root-certificates" in (net.home / "config.toml").read_text()
        _submit_and_check(net, cfg, tmp_path / "results")
        assert "--insecure" not in " ".join(net.superlink.args)
    assert_same_metrics(local.path, tmp_path / "results" / "flower")


def test_killed_supernode_run_finishes_with_fewer_clients(tmp_path):
    cfg = tiny(method="topk-ef", clients=2, rounds=2, out=str(tmp_path / "results"))
    metrics = tmp_path / "results" / "flower" / "metrics.csv"
    with LocalNet(tmp_path / "net", nodes=2) as net:
        killed = threading.Event()

        def kill_after_round_1():
            deadline = time.monotonic() + RUN_TIMEOUT
            while time.monotonic() < deadline:
                if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:  # header, rows 0 and 1
                    net.kill_node(1)
                    killed.set()
                    return
                time.sleep(0.1)

        watcher = threading.Thread(target=kill_after_round_1, daemon=True)
        watcher.start()
        _submit_and_check(net, cfg, tmp_path / "results", **{"straggler-timeout": 6.0})
        watcher.join(timeout=5)
    assert killed.is_set()
    m = pd.read_csv(metrics)
    assert list(m.clients) == [0, 2, 1]
    assert "round 2: clients 1 did not answer begin" in (metrics.parent / EVENTS_FILE).read_text()
