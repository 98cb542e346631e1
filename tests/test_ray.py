"""``flarebench sweep --ray``: a real Ray head on 127.0.0.1 (2 CPUs) runs a tiny 4-run grid; every run's
metrics.csv equals the local sweep's (wall time aside), also when the worker of a run is SIGKILLed mid-way."""

from __future__ import annotations

import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import RAY_MISSING, cli, one_thread

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "baselines" / "flare_paper" / "unavail_cnn_k7_smoke.toml"
RUNS = ["flare-s0.99-seed0", "flare-s0.99-seed1", "topk-ef-s0.99-seed0", "topk-ef-s0.99-seed1"]
# 16 rounds of ~0.1 s: long enough to kill a run mid-way, short enough for the suite
GRID = """model = "mlp"
clients = 4
samples-per-client = 200
batch-size = 50
rounds = 16
lr = 0.1
momentum = 0.9
eval-every = 1
device = "cpu"
engine = "sequential"
[sweep]
methods = ["flare", "topk-ef"]
sparsities = [0.99]
seeds = [0, 1]
"""
START_TIMEOUT_S = 90  # the head's start, on a loaded 2-core machine
SWEEP_TIMEOUT_S = 150


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_ports(width: int = 200) -> tuple[int, int]:
    """A range of ``width`` worker ports for this head, one of 40 slots in Ray's default 10002-19999 picked at
    random with its first port free: two heads on one machine (parallel test runs) with Ray's default ranges
    both bind 127.0.0.1:10002, and the second one's driver dies ("No address added ... 10002")."""
    slots = list(range(40))
    random.Random().shuffle(slots)
    for slot in slots:
        lo = 10002 + width * slot
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", lo))
            except OSError:
                continue
        return lo, lo + width - 1
    return 10002, 19999


@pytest.fixture(scope="module")
def ray_head():
    """``ray start --head --block`` on 127.0.0.1 with 2 CPUs, in its own process group; the finalizer
    ends that group (the head and the workers it started, nothing else: `ray stop` would end every
    Ray on the machine). Yields ``127.0.0.1:PORT``."""
    pytest.importorskip("ray", reason=RAY_MISSING)
    port = free_port()
    lo, hi = worker_ports()
    temp = tempfile.mkdtemp(prefix="fbray")  # short: Ray's socket paths under it must stay < 108 characters
    log = open(Path(temp) / "head.log", "w+")
    cmd = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())",
           "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--node-ip-address=127.0.0.1",
           f"--ray-client-server-port={free_port()}", f"--min-worker-port={lo}", f"--max-worker-port={hi}",
           "--disable-usage-stats", "--include-dashboard=false", f"--temp-dir={temp}"]
    head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 15)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        shutil.rmtree(temp, ignore_errors=True)

    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in Path(log.name).read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray head did not start:\n{Path(log.name).read_text()[-3000:]}")
            time.sleep(0.3)
    except BaseException:
        stop()
        raise
    yield f"127.0.0.1:{port}"
    stop()


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The grid's config and its runs made by a local sweep with one torch thread (as --cpus-per-run 1)."""
    from flarebench.sweep import compare_sweep, load_sweep, run_sweep

    root = tmp_path_factory.mktemp("grid")
    config = root / "grid.toml"
    config.write_text(GRID)
    with one_thread():
        local = load_sweep(config, out=root / "local")
        run_sweep(local)
        compare_sweep(local)
    return config, root / "local"


def sweep_cli(cwd: Path, *args) -> subprocess.Popen:
    """``python -m flarebench sweep ARGS`` in ``cwd``, stdout piped (stderr merged)."""
    return subprocess.Popen([sys.executable, "-m", "flarebench", "sweep", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=cwd)


def finish(proc: subprocess.Popen, timeout: float = SWEEP_TIMEOUT_S) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the sweep did not finish in {timeout}s:\n{out[-3000:]}")
    assert proc.returncode == 0, out[-3000:]
    return out


def metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=["wall_time_s"])


