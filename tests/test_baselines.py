"""baselines/flare_paper: every config validates, smoke configs run, sweeps and figures work."""

import json
import tomllib
from pathlib import Path

import pytest

from flarebench import ConfigError, ResultsError, load_run, make_config, run, setup
from flarebench.methods.presets import PRESETS
from flarebench.sweep import load_sweep, plan, run_name, run_sweep
from conftest import cli

PAPER = Path(__file__).resolve().parents[1] / "baselines" / "flare_paper"
CONFIGS = sorted(PAPER.glob("*.toml"))
SMOKE = [p for p in CONFIGS if p.stem.endswith("_smoke")]
METHODS = {"flare", "topk-ef", "ef21", "fedprox-ef", "none"}
ABLATIONS = {"unavail_cnn_k7_softmax2_smoke"}  # one paper experiment with one thing changed
CLAIMS = {"unavail_cnn_k7_claim": [0.999, 0.9999, 0.99999]}  # the paper's claim: FLARE vs EC over densities (issue 19)


def test_every_paper_experiment_has_a_config():
    names = {p.stem for p in CONFIGS}
    expected = {f"cnn_mnist_e{e}{r}" for e in (1, 4, 8, 16) for r in ("", "_r0.0001")}
    expected |= {f"fc_mnist_e{e}{r}" for e in (1, 8, 16, 32) for r in ("", "_r0.0001")}
    expected |= {f"vgg{v}_{d}" for v in (11, 16, 19) for d in ("cifar10", "cifar100")}
    expected |= {"gru_shakespeare"} | {f"unavail_{m}_k{k}" for m in ("cnn", "fc") for k in (3, 5, 7)}
    assert expected <= names
    assert {"cnn_mnist_smoke", "unavail_cnn_k7_smoke", "gru_shakespeare_smoke"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates_with_dry_run(capsys, path):
    code, out, err = cli(capsys, "run", "--config", path, "--dry-run")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["num_params"] > 0
    raw = tomllib.loads(path.read_text())
    assert printed["config"]["model"] == raw["model"]
    # the [sweep] grid: the paper's five methods (an ablation: FLARE, EC, FedAvg), every grid point a valid config
    sweep = load_sweep(path)
    methods = {"flare", "topk-ef", "none"} if path.stem in ABLATIONS else {"flare", "topk-ef"} if path.stem in CLAIMS else METHODS
    assert set(sweep.methods) == methods and set(sweep.methods) <= set(PRESETS)
    assert all(0 < s < 1 for s in sweep.sparsities) and sweep.seeds
    dense = len(sweep.seeds) if "none" in methods else 0  # none ignores the sparsity: one run per seed
    assert len(sweep.configs()) == len(methods - {"none"}) * len(sweep.sparsities) * len(sweep.seeds) + dense
    assert isinstance(sweep.meta.get("title"), str)


# spec table (docs/flare-algorithm.md): the reference hyper-parameters per experiment family
SPEC = {
    "cnn": dict(model="cnn", clients=10, samples_per_client=600, batch_size=600, lr=0.215, momentum=0.99),
    "fc": dict(model="fc", clients=10, samples_per_client=600, batch_size=600, lr=0.001, momentum=0.99),
    "vgg": dict(clients=4, samples_per_client=12500, batch_size=500, lr=0.002, momentum=0.99, local_epochs=1, sparsity=0.99999),
    "gru": dict(model="gru", dataset="shakespeare", partition="natural", clients=10, batch_size=8, lr=0.005, momentum=0.0, local_epochs=1, rounds=400),
}
FLARE_SPEC = {  # [regularizer.flare] of each family (tau0, steps p, percentile t); decay c below
    "cnn": dict(tau0=0.05, steps=1, percentile=50.0),
    "fc": dict(tau0=0.5, steps=1),
    "vgg": dict(tau0=0.05, decay=1.01, steps=5),
    "gru": dict(tau0=0.05, decay=1.01, steps=1),
}


@pytest.mark.parametrize("path", [p for p in CONFIGS if not p.stem.endswith("_smoke")], ids=lambda p: p.stem)
def test_reference_hyper_parameters(path):
    cfg = make_config(path)
    family = "cnn" if "cnn" in path.stem else "fc" if "fc" in path.stem else "vgg" if "vgg" in path.stem else "gru"
    for key, value in SPEC[family].items():
        assert getattr(cfg, key) == value, (key, getattr(cfg, key), value)
    flare = cfg.params["regularizer"]
    assert cfg.regularizer == "flare" and all(flare[k] == v for k, v in FLARE_SPEC[family].items()), flare
    if path.stem in CLAIMS:  # FLARE and EC only, at several densities
        assert load_sweep(path).sparsities == CLAIMS[path.stem] and flare["decay"] == 1.1 and cfg.clients_per_round == 7
        return
    prox = make_config(path, method="fedprox-ef").params["regularizer"]
    assert prox == {"tau0": flare["tau0"], "decay": flare["decay"]}  # same tau schedule
    if family in ("cnn", "fc"):
        r_small = path.stem.endswith("_r0.0001")
        sweep = load_sweep(path)
        assert sweep.sparsities == [0.999999 if r_small else 0.99999]
        want = {"cnn": (1.01, 1.1), "fc": (1.005, 1.05)}[family][0 if r_small else 1]
        assert flare["decay"] == want
        assert cfg.local_epochs == int(path.stem.split("_e")[1].split("_")[0]) if "_e" in path.stem else cfg.local_epochs == 1
    if path.stem.startswith("unavail_"):
        assert cfg.clients_per_round == int(path.stem[-1])


@pytest.mark.parametrize("path", SMOKE, ids=lambda p: p.stem)
def test_smoke_config_runs_two_rounds(tmp_path, path, one_torch_thread):
    cfg = make_config(path, rounds=2, out=str(tmp_path), name=path.stem, device="cpu", engine="sequential")
    s = setup(cfg)
    fed = s.federation
    fed.x_test, fed.y_test = fed.x_test[:500], fed.y_test[:500]  # a slice of the test set: fast on 2 busy cores
    result = run(cfg, prepared=s)
    assert [r["round"] for r in result.rows] == [0, 1, 2]
    assert result.total_uplink_bits > 0 and result.final_accuracy is not None
    assert json.loads((result.path / "config.json").read_text())["status"] == "complete"


# ---------------------------------------------------------------------------------------- sweep + figures
def write_sweep(tmp_path, methods='["flare", "topk-ef", "none"]', extra="") -> Path:
    path = tmp_path / "toy.toml"
    path.write_text(
        'model = "mlp"\nclients = 3\nsamples-per-client = 60\nbatch-size = 30\nrounds = 2\neval-every = 1\n'
        f'device = "cpu"\nengine = "sequential"\n{extra}\n'
        f'[sweep]\nmethods = {methods}\nsparsities = [0.99, 0.999]\nseeds = [0]\nout = "{tmp_path / "runs"}"\n'
        '[meta]\ntitle = "toy"\n'
    )
    return path


def test_sweep_grid_names_and_skipping(tmp_path):
    names = [c.name for c in load_sweep(write_sweep(tmp_path)).configs()]
    assert names == ["flare-s0.99-seed0", "flare-s0.999-seed0", "topk-ef-s0.99-seed0", "topk-ef-s0.999-seed0", "none-seed0"]
    assert run_name(make_config(method="topk-ef", sparsity=0.999999, seed=3)) == "topk-ef-s0.999999-seed3"
    sweep = load_sweep(write_sweep(tmp_path, methods='["flare", "none"]'))
    assert [a for _, a in plan(sweep)] == ["run"] * 3
    done = run_sweep(sweep)
    assert len(done) == 3 and all(d["action"] == "run" for d in done)
    assert [a for _, a in plan(sweep)] == ["skip"] * 3
    assert run_sweep(sweep) == []  # all complete: nothing runs again
    # an interrupted run (status running) is resumed if the runner can, else restarted
    meta_path = sweep.out / "flare-s0.99-seed0" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "status": "running"}))
    (action,) = [a for c, a in plan(sweep) if c.name == "flare-s0.99-seed0"]
    assert action in {"resume", "restart"}
    (info,) = run_sweep(sweep)
    assert info["name"] == "flare-s0.99-seed0" and json.loads(meta_path.read_text())["status"] == "complete"
    # a changed config does not silently reuse old runs
    changed = load_sweep(write_sweep(tmp_path, extra="lr = 0.05"))
    with pytest.raises(ResultsError, match="different config"):
        plan(changed)


