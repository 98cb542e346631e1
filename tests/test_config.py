import pytest

from flarebench.config import RunConfig, load_toml, make_config
from flarebench.errors import ConfigError


def test_defaults_are_the_main_job():
    cfg = make_config()
    assert (cfg.method, cfg.sparsity, cfg.dataset) == ("flare", 0.999, "mnist-embedded")
    assert (cfg.flare_tau0, cfg.flare_decay, cfg.flare_steps, cfg.flare_percentile) == (0.05, 1.1, 1, 50.0)
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
        ("ef = 1\n", "ef must be true or false"),
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


def test_error_feedback_is_what_the_method_does():
    """``ef`` is randk's choice; the other methods fix it, config records what runs, a conflict is an error."""
    assert make_config(method="topk").ef is False
    assert make_config(method="flare").ef is True and make_config(method="topk-ef").ef is True
    assert make_config(method="randk").ef is True and make_config(method="randk", ef=False).ef is False
    with pytest.raises(ConfigError, match="method topk is defined without error feedback; use topk-ef"):
        make_config(method="topk", ef=True)
    for method in ("flare", "topk-ef", "fedprox-ef", "ef21"):
        with pytest.raises(ConfigError, match=f"method {method} is defined with error feedback"):
            make_config(method=method, ef=False)


def test_unknown_keys_suggest_the_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown option 'methd' \(did you mean 'method'\?\)"):
        make_config(methd="flare")
    path = tmp_path / "c.toml"
    path.write_text("flare_tau = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'flare_tau' in .* \(did you mean 'flare-tau0'\?\)"):
        load_toml(path)
    with pytest.raises(ConfigError, match=r"unknown option 'zzz'$"):
        make_config(zzz=1)