def assert_same_runs(a: Path, b: Path, names, compare: bool = True) -> None:
    """Runs ``names`` under ``a`` and ``b`` have equal metrics.csv (and, with ``compare``, runs.csv and compare.csv), wall time and paths aside."""
    for name in names:
        pd.testing.assert_frame_equal(metrics(a / name), metrics(b / name), check_exact=True, obj=name)
    if not compare:
        return
    drop = ["wall_time_s", "path"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "compare" / "runs.csv").drop(columns=drop),
                                  pd.read_csv(b / "compare" / "runs.csv").drop(columns=drop), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(a / "compare" / "compare.csv"), pd.read_csv(b / "compare" / "compare.csv"), check_exact=True)


def test_ray_sweep_equals_local_sweep(ray_head, grid, tmp_path, capsys):
    config, local = grid
    out = finish(sweep_cli(tmp_path, config, "--ray", ray_head, "--out", tmp_path / "ray"))
    assert sorted(re.findall(r"^run +(\S+) \(16 rounds\) on \S+, pid \d+", out, re.M)) == RUNS
    assert "[4 done, 0 running, 0 failed of 4]" in out and "4 runs in" in out
    assert_same_runs(tmp_path / "ray", local, RUNS)
    # the local sweep's rules, checked before the cluster is joined (so in this process): complete runs are
    # skipped, a run of another config is refused
    code, out, err = cli(capsys, "sweep", config, "--ray", ray_head, "--out", tmp_path / "ray")
    assert code == 0 and out.count("skip ") == 4 and "4 runs in" in out, err
    code, out, err = cli(capsys, "sweep", config, "--ray", ray_head, "--out", tmp_path / "ray", "--rounds", "3")
    assert code == 2 and "different config" in err and err.count("\n") == 1, err


def test_ray_sweep_of_an_lr_grid_equals_local(ray_head, tmp_path):
    """A grid over lr (2 points, 2 rounds) on Ray: the runs named by lr, equal to the local sweep's."""
    from flarebench.sweep import load_sweep, run_sweep

    config = tmp_path / "lr.toml"
    config.write_text(GRID.replace("rounds = 16", "rounds = 2").replace("seeds = [0, 1]", "seeds = [0]\nlr = [0.05, 0.2]")
                      .replace('methods = ["flare", "topk-ef"]', 'methods = ["topk-ef"]'))
    with one_thread():
        run_sweep(load_sweep(config, out=tmp_path / "local"))
    out = finish(sweep_cli(tmp_path, config, "--ray", ray_head, "--out", tmp_path / "ray"))
    names = ["topk-ef-s0.99-lr0.05-seed0", "topk-ef-s0.99-lr0.2-seed0"]
    assert sorted(re.findall(r"^run +(\S+) \(2 rounds\) on \S+, pid \d+", out, re.M)) == names, out
    assert_same_runs(tmp_path / "ray", tmp_path / "local", names, compare=False)


def test_a_killed_worker_is_retried_and_resumes(ray_head, grid, tmp_path):
    config, local = grid
    proc = sweep_cli(tmp_path, config, "--ray", ray_head, "--methods", "flare", "--out", tmp_path / "ray")
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen, deadline = [], time.monotonic() + SWEEP_TIMEOUT_S
    while not (m := re.match(r"run +(\S+) \(16 rounds\) on \S+, pid (\d+)", seen[-1] if seen else "")):
        assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            pass
    name, pid = m.group(1), int(m.group(2))
    csv = tmp_path / "ray" / name / "metrics.csv"

    def rows() -> int:
        return len(csv.read_text().splitlines()) - 1 if csv.is_file() else 0

    os.kill(pid, signal.SIGSTOP)  # then let the worker go on in 10 ms steps until rounds 0-2 are on disk: mid-way on any machine
    while rows() < 3:
        assert time.monotonic() < deadline, f"{name} wrote {rows()} rows"
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
        os.kill(pid, signal.SIGSTOP)
    assert rows() < 17, "the run ended before it could be killed"
    os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=SWEEP_TIMEOUT_S)
    while True:  # the reader thread may still hold the last lines
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            break
    out = "".join(seen)
    assert proc.returncode == 0, out[-3000:]
    assert re.search(rf"^retry +{name} \(16 rounds, attempt 2\)", out, re.M), out
    assert re.search(rf"^done +{name}: .*\(attempt 2: resume\)", out, re.M), out
    meta = pd.read_json(tmp_path / "ray" / name / "config.json", typ="series")
    assert meta["status"] == "complete" and len(meta["resumed_at_rounds"]) == 1  # killed before its end, resumed once
    assert_same_runs(tmp_path / "ray", local, ["flare-s0.99-seed0", "flare-s0.99-seed1"], compare=False)


