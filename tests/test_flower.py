"""The Flower backend: the same methods, bytes and metrics as the local backend.

- In this process (FakeGrid: Flower's messages handed to flarebench's ClientApp at once): equality
  with the local backend, a restarted node's lost state logged, a lost reply, a resume after a crash
  mid-round that matches an uninterrupted run, too few clients, transport bits.
- On Flower's simulation engine (Ray): every method family equal to the local backend, and
  ``flarebench run --backend flower`` end to end.
The real SuperLink/SuperNode processes are in test_flower_deploy.py.
"""

from __future__ import annotations

import json
import math
import uuid
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import FLOWER_MISSING, cli, tiny

import flarebench.backends.flower as flower_backend  # noqa: E402  (before flwr: its telemetry and update check off)

flwr = pytest.importorskip("flwr", reason=FLOWER_MISSING)
flower_backend.stay_offline()
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from flarebench import ConfigError, make_config, run  # noqa: E402
from flarebench.backends.flower.clientapp import app as client_app  # noqa: E402
from flarebench.backends.flower.federation import TRANSPORT_COLUMNS, FederationError, FlowerOptions  # noqa: E402
from flarebench.backends.flower.records import transport_bits  # noqa: E402
from flarebench.backends.flower.serverapp import EVENTS_FILE, run_on_grid  # noqa: E402

pytestmark = pytest.mark.flower

EXACT = ["round", "clients", "train_loss", "test_loss", "test_accuracy", "nnz", "uplink_bits", "uplink_bound_bits",
         "cumulative_uplink_bits", "downlink_bits", "cumulative_downlink_bits", "position_codecs"]


def assert_same_metrics(local_dir: Path, flower_dir: Path) -> None:
    """Every column equal but wall time and the transport columns (Flower only); train_loss too: both
    backends add the clients' loss sums in client order (engine.sequential.mean_loss)."""
    a, b = pd.read_csv(local_dir / "metrics.csv"), pd.read_csv(flower_dir / "metrics.csv")
    assert list(b.columns) == list(a.columns) + TRANSPORT_COLUMNS
    for c in EXACT:
        assert a[c].equals(b[c]), (c, list(a[c]), list(b[c]))


@contextmanager
def _identity():
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@pytest.fixture
def task_identity():
    """Flower's messages need the task's identity (its runtimes set it; here a test does)."""
    with _identity():
        yield


class FakeGrid:
    """Flower's Grid in this process: each pushed message is handled by flarebench's ClientApp at once,
    on the node's own persistent Context. ``dead``: nodes that no longer answer (nor are listed);
    ``drop``: nodes whose replies are lost; ``fail``: nodes whose ClientApp raises after the hello (the reply
    is the error Flower's runtimes send); ``crash_at`: a round (group id) whose push raises after the
    clients handled it (the server dies mid-round)."""

    def __init__(self, clients: int):
        self.contexts: dict[int, Context] = {}
        self.dead, self.drop, self.crash_at, self.fail = set(), set(), None, set()
        self._replies: dict[str, Message] = {}
        self._next = 100
        for c in range(clients):
            self.add_node(c, clients)

    def add_node(self, partition: int, num: int) -> int:
        nid, self._next = self._next, self._next + 1
        self.contexts[nid] = Context(run_id=1, node_id=nid, node_config={"partition-id": partition, "num-partitions": num},
                                     state=RecordDict(), run_config={})
        return nid

    def node_of(self, partition: int) -> int:
        return next(n for n, c in self.contexts.items() if c.node_config["partition-id"] == partition)

    def restart(self, partition: int) -> int:
        """The SuperNode of ``partition`` restarts: a new node id and an empty context state."""
        old = self.node_of(partition)
        num = self.contexts.pop(old).node_config["num-partitions"]
        return self.add_node(partition, num)

    def get_node_ids(self):
        return [n for n in self.contexts if n not in self.dead]

    def push_messages(self, messages):
        ids = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            ids.append(m.metadata.message_id)
            n = m.metadata.dst_node_id
            if n in self.contexts and n not in self.dead:
                reply = client_app(m, self.contexts[n]) if n not in self.fail or m.metadata.message_type == "query.hello" else \
                    Message(Error(code=2, reason="<class 'ZeroDivisionError'>:<'float division by zero'>"), reply_to=m)
                if n not in self.drop:
                    self._replies[m.metadata.message_id] = reply
        if self.crash_at is not None and any(m.metadata.group_id == self.crash_at for m in messages):
            raise KeyboardInterrupt("server killed mid-round")
        return ids

    def pull_messages(self, ids):
        return [self._replies.pop(i) for i in list(ids) if i in self._replies]


