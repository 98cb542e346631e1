"""examples/: the custom model, the .npz writer and the plug-in's compressor do what their docs say."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
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
