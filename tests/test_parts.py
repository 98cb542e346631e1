"""The part API: a compressor added by a test file alone runs end to end; every method is listed."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from flarebench import load_run, make_config, run
from flarebench.errors import DecodeError
from flarebench.methods.compressors import Compressor, MultiPhase
from flarebench.methods.presets import PRESETS, method_names, preset
from flarebench.methods.registry import REGISTRY, Param, register
from flarebench.wire.frame import ByteReader, ByteWriter

from conftest import cli


class HalfPrecisionEveryOther(Compressor):
    """A toy: every second entry of the flat update, as float16; the others are dropped.

    Payload: ``(kept [ceil(P/2)] float32)``; bytes: tag 0xEE, then P/2 float16 values (16 bits each).
    """

    kind, name = "compressor", "toy-every-other"
    summary = "every second entry in fp16 (a test's toy)"
    params = (Param("offset", int, 0, "first entry sent (0 or 1)", check=lambda x: x in (0, 1), rule="0 or 1"),)

    def compress(self, v, ctx):
        return [row[self.offset :: 2].detach().float().cpu() for row in v]

    def encode(self, payload):
        return ByteWriter().tag(0xEE).f16(payload.numpy()).getvalue()

    def decode(self, data):
        r = ByteReader(data, "toy")
        r.tag(0xEE)
        values = r.f16(len(range(self.offset, self.ctx.num_params, 2)))
        r.end()
        return torch.from_numpy(values)

    def decompress(self, payload, device=None):
        out = torch.zeros(self.ctx.num_params, device=device)
        out[self.offset :: 2] = payload.to(device)
        return out

    def nnz(self, payload):
        return payload.numel()

    def bound_bits(self, payload):
        return 16.0 * payload.numel()


@pytest.fixture
def toy_method():
    """Register the toy compressor and a method using it, for one test (no edit of the package)."""
    register(HalfPrecisionEveryOther)
    preset("toy", "toy: every other entry in fp16, with error feedback", "none", compressor="toy-every-other", memory="residual")
    yield "toy"
    del REGISTRY["compressor"]["toy-every-other"]
    del PRESETS["toy"]


def test_a_compressor_from_a_test_file_runs_end_to_end(tiny_config, toy_method, capsys):
    cfg = tiny_config(method=toy_method, params={"compressor": {"offset": 1}}, name="toy", rounds=3)
    assert (cfg.compressor, cfg.memory, cfg.params["compressor"]) == ("toy-every-other", "residual", {"offset": 1})
    result = run(cfg)
    m = load_run(result.path).metrics
    P = load_run(result.path).meta["num_params"]
    sent = len(range(1, P, 2))
    # bits are the toy's own bytes: 2-byte tag + 16 bits per sent entry, per client and round
    assert (m["uplink_bits"].iloc[1:] == 4 * (16 + 16 * sent)).all()
    assert (m["nnz"].iloc[1:] == 4 * sent).all() and (m["uplink_bound_bits"].iloc[1:] == 4 * 16.0 * sent).all()
    assert set(m["position_codecs"].iloc[1:]) == {"toy-every-other:4"}
    assert m["test_accuracy"].iloc[-1] > m["test_accuracy"].iloc[0] + 0.2  # it learns
    # and it composes: FLARE's pull with the toy's payload, from the command line
    code, out, err = cli(capsys, "methods", toy_method)
    assert code == 0 and "toy-every-other" in out and "-p compressor.offset=0" in out
    code, out, err = cli(capsys, "run", "--method", "flare", "--compressor", "toy-every-other", "-p", "offset=1", "--dry-run")
    assert code == 0, err
    assert json.loads(out)["config"]["params"]["compressor"] == {"offset": 1}


def test_registering_a_compressor_with_a_hook_missing_fails_naming_it():
    """The abstract base and the multi-phase mixin: an incomplete class is refused at registration."""

    class TwoPhaseNoContribution(MultiPhase, HalfPrecisionEveryOther):
        name = "toy-two-phase"

        def compress_phase(self, phase, v, broadcasts, ctx):
            return [row[phase::2].half() for row in v]

        def broadcast(self, phase, received, weights, ctx):
            return None

    with pytest.raises(TypeError, match="TwoPhaseNoContribution does not implement contribution$"):
        register(TwoPhaseNoContribution)
    assert "toy-two-phase" not in REGISTRY["compressor"]
    with pytest.raises(TypeError, match="does not implement bound_bits, compress, decode, decompress, encode, nnz"):
        register(type("Empty", (Compressor,), {"name": "toy-empty"}))


def test_the_toy_decoder_refuses_bad_bytes(toy_method):
    from flarebench.flat import Layout
    from flarebench.methods.registry import PartContext

    comp = HalfPrecisionEveryOther(PartContext(Layout.of(torch.nn.Linear(3, 2)), 1))
    good = comp.encode(torch.ones(4))
    for bad in (good[:-1], good + b"\0", b"\xfc\x01" + good[2:], b""):
        with pytest.raises(DecodeError):
            comp.decode(bad)


def test_methods_lists_every_preset_with_parts_params_and_paper(capsys):
    code, out, err = cli(capsys, "methods", "--json")
    assert code == 0
    entries = json.loads(out)
    assert [e["method"] for e in entries] == method_names()
    for e in entries:
        assert e["paper"] and e["description"]
        assert [p["kind"] for p in e["parts"]] == ["regularizer", "compressor", "memory", "aggregator"]
        for part in e["parts"]:
            for q in part["params"]:
                assert q["help"] and q["type"] in {"int", "float", "str", "bool"}
    flare = next(e for e in entries if e["method"] == "flare")
    reg = flare["parts"][0]
    assert reg["name"] == "flare" and {q["name"]: q["value"] for q in reg["params"]} == {
        "tau0": 0.05, "decay": 1.1, "steps": 1, "percentile": 50.0}
    code, out, _ = cli(capsys, "methods", "flare")
    assert code == 0 and "-p regularizer.tau0=0.05" in out and "Greidi & Cohen" in out


def test_unknown_method_and_bad_param_are_one_line(capsys, tmp_path):
    for args, fragment in [
        (["run", "--method", "nope"], "unknown method 'nope'"),
        (["run", "--compressor", "nope"], "unknown compressor 'nope'"),
        (["run", "-p", "compressor.rounding=sideways"], "compressor.rounding must be one of: round, reference"),
        (["run", "-p", "regularizer.tau0=-1"], "regularizer.tau0 must be >= 0"),
        (["run", "-p", "regularizer.tau0=nan"], "regularizer.tau0 must be a finite number"),
        (["run", "--method", "flare", "--memory", "none"], "regularizer flare pulls toward w"),
        (["methods", "nope"], "unknown method 'nope'"),
    ]:
        code, out, err = cli(capsys, *args, "--out", str(tmp_path / "r")) if args[0] == "run" else cli(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and fragment in err, (args, err)
    assert not (tmp_path / "r").exists()


def test_compare_orders_and_colours_by_preset_without_a_list():
    from flarebench.compare import method_index
    from flarebench.plots import method_color

    names = method_names()
    assert [method_index(n) for n in names] == list(range(len(names)))
    from flarebench.styles import method_style

    styles = [method_style(n) for n in names]
    assert len(set(styles)) == len(styles)  # every method its own style (colour x marker x line style)
    assert method_color("none") == "#000000"


def test_pareto_front():
    from flarebench.plots import pareto_front

    bits = [10, 20, 5, 40, 20]
    acc = [0.5, 0.7, 0.2, 0.6, 0.9]
    assert pareto_front(bits, acc) == [2, 0, 4]  # 5 bits/0.2, 10/0.5, 20/0.9; 20/0.7 and 40/0.6 dominated
    assert np.all(np.diff([bits[i] for i in pareto_front(bits, acc)]) > 0)