FAST = FlowerOptions(reply_timeout=0.5, node_timeout=0.0, poll_s=0.01)


def _events(run_dir: Path) -> str:
    path = run_dir / EVENTS_FILE
    return path.read_text() if path.exists() else ""


# ---------------------------------------------------------------------------------------------- in this process
def test_fake_grid_honours_the_validation_split(tmp_path, task_identity):
    """validation_fraction: the nodes train on the same rows as the local backend's clients (the server's
    aggregation weights are their sizes) and the server evaluates the same held-out rows."""
    cfg = tiny(method="topk-ef", validation_fraction=0.25, rounds=2, out=str(tmp_path))
    local = run(cfg.replace(name="local"))
    flower = run_on_grid(FakeGrid(cfg.clients), cfg.replace(name="flower", backend="flower"), FAST)
    assert_same_metrics(local.path, flower.path)
    a, b = pd.read_csv(local.path / "metrics.csv"), pd.read_csv(flower.path / "metrics.csv")
    assert a.val_accuracy.notna().all() and a.val_loss.equals(b.val_loss) and a.val_accuracy.equals(b.val_accuracy)
    meta = json.loads((flower.path / "config.json").read_text())
    assert meta["client_samples"] == [150] * 4 and meta["validation_samples"] == 200


@pytest.mark.parametrize("method,per_round", [("topk-ef", None), ("ef21", 3)])
def test_fake_grid_run_equals_local(tmp_path, task_identity, method, per_round):
    cfg = tiny(method=method, clients_per_round=per_round, out=str(tmp_path))
    local = run(cfg.replace(name="local"))
    flower = run_on_grid(FakeGrid(cfg.clients), cfg.replace(name="flower", backend="flower"), FAST)
    assert_same_metrics(local.path, flower.path)
    meta = json.loads((flower.path / "config.json").read_text())
    assert meta["status"] == "complete" and meta["config"]["backend"] == "flower"
    assert meta["columns"][-2:] == TRANSPORT_COLUMNS
    m = pd.read_csv(flower.path / "metrics.csv")
    # flarebench's bytes travel inside Flower's messages: the framing only adds to them
    assert (m.uplink_transport_bits[1:] > m.uplink_bits[1:]).all()
    assert (m.downlink_transport_bits[1:] > m.downlink_bits[1:]).all()
    assert _events(flower.path) == ""


def test_restarted_node_lost_state_is_logged(tmp_path, task_identity):
    cfg = tiny(method="ef21", rounds=3, out=str(tmp_path), name="f", backend="flower")
    grid = FakeGrid(cfg.clients)

    def restart_after_round_1(row, stats):
        if row["round"] == 1:
            grid.restart(1)

    result = run_on_grid(grid, cfg, FAST, on_round=restart_after_round_1)
    m = pd.read_csv(result.path / "metrics.csv")
    assert list(m.clients) == [0, 4, 4, 4]  # the restarted node got a hello and took part
    events = _events(result.path)
    assert "round 2: client 1 lost its state" in events and "client 0 lost" not in events
    assert json.loads((result.path / "config.json").read_text())["status"] == "complete"


def test_lost_reply_round_goes_on_and_client_drops_that_round(tmp_path, task_identity):
    cfg = tiny(method="topk-ef", rounds=3, out=str(tmp_path), name="f", backend="flower")
    grid = FakeGrid(cfg.clients)
    lost = grid.node_of(2)

    def lose_round_2(row, stats):
        grid.drop = {lost} if row["round"] == 1 else set()

    result = run_on_grid(grid, cfg, FAST, on_round=lose_round_2)
    m = pd.read_csv(result.path / "metrics.csv")
    assert list(m.clients) == [0, 4, 3, 4]
    assert m.uplink_bits[2] < m.uplink_bits[1]  # three clients' bytes
    assert "round 2: clients 2 did not answer begin" in _events(result.path)
    # round 3's begin acked round 1 (index 0) for client 2: its round-2 work was dropped, not committed
    assert int(grid.contexts[lost].state["fb.meta"]["committed"]) == 0
    assert int(grid.contexts[grid.node_of(0)].state["fb.meta"]["committed"]) == 1


