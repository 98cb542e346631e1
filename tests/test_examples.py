"""examples/: the custom model, the .npz writer and the plug-in's compressor do what their docs say."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flarebench.data.tensors import load_tensors
from flarebench.data.validate import validate
from flarebench.errors import DecodeError
from flarebench.library import RoundContext, build
from flarebench.methods.presets import PRESETS
from flarebench.methods.registry import REGISTRY

from conftest import cli, env_with
from test_bad_input import refused

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PLUGIN_SRC = EXAMPLES / "plugin" / "src"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def plugin(monkeypatch):
    """The plug-in package imported as its entry point would be; its parts unregistered afterwards."""
    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    module = importlib.import_module("flarebench_topk8")
    yield module
    REGISTRY["compressor"].pop("topk8", None)
    REGISTRY["model"].pop("leaf-lstm", None)
    PRESETS.pop("topk8-ef", None)
    for name in [m for m in sys.modules if m == "flarebench_topk8" or m.startswith("flarebench_topk8.")]:
        del sys.modules[name]


def test_custom_model_resnet_is_vmap_friendly():
    Net = load_example("custom_model").Net
    torch.manual_seed(0)
    model = Net((3, 32, 32), 10, width=8)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x = torch.randn(3, 4, 3, 32, 32)  # 3 clients' batches
    params = {k: torch.stack([v, v + 0.01, v - 0.01]) for k, v in model.named_parameters()}

    def forward(p, xb):
        return torch.func.functional_call(model, p, (xb,))

    batched = torch.vmap(forward)(params, x)
    assert batched.shape == (3, 4, 10)
    for i in range(3):
        assert torch.allclose(batched[i], forward({k: v[i] for k, v in params.items()}, x[i]), atol=1e-5)
    assert sum(p.numel() for p in Net((1, 28, 28), 10).parameters()) == 77_754  # the docstring's count
    with pytest.raises(ValueError, match="multiple of groups"):
        Net((1, 28, 28), 10, width=6)


def test_make_npz_dataset_writes_the_tensors_format(tmp_path, capsys):
    out = tmp_path / "mnist_clients.npz"
    load_example("make_npz_dataset").main([str(out), "--clients", "5", "--alpha", "0.3", "--train", "500", "--test", "100"])
    assert "500 training samples over 5 clients" in capsys.readouterr().out
    data = load_tensors(str(out))
    validate(data)
    assert data.x_train.shape == (500, 1, 28, 28) and data.x_test.shape == (100, 1, 28, 28) and data.num_classes == 10
    assert len(data.natural_clients) == 5 and sum(len(c) for c in data.natural_clients) == 500


def test_plugin_topk8_is_honest(plugin):
    sizes = [(40, 30), 7, 1, 300]
    c = build("compressor", "topk8", sizes, sparsity=0.9)
    P = c.ctx.num_params
    g = torch.Generator().manual_seed(0)
    v = torch.randn(4, P, generator=g) * torch.tensor([1.0, 1e-6, 1e4, 0.0])[:, None]  # scales far apart; an all-zero row
    payloads = c.compress(v, RoundContext(0, [0, 1, 2, 3]))
    for row, p in zip(v, payloads):
        data = c.encode(p)
        assert c.decode(data) == p  # the bytes carry the payload exactly: the server sees what the client kept
        ks, widths = [max(1, round(0.1 * n)) for n in (1200, 7, 1, 300)], [11, 3, 1, 9]
        assert len(data) == 2 + sum(math.ceil(k * w / 8) + 4 + k for k, w in zip(ks, widths))  # the docstring's layout
        assert c.bound_bits(p) <= 8 * len(data)
        dense, start = c.decompress(c.decode(data)), 0
        for n, k, scale in zip((1200, 7, 1, 300), ks, p.scales):
            block, got = row[start : start + n], dense[start : start + n]
            top = block.abs().topk(k).indices
            assert set(torch.nonzero(got).flatten().tolist()) <= set(top.tolist())  # only top-k positions
            assert torch.all((got[top] - block[top]).abs() <= scale / 254 * (1 + 1e-5) + 1e-30)  # half a code step
            start += n
    data = c.encode(payloads[0])
    for bad in (data[:-1], data + b"\x00", b"\xfc\x20" + data[2:]):
        with pytest.raises(DecodeError):
            c.decode(bad)
    assert PRESETS["topk8-ef"].compressor == "topk8" and PRESETS["topk8-ef"].memory == "residual"


@pytest.mark.usefixtures("one_torch_thread")
def test_custom_model_on_an_npz_dataset_runs_stc(capsys, tmp_path):
    """The issue's first 'done when': a model file and a tensors file, with stc, for 3 rounds."""
    data = tmp_path / "d.npz"
    load_example("make_npz_dataset").main([str(data), "--clients", "4", "--train", "200", "--test", "50"])
    args = ["run", "--model", f"{EXAMPLES / 'custom_model.py'}:Net", "-p", "model.width=8", "--dataset", "tensors",
            "-p", f"dataset.path={data}", "--partition", "natural", "--clients", "4", "--method", "stc", "--sparsity", "0.99",
            "--rounds", "3", "--batch-size", "25", "--eval-every", "3", "--device", "cpu", "-q", "--out", tmp_path / "r"]
    code, _, err = cli(capsys, *args, "--name", "resnet")
    assert code == 0, err
    meta = json.loads((tmp_path / "r" / "resnet" / "config.json").read_text())
    assert meta["config"]["params"]["model"] == {"width": 8, "groups": 4}
    assert meta["config"]["params"]["dataset"] == {"path": str(data), "num_classes": 0}
    refused(capsys, "depth", *args, "-p", "model.depth=3", "--name", "bad")  # checked against Net's signature
    assert not (tmp_path / "r" / "bad").exists()