def test_sweep_resumes_an_interrupted_run(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, methods='["flare"]'), sparsities=[0.99], out=tmp_path / "a")
    (cfg,) = sweep.configs()
    cfg = cfg.replace(rounds=3)
    sweep.base["rounds"] = 3

    def stop(row, stats):
        if row["round"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, on_round=stop, checkpoint_every=1)
    assert [a for _, a in plan(sweep)] == ["resume"]
    (info,) = run_sweep(sweep)
    assert info["action"] == "resume"
    whole = run(cfg.replace(out=str(tmp_path / "b")))
    resumed = load_run(Path(cfg.out) / cfg.name).metrics.drop(columns=["wall_time_s"])
    assert resumed.equals(load_run(whole.path).metrics.drop(columns=["wall_time_s"]))


def test_sweep_with_two_jobs_runs_the_grid_in_processes(tmp_path):
    """--jobs 2: every run completes in its own process (torch threads split); the numbers of one job, up to float rounding."""
    serial = load_sweep(write_sweep(tmp_path, methods='["flare", "none"]'), out=tmp_path / "one")
    parallel = load_sweep(write_sweep(tmp_path, methods='["flare", "none"]'), out=tmp_path / "two")
    events = []
    done = run_sweep(parallel, jobs=2, on_event=lambda kind, cfg, info: events.append((kind, cfg.name)))
    assert sorted(d["name"] for d in done) == ["flare-s0.99-seed0", "flare-s0.999-seed0", "none-seed0"]
    assert sorted(n for k, n in events if k == "done") == sorted(n for k, n in events if k == "start")
    run_sweep(serial)
    for name in ("flare-s0.99-seed0", "flare-s0.999-seed0", "none-seed0"):
        a, b = load_run(parallel.out / name), load_run(serial.out / name)
        assert a.meta["status"] == "complete"
        # other processes, other torch thread counts (cpu_count // jobs here): float rounding may differ, and
        # a flipped top-k tie sends other positions; the entry counts are exact, bits and accuracy close
        assert a.metrics["nnz"].tolist() == b.metrics["nnz"].tolist()
        assert a.metrics["uplink_bits"].sum() == pytest.approx(b.metrics["uplink_bits"].sum(), rel=0.01)
        assert abs(a.metrics["test_accuracy"].iloc[-1] - b.metrics["test_accuracy"].iloc[-1]) <= 0.02
    assert [a for _, a in plan(parallel)] == ["skip"] * 3


