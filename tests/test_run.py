"""End-to-end runs on the shipped MNIST: equivalences, the EF invariant, honest bit counts."""

import pandas as pd
import pytest
import torch

from flarebench import load_run, run, setup
from flarebench.methods.compressors import tensor_k

def metrics(cfg):
    """A run's metrics.csv without the wall time (the one column that differs between equal runs)."""
    return load_run(run(cfg).path).metrics.drop(columns=["wall_time_s"])


@pytest.mark.parametrize("method, pull", [("flare", 0.05), ("fedprox-ef", 0.5)])
def test_anchor_with_tau0_zero_is_topk_ef(tiny_config, method, pull):
    """FLARE's and FedProx-EF's pull with tau0 = 0 is no pull: the run is topk-ef's, to the bit."""
    a = metrics(tiny_config(method=method, params={"regularizer": {"tau0": 0.0}}, name=f"{method}0"))
    b = metrics(tiny_config(method="topk-ef", name="topk"))
    pd.testing.assert_frame_equal(a, b)
    # with a real pull it differs (so the equality above is not vacuous)
    c = metrics(tiny_config(method=method, params={"regularizer": {"tau0": pull}}, name=method))
    assert not c["test_loss"].equals(b["test_loss"])


def test_topk_ef_keeping_every_entry_is_fedavg(tiny_config):
    dense = setup(tiny_config(method="none"))
    full = setup(tiny_config(method="topk-ef", sparsity=1e-12))
    assert full.federation.parts.compressor.counts == tuple(full.layout.sizes)
    for r in range(3):
        dense.federation.run_round(r)
        full.federation.run_round(r)
        torch.testing.assert_close(full.federation.w, dense.federation.w, rtol=1e-5, atol=1e-6)
    assert full.federation.states.tensors["memory.acc"].abs().max() == 0


def test_ef_invariant_in_a_real_run(tiny_config):
    s = setup(tiny_config(method="flare", clients_per_round=3, rounds=4))
    fed, mem = s.federation, s.federation.parts.memory
    seen = []
    compensate, update = mem.compensate, mem.update

    def spy_compensate(d, state, ctx):
        seen.append({"ids": list(ctx.ids), "d": d.clone(), "old": mem.residual(state).clone()})
        return compensate(d, state, ctx)

    def spy_update(v, sent, state, ctx):
        update(v, sent, state, ctx)
        seen[-1].update(sent=sent.clone(), new=mem.residual(state).clone())

    mem.compensate, mem.update = spy_compensate, spy_update
    for r in range(4):
        stats = fed.run_round(r)
        rec = seen[-1]
        assert rec["ids"] == stats.clients and len(rec["ids"]) == 3
        # per client: sent + new residual == update + old residual
        torch.testing.assert_close(rec["sent"] + rec["new"], rec["d"] + rec["old"], rtol=0, atol=1e-6)
        # what the client subtracts is exactly what the server decodes from the bytes
        for k, data in enumerate(stats.messages):
            decoded = fed.parts.compressor.decompress(fed.parts.compressor.decode(data))
            assert torch.equal(decoded, rec["sent"][k])
        assert torch.equal(fed.states.tensors["memory.acc"][rec["ids"]], rec["new"])  # stored for the next round
    assert any(rec["old"].abs().sum() > 0 for rec in seen[1:])  # memory really carries over


@pytest.mark.parametrize("method", ["topk-ef", "randk", "flare", "none"])
def test_nnz_and_bits_come_from_the_encoded_bytes(tiny_config, method):
    s = setup(tiny_config(method=method, sparsity=0.99))
    fed = s.federation
    ks = [n if method == "none" else tensor_k(n, 0.01) for n in s.layout.sizes]
    for r in range(2):
        stats = fed.run_round(r)
        assert stats.nnz == len(stats.clients) * sum(ks)
        assert stats.uplink_bits == sum(8 * len(data) for data in stats.messages)
        assert stats.downlink_bits == 32 * s.layout.num_params * len(stats.clients)


def test_metrics_csv_contract(tiny_config):
    result = run(tiny_config(method="topk-ef", eval_every=2, rounds=3, name="contract"))
    rec = load_run(result.path)
    m = rec.metrics
    assert list(m["round"]) == [0, 1, 2, 3]
    for col in ["round", "clients", "train_loss", "test_loss", "test_accuracy", "nnz", "uplink_bits",
                "cumulative_uplink_bits", "downlink_bits", "cumulative_downlink_bits", "wall_time_s"]:
        assert col in m.columns
    assert m["test_accuracy"].isna().tolist() == [False, True, False, False]  # every 2 rounds + the last
    assert (m["cumulative_uplink_bits"] == m["uplink_bits"].cumsum()).all()
    assert rec.meta["num_params"] == 79_510 and rec.meta["status"] == "complete"
    assert sum(t["numel"] for t in rec.meta["tensors"]) == 79_510
    assert rec.meta["config"]["method"] == "topk-ef" and rec.meta["torch_version"] == torch.__version__


def test_same_seed_same_metrics(tiny_config):
    a = metrics(tiny_config(method="randk", clients_per_round=2, name="a"))
    b = metrics(tiny_config(method="randk", clients_per_round=2, name="b"))
    pd.testing.assert_frame_equal(a, b)
    c = metrics(tiny_config(method="randk", clients_per_round=2, name="c", seed=1))
    assert not c["test_loss"].equals(a["test_loss"])


def test_fedavg_learns_on_embedded_mnist(tiny_config):
    """Stated accuracy: FedAvg (none), mlp, 10 clients x 800 images, batch 50, 10 rounds -> >= 0.90."""
    result = run(tiny_config(method="none", clients=10, samples_per_client=None, rounds=10, eval_every=10, name="fedavg"))
    assert result.rows[0]["test_accuracy"] < 0.2
    assert result.final_accuracy >= 0.90
