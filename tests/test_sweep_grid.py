"""Sweeps over any key: [sweep] grid keys, [sweep.METHOD] tables, --grid, run names, one-line refusals;
a 2-point lr grid runs with --jobs 2, skips complete runs and resumes an interrupted one."""

import json
from pathlib import Path

import pytest

from flarebench import ConfigError, load_run
from flarebench.sweep import load_sweep, parse_grid_options, plan, run_sweep
from conftest import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # two threads on the shared 2 cores oversubscribe

BASE = ('model = "mlp"\nclients = 3\nsamples-per-client = 60\nbatch-size = 30\nrounds = 2\neval-every = 1\n'
        'device = "cpu"\nengine = "sequential"\n')


def write(tmp_path: Path, sweep: str, extra: str = "") -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(f'{BASE}{extra}\n[sweep]\nsparsities = [0.99]\nseeds = [0]\nout = "{tmp_path / "runs"}"\n{sweep}\n')
    return path


def test_grid_keys_per_method_tables_and_names(tmp_path):
    path = write(tmp_path, 'methods = ["flare", "qsgd", "none"]\nlr = [0.05, 0.1]\nlocal-epochs = [1, 2]\n'
                           '[sweep.qsgd]\n"compressor.levels" = [2, 4]\nlr = [0.2]\n')
    cfgs = load_sweep(path).configs()
    names = [c.name for c in cfgs]
    assert names[:4] == ["flare-s0.99-lr0.05-local-epochs1-seed0", "flare-s0.99-lr0.05-local-epochs2-seed0",
                         "flare-s0.99-lr0.1-local-epochs1-seed0", "flare-s0.99-lr0.1-local-epochs2-seed0"]
    qsgd = [c for c in cfgs if c.method == "qsgd"]  # its own lr replaces the shared one; its own key is added
    assert [c.name for c in qsgd] == ["qsgd-lr0.2-local-epochs1-levels2-seed0", "qsgd-lr0.2-local-epochs1-levels4-seed0",
                                      "qsgd-lr0.2-local-epochs2-levels2-seed0", "qsgd-lr0.2-local-epochs2-levels4-seed0"]
    assert [(c.lr, c.local_epochs, c.params["compressor"]["levels"]) for c in qsgd] == [(0.2, 1, 2), (0.2, 1, 4), (0.2, 2, 2), (0.2, 2, 4)]
    assert len(cfgs) == 4 + 4 + 4
    # --grid replaces the config's values of a key, per-method ones included; CLI text typed as the field
    grid = parse_grid_options(["lr=0.3", "compressor.levels=8", "keep-optimizer-state=true,false"])
    assert grid == {"lr": [0.3], "compressor.levels": ["8"], "keep_optimizer_state": [True, False]}
    cfgs = load_sweep(path, methods=["qsgd"], grid={"lr": [0.3], "compressor.levels": ["8"]}).configs()
    assert [c.name for c in cfgs] == ["qsgd-lr0.3-local-epochs1-levels8-seed0", "qsgd-lr0.3-local-epochs2-levels8-seed0"]
    assert {c.params["compressor"]["levels"] for c in cfgs} == {8}
    # no extra key: today's names
    assert [c.name for c in load_sweep(write(tmp_path, 'methods = ["flare", "none"]')).configs()] == ["flare-s0.99-seed0", "none-seed0"]
    # a part parameter by KIND.PART.PARAM, and one whose name another grid key shares: named in full
    path = write(tmp_path, 'methods = ["flare"]\n"regularizer.flare.tau0" = [0.2]\n"memory.tau0" = [1]\n')
    with pytest.raises(ConfigError, match="grid point flare regularizer.flare.tau0=0.2 memory.tau0=1"):
        load_sweep(path)  # flare's memory declares no tau0
    cfgs = load_sweep(write(tmp_path, 'methods = ["flare"]\n"regularizer.flare.tau0" = [0.2, 0.4]\n')).configs()
    assert [(c.name, c.params["regularizer"]["tau0"]) for c in cfgs] == [("flare-s0.99-tau00.2-seed0", 0.2), ("flare-s0.99-tau00.4-seed0", 0.4)]