@pytest.fixture(scope="module")
def flare_uninterrupted(tmp_path_factory):
    """A 3-round flare run over a FakeGrid, not interrupted: (its config, its metrics.csv)."""
    cfg = tiny(method="flare", rounds=3, out=str(tmp_path_factory.mktemp("whole")), backend="flower")
    with _identity():
        whole = run_on_grid(FakeGrid(cfg.clients), cfg.replace(name="whole"), FAST)
    return cfg, pd.read_csv(whole.path / "metrics.csv")


@pytest.mark.parametrize("crash_in", [2, 3])
def test_resume_after_server_crash_equals_uninterrupted(tmp_path, task_identity, flare_uninterrupted, crash_in):
    """The server dies at the start of round ``crash_in`` (2: no client has committed a round yet, each holds
    round 1 pending) or in the middle of it (3: the clients trained it, the server never used it)."""
    cfg, a = flare_uninterrupted
    cfg = cfg.replace(out=str(tmp_path))
    grid = FakeGrid(cfg.clients)

    def die_before_round_2(row, stats):
        if crash_in == 2 and row["round"] == 1:
            raise KeyboardInterrupt("server killed between rounds")

    grid.crash_at = "3" if crash_in == 3 else None
    with pytest.raises(KeyboardInterrupt):
        run_on_grid(grid, cfg.replace(name="crashed"), FAST, on_round=die_before_round_2)
    run_dir = tmp_path / "crashed"
    assert json.loads((run_dir / "config.json").read_text())["status"] == "interrupted"
    grid.crash_at = None
    from flarebench.checkpoint import resume_config

    resumed = run_on_grid(grid, resume_config(run_dir), FAST, resume=run_dir)
    b = pd.read_csv(resumed.path / "metrics.csv")
    for c in a.columns:
        if c not in ["wall_time_s", *TRANSPORT_COLUMNS]:
            assert a[c].equals(b[c]), c
    # the resumed server process greeted the nodes again (a hello per node): more messages in that round
    assert b.downlink_transport_bits[crash_in] > a.downlink_transport_bits[crash_in]
    assert _events(run_dir) == ""  # no client lost its state


def test_too_few_clients_stop_the_run_resumably(tmp_path, task_identity):
    cfg = tiny(method="topk-ef", out=str(tmp_path), name="f", backend="flower")
    grid = FakeGrid(cfg.clients)
    grid.dead = {grid.node_of(1)}
    with pytest.raises(FederationError, match=r"round 1: 3 of 4 clients answered.*min-clients 4"):
        run_on_grid(grid, cfg, FlowerOptions(reply_timeout=0.5, node_timeout=0.0, min_clients=4, poll_s=0.01))
    assert json.loads((tmp_path / "f" / "config.json").read_text())["status"] == "failed"
    assert "clients 1 have no node" in _events(tmp_path / "f")


def test_clients_that_raise_are_named_in_the_line_that_stops_the_run(tmp_path, task_identity):
    """Every client's ClientApp raises: the run stops in round 1 with the first error in its line, not only
    "0 of 4 clients answered within ... s" (which read as a network problem)."""
    cfg = tiny(method="topk-ef", out=str(tmp_path), name="f", backend="flower")
    grid = FakeGrid(cfg.clients)
    grid.fail = set(grid.contexts)
    with pytest.raises(FederationError) as stopped:
        run_on_grid(grid, cfg, FAST)
    line = str(stopped.value)
    assert line.startswith("round 1: 0 of 4 clients answered within 0.5 s, 4 replied with an error (the first: client 0 (begin): "
                           "<class 'ZeroDivisionError'>:<'float division by zero'> (code 2))"), line
    assert line.endswith("resume it when the error is fixed") and "\n" not in line


def test_transport_bits_are_the_serialized_objects(task_identity):
    def msg(payload: bytes) -> Message:
        return Message(RecordDict({"fb": ConfigRecord({"uplink": payload, "round": 3})}), 7, "train.begin", group_id="4")

    small, large = msg(b"\x01" * 1000), msg(b"\x02" * 2000)
    # the payload is carried verbatim: 1000 more bytes cost exactly 8000 more bits
    assert transport_bits(large) - transport_bits(small) == 8000
    objects = [small, small.content, small.content["fb"]]
    assert transport_bits(small) == 8 * sum(len(o.deflate()) for o in objects)


