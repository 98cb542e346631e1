"""The paper's baselines as presets of parts: EF21 (honest) and FedProx + EC."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from flarebench import make_config, setup
from flarebench.data import Dataset
from flarebench.engine.round import Federation
from flarebench.flat import Layout
from flarebench.methods.aggregation import EF21Aggregator
from flarebench.methods.compressors import tensor_k
from flarebench.methods.memory import EF21Memory
from flarebench.methods.presets import PRESETS, build_parts
from flarebench.methods.registry import PartContext

README = Path(__file__).resolve().parents[1] / "README.md"


class ScriptedEngine:
    """Stands in for local training: round r returns ``w + D[r]`` for the clients (rows of D[r])."""

    def __init__(self, updates):
        self.updates, self.calls = updates, 0

    def train(self, w, *args, **kwargs):
        d = self.updates[self.calls]
        self.calls += 1
        return w.unsqueeze(0) + d, [(0.0, 1)] * d.shape[0]  # per client: (loss sum, samples)


def test_ef21_hand_computed_two_rounds():
    """Two clients (1 and 3 samples), one 4-entry tensor, density 0.5 -> k = 2 per message.

    Round 1: d1 = [1, -3, .5, 2], d2 = [0, 1, -4, .2]; g = 0 so c = topk(d):
             c1 = [0, -3, 0, 2], c2 = [0, 1, -4, 0]; g1 = c1, g2 = c2;
             update = (1*g1 + 3*g2)/4 = [0, 0, -3, .5].
    Round 2: d1 = [2, -2, .5, 2]  -> d1 - g1 = [2, 1, .5, 0]   -> c1 = [2, 1, 0, 0],   g1 = [2, -2, 0, 2];
             d2 = [1.5, 1, -3, .7] -> d2 - g2 = [1.5, 0, 1, .7] -> c2 = [1.5, 0, 1, 0], g2 = [1.5, 1, -3, 0];
             update = (g1 + 3*g2)/4 = [1.625, .25, -2.25, .5].
    """
    cfg = make_config(method="ef21", sparsity=0.5, clients=2, rounds=2, device="cpu", engine="sequential")
    model = nn.Linear(2, 2, bias=False)
    layout = Layout.of(model)
    parts = build_parts(cfg, layout)
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64)
    data = Dataset("toy", x, y, x, y, 2)
    fed = Federation(cfg, model, layout, parts, data, [torch.tensor([0]), torch.tensor([1, 2, 3])], torch.device("cpu"))
    D = [
        torch.tensor([[1.0, -3.0, 0.5, 2.0], [0.0, 1.0, -4.0, 0.2]]),
        torch.tensor([[2.0, -2.0, 0.5, 2.0], [1.5, 1.0, -3.0, 0.7]]),
    ]
    fed.clients.engine = ScriptedEngine(D)
    w0 = fed.w.clone()

    s1 = fed.run_round(0)
    torch.testing.assert_close(fed.w - w0, torch.tensor([0.0, 0.0, -3.0, 0.5]))
    torch.testing.assert_close(fed.states.tensors["memory.g"], torch.tensor([[0.0, -3.0, 0.0, 2.0], [0.0, 1.0, -4.0, 0.0]]))
    w1 = fed.w.clone()

    s2 = fed.run_round(1)
    torch.testing.assert_close(fed.w - w1, torch.tensor([1.625, 0.25, -2.25, 0.5]))
    g = torch.tensor([[2.0, -2.0, 0.0, 2.0], [1.5, 1.0, -3.0, 0.0]])
    torch.testing.assert_close(fed.states.tensors["memory.g"], g)
    torch.testing.assert_close(parts.aggregator.g, g)  # the server's copy stays in step
    # honest: only the innovations travel, k = 2 entries per message
    assert s1.nnz == s2.nnz == 2 * 2
    sent2 = [parts.compressor.decompress(parts.compressor.decode(data)) for data in s2.messages]
    torch.testing.assert_close(torch.stack(sent2), torch.tensor([[2.0, 1.0, 0.0, 0.0], [1.5, 0.0, 1.0, 0.0]]))


def test_ef21_parts_keep_state_per_client_and_checkpoint():
    ctx = PartContext(Layout.of(nn.Linear(2, 1, bias=False)), num_clients=3)
    mem, agg = EF21Memory(ctx), EF21Aggregator(ctx)
    g = torch.zeros(3, 2)  # the clients' states, as the local backend stores them
    state = {"g": g[[2]].clone()}
    v = mem.compensate(torch.tensor([[1.0, 2.0]]), state, None)
    mem.update(v, torch.tensor([[1.0, 0.0]]), state, None)
    g[[2]] = state["g"]
    agg.aggregate(torch.tensor([[1.0, 0.0]]), torch.tensor([5.0]), [2], None)
    assert g[2].tolist() == [1.0, 0.0] and g[:2].abs().sum() == 0
    assert torch.equal(g, agg.g)
    other = EF21Aggregator(ctx)
    other.load_state_dict(agg.state_dict())
    assert torch.equal(other.g, agg.g)


def test_ef21_in_a_real_run_sends_k_per_tensor(tiny_config):
    s = setup(tiny_config(method="ef21", sparsity=0.99, clients_per_round=3))
    fed = s.federation
    ks = [tensor_k(n, 0.01) for n in s.layout.sizes]
    for r in range(3):
        stats = fed.run_round(r)
        assert stats.nnz == 3 * sum(ks)
    assert torch.equal(fed.states.tensors["memory.g"], fed.parts.aggregator.g)
    assert fed.parts.aggregator.g.abs().sum() > 0


def test_fedprox_ef_parts():
    cfg = make_config(method="fedprox-ef", params={"regularizer": {"tau0": 0.2, "decay": 2.0}})
    parts = build_parts(cfg, Layout.of(nn.Linear(2, 2)))
    anchor = parts.regularizer.anchor(torch.ones(6), None, 1, 3)
    assert anchor.steps is None and anchor.tau == pytest.approx(0.2 / 2.0**2)  # every local step, tau0 / c^(r+1)
    assert parts.memory.name == "residual" and parts.compressor.name == "topk"


def test_presets_are_documented():
    table = README.read_text()
    for name in PRESETS:
        assert PRESETS[name].description and PRESETS[name].paper
        assert re.search(rf"^\| `{re.escape(name)}`", table, re.M), f"README methods table lacks {name}"


def test_prox_params_reach_the_config(capsys):
    from flarebench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", "--method", "fedprox-ef", "-p", "regularizer.tau0=0.3", "-p", "decay=1.5", "--dry-run"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert '"tau0": 0.3' in out and '"decay": 1.5' in out