@pytest.mark.parametrize("sweep,grid,message", [
    ('methods = ["flare"]\nlrr = [0.1]', [], "unknown grid key 'lrr'"),
    ('methods = ["flare"]', ["lrr=0.1"], "unknown grid key 'lrr' (--grid)"),
    ('methods = ["flare"]\n"bogus.levels" = [2]', [], "unknown grid key 'bogus.levels'"),
    ('methods = ["flare"]\nlr = 0.1', [], "lr in [sweep] of"),
    ('methods = ["flare"]\nlr = []', [], "must be a non-empty list"),
    ('methods = ["flare"]\nname = ["a", "b"]', [], "'name' in [sweep]"),
    ('methods = ["flare"]', ["out=a,b"], "'out' (--grid) is not a grid key"),
    ('methods = ["flare"]\nlr = [0.1, 0.1]', [], "would both be named flare-s0.99-lr0.1-seed0"),
    ('methods = ["flare"]', ["lr=0.1,0.10"], "would both be named"),
    ('methods = ["flare"]\nlr = [0.1, -1.0]', [], "grid point flare lr=-1: lr must be > 0"),
    ('methods = ["flare"]', ["lr=fast"], "--grid lr takes float values"),
    ('methods = ["flare"]\n"compressor.levels" = [2]', [], "grid point flare compressor.levels=2"),
    ('methods = ["flare"]\n[sweep.qsgd]\nlr = 0.1', [], "in [sweep.qsgd]"),
    ('methods = ["flare"]', ["lr"], "--grid takes KEY=V1,V2"),
])
def test_bad_grid_is_one_line_and_nothing_starts(tmp_path, capsys, sweep, grid, message):
    path = write(tmp_path, sweep)
    code, out, err = cli(capsys, "sweep", path, *[a for g in grid for a in ("--grid", g)])
    assert code == 2 and err.count("\n") == 1 and err.startswith("flarebench: error: ") and message in err, err
    assert out == "" and not (tmp_path / "runs").exists()


def test_lr_grid_runs_with_two_jobs_skips_and_resumes(tmp_path, capsys):
    """The larger grid behaves as today's: --jobs 2 runs it in processes, complete runs are skipped, an
    interrupted one is resumed or restarted; the lr of each run is the one its name says."""
    path = write(tmp_path, 'methods = ["topk-ef"]\nlr = [0.05, 0.2]')
    code, out, err = cli(capsys, "sweep", path, "--jobs", "2")
    assert code == 0, err
    names = ["topk-ef-s0.99-lr0.05-seed0", "topk-ef-s0.99-lr0.2-seed0"]
    for name, lr in zip(names, (0.05, 0.2)):
        rec = load_run(tmp_path / "runs" / name)
        assert rec.meta["status"] == "complete" and rec.config["lr"] == lr and len(rec.metrics) == 3
    a, b = (load_run(tmp_path / "runs" / n).metrics for n in names)
    assert a.nnz.tolist() == b.nnz.tolist() and a.test_loss.iloc[-1] != b.test_loss.iloc[-1]  # another lr, another run
    code, out, err = cli(capsys, "sweep", path, "--jobs", "2")
    assert code == 0 and out.count("skip ") == 2, err
    meta = tmp_path / "runs" / names[1] / "config.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "status": "running"}))
    sweep = load_sweep(path)
    assert [a for _, a in plan(sweep)] == ["skip", "resume"]
    (info,) = run_sweep(sweep)
    assert info["name"] == names[1] and info["action"] == "resume"
    with pytest.raises(ConfigError, match="would both be named"):
        load_sweep(path, grid={"lr": [0.2, 0.2]})