def test_the_example_plugin_installed_lists_and_runs_honestly(tmp_path):
    """examples/plugin as pip would install it (a .dist-info with its entry point): `flarebench methods` lists its
    compressor, preset and model; its preset and its compressor in another method run; bits are its bytes."""
    site = tmp_path / "site"
    info = site / "flarebench_topk8-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flarebench-topk8\nVersion: 0.1.0\n")
    points = tomllib.loads((EXAMPLES / "plugin" / "pyproject.toml").read_text())["project"]["entry-points"]["flarebench.parts"]
    (info / "entry_points.txt").write_text("[flarebench.parts]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    script = f"""
import sys
from flarebench.cli import main
def call(*args):
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        assert e.code in (0, None), (args, e.code)
call("methods")
call("parts", "model")
tiny = ["--model", "mlp", "--clients", "2", "--samples-per-client", "100", "--batch-size", "50", "--rounds", "2",
        "--eval-every", "2", "--sparsity", "0.99", "--device", "cpu", "--engine", "sequential", "-q", "--out", {str(tmp_path / 'r')!r}]
call("run", "--method", "topk8-ef", *tiny, "--name", "preset")
call("run", "--method", "flare", "--compressor", "topk8", *tiny, "--name", "swapped")
"""
    done = subprocess.run([sys.executable, "-c", script], env=env_with(site, PLUGIN_SRC), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "topk8-ef: top-k with 8-bit values" in done.stdout and "leaf-lstm: LEAF's Shakespeare model" in done.stdout
    for name in ("preset", "swapped"):
        meta = json.loads((tmp_path / "r" / name / "config.json").read_text())
        assert meta["config"]["sources"]["compressor"]["distribution"] == "flarebench-topk8"
        m = np.genfromtxt(tmp_path / "r" / name / "metrics.csv", delimiter=",", names=True, dtype=None, encoding=None)
        sizes = [784 * 100, 100, 1000, 10]  # mlp on MNIST
        ks, widths = [max(1, round(0.01 * n)) for n in sizes], [max(1, math.ceil(math.log2(n))) for n in sizes]
        per_client = 8 * (2 + sum(math.ceil(k * w / 8) + 4 + k for k, w in zip(ks, widths)))
        assert (m["uplink_bits"][1:] == 2 * per_client).all()  # 2 clients, the bytes of the docstring's layout