def test_a_failing_run_is_reported_and_the_others_complete(ray_head, grid, tmp_path):
    config, local = grid
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "flare-s0.99-seed0").write_text("a file where the run directory goes\n")  # fails on the worker
    proc = sweep_cli(tmp_path, config, "--ray", ray_head, "--methods", "flare", "--out", tmp_path / "ray")
    out, _ = proc.communicate(timeout=SWEEP_TIMEOUT_S)
    assert proc.returncode == 2, out
    assert re.search(r"^failed +flare-s0.99-seed0: .*flare-s0.99-seed0.* \[\d done, \d running, 1 failed of 2\]$", out, re.M), out
    assert "[1 done, 0 running, 1 failed of 2]" in out and "Traceback" not in out
    assert out.rstrip().splitlines()[-1].startswith("flarebench: error: 1 of 2 runs failed on the Ray cluster (flare-s0.99-seed0: ")
    assert_same_runs(tmp_path / "ray", local, ["flare-s0.99-seed1"], compare=False)
    # runs that no node can hold would wait forever: refused before anything is written
    proc = sweep_cli(tmp_path, config, "--ray", ray_head, "--cpus-per-run", "3", "--out", tmp_path / "big")
    out, _ = proc.communicate(timeout=SWEEP_TIMEOUT_S)
    assert proc.returncode == 2 and out.endswith("no node of the Ray cluster has 3 CPUs for a run (largest: 2 CPUs, 0 GPUs); "
                                                 "lower --cpus-per-run / --gpus-per-run\n"), out
    assert not (tmp_path / "big").exists()


@pytest.mark.slow
def test_smoke_config_on_ray_equals_local(ray_head, tmp_path):
    """The paper's smoke config (CNN, 7 of 10 clients, its hyper-parameters), FLARE and FedAvg, one seed,
    2 rounds: the same compare.csv through Ray."""
    from flarebench.sweep import compare_sweep, load_sweep, run_sweep

    args = dict(methods=["flare", "none"], seeds=[0], rounds=2)
    with one_thread():
        local = load_sweep(SMOKE, out=tmp_path / "local", **args)
        run_sweep(local)
        compare_sweep(local)
    finish(sweep_cli(tmp_path, SMOKE, "--ray", ray_head, "--methods", "flare,none", "--seeds", "0", "--rounds", "2", "--out", tmp_path / "ray"))
    assert_same_runs(tmp_path / "ray", tmp_path / "local", [c.name for c in local.configs()])