def test_flower_options_and_backend_are_checked(capsys, tmp_path):
    with pytest.raises(ConfigError, match="unknown backend 'ray'"):
        make_config(backend="ray")
    with pytest.raises(ConfigError, match="min-clients"):
        FlowerOptions.from_run_config({"min-clients": 0})
    rc, out, err = cli(capsys, "run", "--backend", "grpc", "--rounds", "1")
    assert rc == 2 and err.strip().splitlines() == ["flarebench: error: unknown backend 'grpc' (choose from: flower, local)"]
    rc, out, err = cli(capsys, "run", "--backend", "flower", "--checkpoint-every", "5", "--rounds", "1", "--out", tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "saves its state after every round" in err


def test_missing_flower_is_one_line(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("flwr", "ray") else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'flarebench\[flower\]'"):
        run(tiny(backend="flower", out=str(tmp_path)))


# ---------------------------------------------------------------------------------------------- simulation engine
SIM_METHODS = ["none", "topk-ef", "randk", "flare", "ef21", "stc", "powersgd"]


@pytest.mark.filterwarnings("ignore:Tip. In future versions of Ray")
def test_simulation_equals_local_for_every_method_family(tmp_path):
    """Each method once on the local backend, then all of them in one Flower simulation (one Ray start):
    the ClientApps run in Ray worker processes, with the bytes carried in Flower messages."""
    pytest.importorskip("ray", reason=FLOWER_MISSING)
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from flarebench.backends.flower.simulation import backend_config

    cfgs = {m: tiny(method=m, out=str(tmp_path), rounds=2) for m in SIM_METHODS}
    local = {m: run(c.replace(name=f"{m}-local")).path for m, c in cfgs.items()}
    done: dict[str, Path] = {}
    app = ServerApp()

    @app.main()
    def main(grid, context):
        for m, c in cfgs.items():
            done[m] = run_on_grid(grid, c.replace(name=f"{m}-flower", backend="flower"),
                                  FlowerOptions(client_threads=torch.get_num_threads(), reply_timeout=120)).path

    run_simulation(app, client_app, num_supernodes=4, backend_config=backend_config(cfgs["none"], torch.get_num_threads()))
    assert set(done) == set(SIM_METHODS)
    for m in SIM_METHODS:
        assert_same_metrics(local[m], done[m])


def test_cli_backend_flower_end_to_end(tmp_path, capsys):
    """``flarebench run --backend flower`` (Flower's simulation engine) writes a run that list and compare read."""
    pytest.importorskip("ray", reason=FLOWER_MISSING)
    args = ["--method", "topk-ef", "--clients", 3, "--samples-per-client", 200, "--batch-size", 50, "--rounds", 2,
            "--eval-every", 1, "--engine", "sequential", "--device", "cpu", "--out", tmp_path, "-q"]
    rc, out, err = cli(capsys, "run", *args, "--backend", "flower", "--name", "flower")
    assert rc == 0, err
    assert "done:" in out
    rc, _, err = cli(capsys, "run", *args, "--name", "local")
    assert rc == 0, err
    assert_same_metrics(tmp_path / "local", tmp_path / "flower")
    rc, out, err = cli(capsys, "list", tmp_path)
    assert rc == 0 and "flower" in out and "complete" in out, (out, err)
    rc, out, err = cli(capsys, "compare", tmp_path / "flower", tmp_path / "local", "--format", "none",
                        "--out", tmp_path / "compare")
    assert rc == 0, err
    table = pd.read_csv(tmp_path / "compare" / "runs.csv").set_index("run")
    assert table.loc["flower", "total_uplink_bits"] == table.loc["local", "total_uplink_bits"]


def test_bad_device_and_bad_part_values_are_one_line_before_ray_starts(capsys, tmp_path, monkeypatch):
    """``--device cuda`` without CUDA, and a part value that would crash round 1 on the clients, are one
    line and exit 2 before Flower's simulation (Ray) starts; nothing is written."""
    import flwr.simulation

    def no_simulation(*args, **kwargs):
        raise AssertionError("Flower's simulation started")

    monkeypatch.setattr(flwr.simulation, "run_simulation", no_simulation)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, whatever this one has
    base = ["run", "--backend", "flower", "--model", "mlp", "--clients", "3", "--rounds", "2", "--samples-per-client", "100",
            "--out", tmp_path / "r", "--quiet"]
    for extra, fragment in [(["--device", "cuda"], "device cuda requested but no CUDA device is available"),
                            (["--method", "threshold", "-p", "compressor.tau=1e308"], "compressor.tau must be in"),
                            (["--method", "flare", "-p", "regularizer.decay=1e-200"], "must stay finite over the run's 2 rounds")]:
        rc, out, err = cli(capsys, *base, *extra)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()
