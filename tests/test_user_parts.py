"""Parts from the user: import references (files and modules) for models, datasets, partitions and compressors,
installed plug-ins (entry points), what config.json records of them, and their bad input (one line, exit 2,
nothing written)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import FLOWER_MISSING, USER_COMPRESSORS, cli, env_with, plugin_site

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["--clients", "4", "--samples-per-client", "50", "--batch-size", "25", "--eval-every", "1",
        "--device", "cpu", "--engine", "sequential", "--quiet"]

NET = '''
import math
from torch import nn


class Net(nn.Module):
    """A small MLP whose width is a parameter."""

    def __init__(self, input_shape, num_classes, width: int = 32, act: str = "relu"):
        super().__init__()
        self.f = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width),
                               nn.ReLU() if act == "relu" else nn.Tanh(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.f(x)


def factory(input_shape, num_classes, width=8):
    return Net(input_shape, num_classes, width)


def wrong_output(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes + 1))


def raises(input_shape, num_classes):
    raise ValueError("no such layer")


def not_a_module(input_shape, num_classes):
    return 42


def needs_depth(input_shape, num_classes, depth):
    return Net(input_shape, num_classes)


class DataDependent(Net):
    """Control flow on a value: vmap cannot batch it."""

    def forward(self, x):
        out = self.f(x)
        return out * 0 if out.sum().item() > 1e9 else out
'''

DATA = '''
import numpy as np
import torch


def blobs(n: int = 240, seed: int = 0):
    """Two Gaussian blobs in 6 dimensions; 4 owners."""
    g = np.random.default_rng(seed)
    y = g.integers(0, 2, n)
    x = (g.normal(size=(n, 6)) + 2.0 * y[:, None]).astype(np.float64)
    return x[: n * 3 // 4], y[: n * 3 // 4], x[n * 3 // 4:], y[n * 3 // 4:], np.arange(n * 3 // 4) % 4


def torch_sets():
    x = torch.randn(80, 1, 4, 4)
    y = torch.arange(80) % 3
    ds = torch.utils.data.TensorDataset(x, y)
    return ds, ds


def nan_inputs():
    x = np.zeros((10, 3), dtype=np.float32)
    x[3, 1] = np.nan
    return x, np.arange(10) % 2, x, np.arange(10) % 2


def halves(labels, clients, seed, stride: int = 1):
    """Client i: every clients-th sample from i (a user's partition)."""
    return [torch.arange(i, len(labels), clients * stride) for i in range(clients)]
'''



@pytest.fixture
def user_files(tmp_path):
    for name, text in (("net.py", NET), ("data.py", DATA)):
        (tmp_path / name).write_text(text)
    shutil.copy(USER_COMPRESSORS, tmp_path / "comp.py")
    return tmp_path


def refused(capsys, fragment, *args):
    code, out, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("flarebench: error: "), (args, err)
    assert fragment in lines[0] and "Traceback" not in err, (fragment, err)
    return lines[0]


def test_model_file_reference_runs_with_its_parameters_and_is_recorded(user_files, tmp_path, capsys):
    net = user_files / "net.py"
    code, _, err = cli(capsys, "run", "--model", f"{net}:Net", "-p", "model.width=8", "--method", "stc", "--rounds", "2",
                       *TINY, "--out", tmp_path / "r")
    assert code == 0, err
    (run_dir,) = (tmp_path / "r").iterdir()
    assert run_dir.name.startswith("stc-s0.999-mnist-embedded-Net-")  # the attribute names the run, not the path
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["config"]["model"] == f"{net.resolve()}:Net"
    assert meta["config"]["params"]["model"] == {"width": 8, "act": "relu"}
    assert meta["config"]["sources"] == {"model": {"reference": f"{net.resolve()}:Net", "file": str(net.resolve()),
                                                   "sha256": hashlib.sha256(net.read_bytes()).hexdigest()}}
    assert meta["num_params"] == 784 * 8 + 8 + 8 * 10 + 10


def test_model_parameters_are_checked_against_the_signature(user_files, tmp_path, capsys):
    net, out = user_files / "net.py", tmp_path / "r"
    line = refused(capsys, "model", "run", "--model", f"{net}:Net", "-p", "model.widht=8", "--out", out)
    assert "has no parameter 'widht' (did you mean 'width'?); its parameters: width, act" in line
    refused(capsys, "model.width must be int, got 'wide'", "run", "--model", f"{net}:Net", "-p", "model.width=wide", "--out", out)
    refused(capsys, "its argument 'depth' needs a default", "run", "--model", f"{net}:needs_depth", "--out", out)
    assert not out.exists()


def test_a_model_vmap_cannot_batch_falls_back_to_sequential_with_its_reason(user_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLAREBENCH_ENGINE_CACHE", "off")
    code, _, err = cli(capsys, "run", "--model", f"{user_files / 'net.py'}:DataDependent", "--rounds", "1", "--clients", "3",
                       "--samples-per-client", "30", "--device", "cpu", "--engine", "vectorized", "--quiet",
                       "--out", tmp_path / "r", "--name", "dd")
    assert code == 0, err
    assert "fallback: vmap cannot batch the model (RuntimeError: vmap:" in err  # the logged reason
    engine = json.loads((tmp_path / "r" / "dd" / "config.json").read_text())["engine_resolved"]
    assert engine["engine"] == "sequential" and engine["reason"].startswith("fallback: vmap cannot batch the model")


@pytest.mark.parametrize("reference,fragment", [
    ("NETDIR/missing.py:Net", "file NETDIR/missing.py not found"),
    ("no_such_package_x.nets:Net", "module no_such_package_x not found (is it installed, or on PYTHONPATH?)"),
    ("NETDIR/net.py:Nope", "NETDIR/net.py has no attribute 'Nope'"),
    ("NETDIR/net.py:", "an import reference is MODULE:NAME or PATH.py:NAME; nothing follows the ':'"),
    ("NETDIR/net.py:raises", "failed to build for inputs [1, 28, 28] and 10 classes (ValueError: no such layer)"),
    ("NETDIR/net.py:wrong_output", "must map inputs [2, 1, 28, 28] to float logits [2, 10] (batch, num_classes=10), got [2, 11]"),
    ("NETDIR/net.py:not_a_module", "built a int, not a torch.nn.Module"),
])
def test_a_bad_model_reference_is_one_line_and_writes_nothing(user_files, tmp_path, capsys, reference, fragment):
    out = tmp_path / "r"
    refused(capsys, fragment.replace("NETDIR", str(user_files)), "run", "--model", reference.replace("NETDIR", str(user_files)),
            "--rounds", "1", *TINY, "--out", out)
    assert not out.exists()


def test_a_dataset_and_a_partition_from_the_user(user_files, tmp_path, capsys):
    data = user_files / "data.py"
    code, _, err = cli(capsys, "run", "--dataset", f"{data}:blobs", "-p", "dataset.n=200", "--partition", "natural",
                       "--samples-per-client", "20", "--method", "topk-ef", "--rounds", "2", "--clients", "4", "--eval-every", "1",
                       "--device", "cpu", "--engine", "sequential", "--quiet", "--out", tmp_path / "r", "--name", "blobs")
    assert code == 0, err
    meta = json.loads((tmp_path / "r" / "blobs" / "config.json").read_text())
    assert meta["client_samples"] == [20, 20, 20, 20] and meta["test_samples"] == 50
    assert meta["num_params"] == 6 * 100 + 100 + 100 * 2 + 2  # mlp on 6 float features, 2 classes
    code, _, err = cli(capsys, "run", "--dataset", f"{data}:torch_sets", "--partition", f"{data}:halves", "--rounds", "1",
                       "--clients", "4", "--batch-size", "10", "--device", "cpu", "--engine", "sequential", "--quiet",
                       "--out", tmp_path / "r", "--name", "sets")
    assert code == 0, err
    meta = json.loads((tmp_path / "r" / "sets" / "config.json").read_text())
    assert meta["client_samples"] == [20, 20, 20, 20] and meta["num_params"] == 16 * 100 + 100 + 100 * 3 + 3
    refused(capsys, "dataset nan_inputs: x_train has NaN or infinite values", "run", "--dataset", f"{data}:nan_inputs",
            "--clients", "2", "--out", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_a_user_compressor_runs_and_its_wire_format_is_checked_on_its_first_round(user_files, tmp_path, capsys):
    comp = user_files / "comp.py"
    code, _, err = cli(capsys, "run", "--method", "topk-ef", "--compressor", f"{comp}:Half", "--rounds", "2", *TINY,
                       "--out", tmp_path / "r", "--name", "half")
    assert code == 0, err
    m = np.genfromtxt(tmp_path / "r" / "half" / "metrics.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert (m["uplink_bits"][1:] == 4 * 16 * 79_510).all()  # 4 clients x 79,510 entries x 16 bits, counted from bytes
    for cls, fragment in (("Lossy", "decode(encode(x)) changes the payload (decompressed values differ)"),
                          ("NotBytes", "encode() must return bytes (bits are counted as 8 * len(bytes)), got list"),
                          ("Boasting", "states a floor of 5.08864e+06 bits (bound_bits) above the 1272160 bits of its 159020 bytes"),
                          ("Unfinished", "Unfinished does not implement bound_bits, decode, decompress, encode, nnz")):
        refused(capsys, fragment, "run", "--method", "topk-ef", "--compressor", f"{comp}:{cls}", "--rounds", "2", *TINY,
                "--out", tmp_path / "bad")
        assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_a_part_of_another_kind_is_one_line(user_files, tmp_path, capsys):
    refused(capsys, "compressor '", "run", "--compressor", f"{user_files / 'net.py'}:Net", "--out", tmp_path / "r")
    refused(capsys, "is a compressor part, not a memory", "run", "--memory", f"{user_files / 'comp.py'}:Half", "--out", tmp_path / "r")


def test_resume_refuses_a_changed_or_missing_file(user_files, tmp_path, capsys):
    net = user_files / "net.py"
    code, _, err = cli(capsys, "run", "--model", f"{net}:Net", "--rounds", "1", *TINY, "--out", tmp_path / "r", "--name", "n")
    assert code == 0, err
    run_dir = tmp_path / "r" / "n"
    before = (run_dir / "metrics.csv").read_text()
    net.write_text(NET + "\n# edited\n")
    line = refused(capsys, f"model {net.resolve()}:Net: {net.resolve()} changed since the run started", "run", "--resume",
                   run_dir, "--rounds", "2")
    assert "sha256" in line
    net.unlink()
    refused(capsys, f"file {net.resolve()} not found", "run", "--resume", run_dir, "--rounds", "2")
    assert (run_dir / "metrics.csv").read_text() == before


# ---------------------------------------------------------------------------------------------- installed plug-ins
def flarebench(site, *args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flarebench", *map(str, args)], env=env_with(site), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_plugin_parts_and_preset_are_listed_and_run(tmp_path):
    site = plugin_site(tmp_path, broken=True)
    listed = flarebench(site, "methods")
    assert listed.returncode == 0, listed.stderr
    assert "plug-half-ef: fp16 entries with error feedback" in listed.stdout and "from plug-in fbplug (fbplug 0.1)" in listed.stdout
    # the broken plug-in: one warning naming it; everything else works
    assert listed.stderr.strip().splitlines() == [
        "flarebench: warning: plug-in fbbroken (fbbroken_not_there) failed to import and is skipped: "
        "ModuleNotFoundError: No module named 'fbbroken_not_there'"]
    parts = flarebench(site, "parts", "model")
    assert "plug-tiny: flatten, dense width + tanh, dense classes [plug-in fbplug (fbplug 0.1)]" in parts.stdout
    out = tmp_path / "r"
    preset = flarebench(site, "run", "--method", "plug-half-ef", "--model", "plug-tiny", "-p", "model.width=4",
                        "--rounds", "2", *TINY, "--out", out, "--name", "preset")
    assert preset.returncode == 0, preset.stderr
    swapped = flarebench(site, "run", "--method", "flare", "--compressor", "plug-half", "--rounds", "2", *TINY,
                         "--out", out, "--name", "swapped")
    assert swapped.returncode == 0, swapped.stderr
    meta = json.loads((out / "preset" / "config.json").read_text())
    origin = {"plugin": "fbplug", "distribution": "fbplug", "version": "0.1"}
    assert meta["config"]["sources"] == {"compressor": {"name": "plug-half", **origin}, "model": {"name": "plug-tiny", **origin},
                                         "method": {"name": "plug-half-ef", **origin}}
    assert meta["num_params"] == 784 * 4 + 4 + 4 * 10 + 10
    m = np.genfromtxt(out / "preset" / "metrics.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert (m["uplink_bits"][1:] == 4 * 16 * meta["num_params"]).all()
    compared = flarebench(site, "compare", out, "--out", tmp_path / "cmp")
    assert compared.returncode == 0, compared.stderr
    assert "plug-half-ef" in compared.stdout and "flare+plug-half" in compared.stdout
    # without the plug-in, its run's parts are one line
    gone = subprocess.run([sys.executable, "-m", "flarebench", "run", "--resume", str(out / "preset"), "--rounds", "3"],
                          env=env_with(), capture_output=True, text=True, timeout=300)
    assert gone.returncode == 2 and len(gone.stderr.strip().splitlines()) == 1, gone.stderr
    assert "unknown method 'plug-half-ef'" in gone.stderr


def test_plugin_model_and_compressor_on_the_flower_simulation(tmp_path):
    pytest.importorskip("flwr", reason=FLOWER_MISSING)
    site = plugin_site(tmp_path)
    out = tmp_path / "r"
    common = ["--model", "plug-tiny", "--compressor", "plug-half", "--method", "topk-ef", "--rounds", "2", "--clients", "3",
              "--samples-per-client", "40", "--batch-size", "20", "--eval-every", "1", "--device", "cpu", "--engine",
              "sequential", "--quiet", "--out", out]
    flower = flarebench(site, "run", *common, "--backend", "flower", "--name", "flower", timeout=400)
    assert flower.returncode == 0, flower.stderr[-3000:]
    local = flarebench(site, "run", *common, "--name", "local")
    assert local.returncode == 0, local.stderr
    a = np.genfromtxt(out / "flower" / "metrics.csv", delimiter=",", names=True, dtype=None, encoding=None)
    b = np.genfromtxt(out / "local" / "metrics.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert (a["uplink_bits"] == b["uplink_bits"]).all() and (a["uplink_bits"][1:] == 3 * 16 * (784 * 16 + 16 + 16 * 10 + 10)).all()
    np.testing.assert_allclose(a["test_accuracy"], b["test_accuracy"], atol=1e-6)


def test_a_user_part_run_resumes_after_sigkill_identically(user_files, tmp_path, capsys):
    import signal
    import time

    import pandas as pd

    from flarebench import load_run

    out, rounds = tmp_path / "r", 30
    args = ["run", "--model", f"{user_files / 'net.py'}:Net", "-p", "model.width=16", "--compressor",
            f"{user_files / 'comp.py'}:Half", "--method", "topk-ef", "--clients", "4", "--samples-per-client", "60",
            "--batch-size", "20", "--clients-per-round", "3", "--keep-optimizer-state", "--eval-every", "2",
            "--device", "cpu", "--engine", "sequential", "--rounds", str(rounds), "--out", str(out), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "flarebench", *args, "--name", "killed", "--checkpoint-every", "3"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env_with())
    run_dir, deadline = out / "killed", time.monotonic() + 240

    def rows() -> int:
        try:
            return (run_dir / "metrics.csv").read_text().count("\n") - 1
        except FileNotFoundError:
            return 0

    while rows() < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert 8 <= rows() < rounds + 1
    code, _, err = cli(capsys, "run", "--resume", run_dir, "--quiet")
    assert code == 0, err
    code, _, err = cli(capsys, *args, "--name", "reference")
    assert code == 0, err
    pd.testing.assert_frame_equal(load_run(run_dir).metrics.drop(columns="wall_time_s"),
                                  load_run(out / "reference").metrics.drop(columns="wall_time_s"), check_exact=True)
    assert json.loads((run_dir / "config.json").read_text())["status"] == "complete"


def test_a_module_reference_records_its_distribution_and_version(tmp_path, capsys, monkeypatch):
    site = tmp_path / "site"
    (site / "usernets").mkdir(parents=True)
    (site / "usernets" / "__init__.py").write_text(NET)
    info = site / "usernets-2.5.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: usernets\nVersion: 2.5\n")
    (info / "top_level.txt").write_text("usernets\n")
    monkeypatch.syspath_prepend(str(site))
    code, _, err = cli(capsys, "run", "--model", "usernets:factory", "-p", "model.width=4", "--rounds", "1", *TINY,
                       "--out", tmp_path / "r", "--name", "m")
    assert code == 0, err
    config = json.loads((tmp_path / "r" / "m" / "config.json").read_text())["config"]
    assert config["model"] == "usernets:factory" and config["params"]["model"] == {"width": 4}
    assert config["sources"] == {"model": {"reference": "usernets:factory", "module": "usernets",
                                           "distribution": "usernets", "version": "2.5"}}
