import pytest

from flarebench.config import RunConfig, load_toml, make_config
from flarebench.errors import ConfigError


def test_defaults_are_the_main_job():
    cfg = make_config()
    assert (cfg.method, cfg.sparsity, cfg.dataset) == ("flare", 0.999, "mnist-embedded")
    assert (cfg.regularizer, cfg.compressor, cfg.memory, cfg.aggregator) == ("flare", "topk", "residual", "weighted-mean")
    assert cfg.params["regularizer"] == {"tau0": 0.05, "decay": 1.1, "steps": 1, "percentile": 50.0}
    assert cfg.density == pytest.approx(0.001)


def test_toml_then_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('method = "topk-ef"\nsparsity = 0.99\nlocal-epochs = 2\nlr = 1\n[sweep]\nmethods = ["flare"]\n')
    cfg = make_config(p, sparsity=0.9)
    assert cfg.method == "topk-ef" and cfg.sparsity == 0.9 and cfg.local_epochs == 2
    assert isinstance(cfg.lr, float) and cfg.lr == 1.0
    assert load_toml(p)["sweep"] == {"methods": ["flare"]}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("bogus = 1\n", "unknown key 'bogus'"),
        ("method = \n", "malformed TOML"),
        ("rounds = 'ten'\n", "rounds must be int"),
        ("ef = 1\n", "'ef' in .* is gone: error feedback is a part now: --memory residual \\| none"),
        ("flare-tau0 = 1\n", "'flare-tau0' in .* is gone: .*-p regularizer.tau0="),
        ("[regularizer]\ntau = 1\n", "regularizer 'flare' has no parameter 'tau' \\(did you mean 'tau0'\\?\\)"),
        ("[regularizer.flare]\ntau0 = 'x'\n", "regularizer.tau0 must be float"),
        ("[compressor]\nname = 'nope'\n", "unknown compressor 'nope'"),
    ],
)
def test_bad_toml(tmp_path, text, fragment):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        make_config(p)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (dict(method="nope"), "unknown method 'nope'"),
        (dict(dataset="imagenet"), "unknown dataset"),
        (dict(model="resnet"), "unknown model"),
        (dict(partition="zipf"), "unknown partition"),
        (dict(sparsity=0.0), "sparsity must be in \\(0, 1\\)"),
        (dict(sparsity=1.0), "sparsity must be in \\(0, 1\\)"),
        (dict(rounds=0), "rounds must be >= 1"),
        (dict(clients=10, clients_per_round=11), "clients-per-round must be between 1 and clients"),
        (dict(lr=-1.0), "lr must be > 0"),
    ],
)
def test_bad_values(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make_config(**overrides)


def test_config_roundtrips_through_dict():
    cfg = make_config(method="randk", sparsity=0.99)
    assert RunConfig(**cfg.to_dict()) == cfg


def test_config_records_the_parts_that_run():
    """config.json's part names and parameters are the ones built: no field can claim another memory
    (the bug of the flat ``ef`` key: ``none`` with a lossy value codec recorded ef = true and ran none)."""
    from flarebench.flat import Layout
    from flarebench.methods.presets import build_parts, method_names
    import torch

    layout = Layout.of(torch.nn.Linear(3, 2))
    cases = [dict(method=m) for m in ("none", "topk", "topk-ef", "randk", "flare", "ef21", "fedprox-ef")]
    cases += [dict(method="none", params={"compressor": {"value_codec": "sign+scale"}}),
              dict(method="randk", memory="none"), dict(method="flare", compressor="randk")]
    for kw in cases:
        cfg = make_config(**kw)
        parts = build_parts(cfg, layout)
        for kind in ("regularizer", "compressor", "memory", "aggregator"):
            assert getattr(parts, kind).name == getattr(cfg, kind), (kw, kind)
            assert {p.name: getattr(getattr(parts, kind), p.name) for p in type(getattr(parts, kind)).params} == cfg.params[kind]
        again = make_config(**cfg.to_dict())  # config.json read back resolves to the same run
        assert again == cfg
    assert make_config(method="none", params={"compressor": {"value_codec": "sign+scale"}}).memory == "none"
    assert "ef" not in make_config().to_dict()


@pytest.mark.parametrize("kw, fragment", [
    (dict(method="flare", memory="none"), "regularizer flare pulls toward w \\+ the memory's unsent remainder"),
    (dict(method="topk-ef", memory="ef21"), "memory ef21 needs the ef21 aggregator"),
    (dict(method="topk-ef", aggregator="ef21"), "aggregator ef21 needs the ef21 memory"),
    (dict(method="flare", compressor="nope"), "unknown compressor 'nope'"),
    (dict(params={"*": {"tau0": "1", "nope": "2"}}), "-p nope: no part of this run declares it"),
])
def test_impossible_combinations_are_one_error(kw, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make_config(**kw)


def test_param_options_parse_and_find_their_part():
    from flarebench.config import parse_param_options

    got = parse_param_options(["compressor.rounding=reference", "regularizer.prox.tau0=0.2", "tau0=0.3"])
    assert got == {"compressor": {"rounding": "reference"}, "regularizer": {"prox": {"tau0": "0.2"}}, "*": {"tau0": "0.3"}}
    cfg = make_config(method="flare", params=got)
    assert cfg.params["regularizer"]["tau0"] == 0.3 and cfg.params["compressor"]["rounding"] == "reference"
    assert make_config(method="fedprox-ef", params=parse_param_options(["regularizer.prox.tau0=0.2"])).params["regularizer"]["tau0"] == 0.2
    for bad in ["=1", "x", "memory.a.b.c=1", "bogus.tau0=1"]:
        with pytest.raises(ConfigError):
            parse_param_options([bad])


def test_unknown_keys_suggest_the_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'methd' \(did you mean 'method'\?\)"):
        make_config(methd="flare")
    path = tmp_path / "c.toml"
    path.write_text("sparsty = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'sparsty' in .* \(did you mean 'sparsity'\?\)"):
        load_toml(path)
    with pytest.raises(ConfigError, match=r"unknown key 'zzz'$"):
        make_config(zzz=1)


def test_an_earlier_versions_config_json_reads_as_this_versions():
    """The committed full-scale FLARE seed 0 was written before parts existed (flat ``ef``, ``flare_tau0``,
    no ``backend``); read back it equals seed 1's config.json, written by this version, but for seed and name."""
    import json
    from pathlib import Path

    from flarebench.rundir import read_meta

    runs = Path(__file__).resolve().parents[1] / "results" / "reference" / "unavail_cnn_k7"
    old, new = runs / "flare-s0.99999-seed0", runs / "flare-s0.99999-seed1"
    if not (old / "config.json").is_file() or not (new / "config.json").is_file():
        pytest.skip("reference runs not in this checkout")
    raw = json.loads((old / "config.json").read_text())["config"]
    assert "flare_tau0" in raw and "params" not in raw and "backend" not in raw  # really the old form
    a, b = read_meta(old)["config"], read_meta(new)["config"]
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"seed", "name", "out"}