def test_missing_ray_extra_is_one_line(tmp_path, capsys, monkeypatch):
    config = tmp_path / "grid.toml"
    config.write_text(GRID)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    code, out, err = cli(capsys, "sweep", config, "--ray", "auto", "--out", tmp_path / "runs")
    assert code == 2 and err == 'flarebench: error: --ray needs the ray extra: pip install -e ".[ray]"\n'
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args,message", [
    (["--cpus-per-run", "2"], "--cpus-per-run applies to a sweep on Ray"),
    (["--gpus-per-run", "1"], "--gpus-per-run applies to a sweep on Ray"),
    (["--ray", "auto", "--jobs", "2"], "--jobs applies to a local sweep"),
    (["--ray", "auto", "--cpus-per-run", "0"], "--cpus-per-run must be >= 1"),
    (["--ray", "nohost"], "--ray takes auto, HOST:PORT or ray://HOST:PORT"),
    (["--ray", "127.0.0.1:{closed}"], "no Ray cluster answers at 127.0.0.1:"),
    (["--ray", "ray://127.0.0.1:{closed}"], "no Ray cluster answers at ray://127.0.0.1:"),
    (["--ray", "ray://127.0.0.1:1"], "no Ray cluster answers at ray://127.0.0.1:1 (Connection refused)"),
    (["--ray", "http://127.0.0.1:8265"], "--ray takes auto, HOST:PORT or ray://HOST:PORT"),
])
def test_ray_options_are_checked(tmp_path, capsys, args, message):
    if "--ray" in args and "--jobs" not in args and "--cpus-per-run" not in args:
        pytest.importorskip("ray", reason=RAY_MISSING)
    config = tmp_path / "grid.toml"
    config.write_text(GRID)
    args = [a.replace("{closed}", str(free_port())) for a in args]
    code, out, err = cli(capsys, "sweep", config, "--out", tmp_path / "runs", *args)
    assert code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_another_service_on_the_port_is_one_line_not_a_hang(tmp_path, capsys, scheme):
    """An HTTP server where the cluster should be: ray.init would retry "Failed to connect to GCS" for
    minutes; the gRPC probe says so in one line, nothing created. (The bound is a hang check, not a timing.)"""
    pytest.importorskip("ray", reason=RAY_MISSING)
    from http.server import HTTPServer, SimpleHTTPRequestHandler

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "grid.toml"
    config.write_text(GRID)
    address = f"{scheme}127.0.0.1:{server.server_address[1]}"
    try:
        start = time.monotonic()
        code, out, err = cli(capsys, "sweep", config, "--out", tmp_path / "runs", "--ray", address)
        took = time.monotonic() - start
    finally:
        server.shutdown()
        server.server_close()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"flarebench: error: no Ray cluster answers at {address}: another service does"), err
    assert took < 60 and not (tmp_path / "runs").exists()


def test_a_port_that_accepts_and_never_answers_is_bounded():
    from flarebench.errors import ConfigError
    from flarebench.sweep_ray import probe_grpc

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts the connection; nobody ever answers
        port = silent.getsockname()[1]
        with pytest.raises(ConfigError, match=r"no Ray cluster answers at 127.0.0.1:\d+ \(nothing answered within 0.5 s\)"):
            probe_grpc("127.0.0.1", port, f"127.0.0.1:{port}", timeout=0.5)


PLUGIN_GRID = """clients = 3
samples-per-client = 40
batch-size = 20
rounds = 3
eval-every = 1
device = "cpu"
engine = "sequential"
[model]
name = "plug-tiny"
width = 8
[sweep]
methods = ["plug-half-ef", "topk-ef"]
sparsities = [0.99]
seeds = [0]
"""


def test_plugin_parts_reach_the_ray_workers(ray_head, tmp_path):
    """A plug-in installed only on the driver's PYTHONPATH (not the head's): its preset, compressor and model
    run in Ray workers (the sweep's runtime environment carries the path) and equal a local sweep."""
    from conftest import env_with, plugin_site

    site = plugin_site(tmp_path)
    config = tmp_path / "plugin.toml"
    config.write_text(PLUGIN_GRID)
    sweep = [sys.executable, "-m", "flarebench", "sweep", str(config)]
    for where, extra in (("local", []), ("ray", ["--ray", ray_head])):
        done = subprocess.run([*sweep, *extra, "--out", str(tmp_path / where)], env=env_with(site), cwd=tmp_path,
                              capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    names = sorted(p.name for p in (tmp_path / "ray").iterdir() if (p / "metrics.csv").is_file())
    assert names == ["plug-half-ef-seed0", "topk-ef-s0.99-seed0"], names
    assert_same_runs(tmp_path / "ray", tmp_path / "local", names, compare=False)
    m = metrics(tmp_path / "ray" / "plug-half-ef-seed0")
    assert (m["uplink_bits"][1:] == 3 * 16 * (784 * 8 + 8 + 8 * 10 + 10)).all()  # fp16 entries of the width-8 model