def test_sweep_and_figures_cli(tmp_path, capsys):
    path = write_sweep(tmp_path, methods='["flare", "none"]')
    code, out, err = cli(capsys, "sweep", path, "--methods", "flare,topk-ef", "--sparsities", "0.99", "--seeds", "1")
    assert code == 0, err
    assert "flare-s0.99-seed1" in out and "topk-ef-s0.99-seed1" in out and "none-seed" not in out
    assert (tmp_path / "runs" / "compare" / "compare.csv").is_file()
    code, out, err = cli(capsys, "sweep", path, "--methods", "flare,topk-ef", "--sparsities", "0.99", "--seeds", "1")
    assert code == 0 and out.count("skip") == 2
    code, out, err = cli(capsys, "sweep", path, "--methods", "flare", "--sparsities", "0.99", "--seeds", "1", "--rounds", "1")
    assert code == 2 and "different config" in err  # another round count is not mixed in with the 2-round runs
    code, out, err = cli(capsys, "sweep", path, "--methods", "flare", "--sparsities", "0.99", "--rounds", "1", "--out", tmp_path / "quick")
    assert code == 0, err
    assert json.loads((tmp_path / "quick" / "flare-s0.99-seed0" / "config.json").read_text())["config"]["rounds"] == 1
    code, out, err = cli(capsys, "sweep", path)  # the config's own grid
    assert code == 0, err
    code, out, err = cli(capsys, "figures", path, "--out", tmp_path / "figs")
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == ["toy-s0.99.pdf", "toy-s0.99.png", "toy-s0.999.pdf", "toy-s0.999.png"]
    assert all((tmp_path / "figs" / n).stat().st_size > 1000 for n in names)
    code, out, err = cli(capsys, "figures", tmp_path / "runs", "--format", "png")  # a results directory works too
    assert code == 0 and (tmp_path / "runs" / "figures" / "runs-s0.99.png").is_file()


def test_sweep_warns_when_its_runs_used_different_engines(tmp_path, capsys):
    path = write_sweep(tmp_path, methods='["topk-ef"]')
    code, out, err = cli(capsys, "sweep", path)
    assert code == 0 and "different engines" not in err, err
    meta_path = tmp_path / "runs" / "topk-ef-s0.999-seed0" / "config.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "engine_resolved": {**meta["engine_resolved"], "engine": "vectorized"}}))
    code, out, err = cli(capsys, "sweep", path)  # both complete: skipped, then compared
    lines = [l for l in err.splitlines() if "different engines" in l]
    assert code == 0 and out.count("skip") == 2 and len(lines) == 1, err
    assert lines[0].startswith("flarebench: warning: group mnist-embedded/mlp: the runs used different engines "
                               "(sequential: topk-ef-s0.99-seed0; vectorized: topk-ef-s0.999-seed0)"), err


@pytest.mark.parametrize("args,message", [
    (["sweep", "{cfg_nosweep}"], "no [sweep] table"),
    (["sweep", "{cfg}", "--methods", "nope"], "unknown method 'nope'"),
    (["sweep", "{cfg}", "--sparsities", "x"], "--sparsities takes floats"),
    (["sweep", "{cfg}", "--jobs", "0"], "jobs must be >= 1"),
    (["figures", "{tmp}/missing"], "neither a sweep config"),
    (["figures", "{cfg}"], "no runs of"),
])
def test_bad_sweep_input_gives_one_line(tmp_path, capsys, args, message):
    cfg = write_sweep(tmp_path)
    nosweep = tmp_path / "plain.toml"
    nosweep.write_text('model = "mlp"\n')
    args = [a.format(cfg=cfg, cfg_nosweep=nosweep, tmp=tmp_path) for a in args]
    code, out, err = cli(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("flarebench: error: ") and message in err, err


def test_sweep_table_errors(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[sweep]\nmethods = ["flare"]\nsparsity = [0.9]\n')
    with pytest.raises(ConfigError, match="unknown key 'sparsity'"):
        load_sweep(path)
    path.write_text('[sweep]\nmethods = []\n')
    with pytest.raises(ConfigError, match="non-empty list"):
        load_sweep(path)
