"""Bad input that used to give a traceback or be accepted: one line on stderr, exit code 2, nothing created."""

import dataclasses
import json
import os
import shutil

import pytest

from flarebench import run
from flarebench.config import RunConfig
from conftest import cli, tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def refused(capsys, fragment, *args):
    """``flarebench ARGS`` fails with one line holding ``fragment``, exit code 2, no traceback; returns the line."""
    code, out, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("flarebench: error: "), (args, err)
    assert fragment in lines[0] and "Traceback" not in err, (args, fragment, err)
    return lines[0]


FLOAT_OPTIONS = sorted(f.name.replace("_", "-") for f in dataclasses.fields(RunConfig) if f.type == "float")
LEGACY_FLOAT_OPTIONS = {"dirichlet-alpha": "partition.alpha"}  # earlier fields, now a part's parameter


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_run_refuses_non_finite_values_of_every_float_option(capsys, tmp_path, value):
    assert {"sparsity", "lr"} <= set(FLOAT_OPTIONS)
    for option in FLOAT_OPTIONS + list(LEGACY_FLOAT_OPTIONS):
        line = refused(capsys, LEGACY_FLOAT_OPTIONS.get(option, option), "run", f"--{option}", value, "--partition", "dirichlet", "--out", tmp_path / "r")
        assert "finite" in line or "sparsity must be in (0, 1)" in line, line
    assert not (tmp_path / "r").exists()


def test_run_refuses_a_negative_seed_and_a_model_that_cannot_take_the_data(capsys, tmp_path):
    out = tmp_path / "r"
    refused(capsys, "seed must be an integer in [0, 2^63), got -1", "run", "--seed", "-1", "--out", out)
    refused(capsys, f"seed must be an integer in [0, 2^63), got {2**63}", "run", "--seed", str(2**63), "--out", out)
    line = refused(capsys, "model mlp cannot take dataset shakespeare's token sequences [100]", "run", "--dataset", "shakespeare", "--out", out)
    assert "gru, gru-small" in line
    refused(capsys, "model gru-small cannot take dataset mnist-embedded's images [1, 28, 28]",
            "run", "--model", "gru-small", "--out", out)
    refused(capsys, "vgg11 needs images of at least 32x32", "run", "--model", "vgg11", "--out", out)
    refused(capsys, "model mlp cannot take dataset shakespeare", "run", "--dataset", "shakespeare", "--dry-run")
    assert not out.exists()


@pytest.mark.parametrize("name,fragment", [
    ("x" * 300, "name must be at most 255 bytes (a directory name), got 300"),
    ("é" * 128, "name must be at most 255 bytes (a directory name), got 256"),
    ("a\tb", "control characters"), ("a\nb", "control characters"), ("a\x1bb", "control characters"),
    ("a\x7fb", "control characters"), ("a/b", "plain directory name"), ("..", "plain directory name"),
])
def test_run_refuses_names_that_are_no_plain_directory_name(capsys, tmp_path, name, fragment):
    refused(capsys, fragment, "run", "--name", name, "--out", tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_name_with_a_nul_byte_from_a_toml_file_is_refused(capsys, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('name = "run\\u0000one"\n')
    refused(capsys, "name must not contain control characters", "run", "--config", config, "--out", tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_config_that_is_a_directory_or_a_device_says_what_it_is(capsys, tmp_path):
    refused(capsys, f"config file {tmp_path} is a directory, not a TOML file", "run", "--config", tmp_path, "--out", tmp_path / "r")
    if os.path.exists("/dev/null"):
        refused(capsys, "config file /dev/null is a character device, not a TOML file", "run", "--config", "/dev/null",
                "--out", tmp_path / "r")
        refused(capsys, "config file /dev/null is a character device", "sweep", "/dev/null")
    refused(capsys, f"config file {tmp_path} is a directory", "sweep", tmp_path)
    refused(capsys, "config file not found", "run", "--config", tmp_path / "missing.toml", "--out", tmp_path / "r")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_run_killed_before_its_first_checkpoint_points_to_overwrite(capsys, tmp_path):
    """Killed during round 0: config.json says running, no process holds the lock, no checkpoint.pt."""
    run_dir = tmp_path / "k"
    run_dir.mkdir()
    meta = {"config": tiny(name="k", out=str(tmp_path)).to_dict(), "status": "running"}
    files = {"config.json": json.dumps(meta).encode(), "metrics.csv": b"round,clients\r\n"}
    for name, data in files.items():
        (run_dir / name).write_bytes(data)
    line = refused(capsys, "has no checkpoint to resume from", "run", "--name", "k", "--out", tmp_path)
    assert "--overwrite" in line and "--resume" not in line, line
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == files  # untouched


def test_sweep_refuses_negative_seeds_and_jobs_below_one(capsys, tmp_path):
    config = tmp_path / "s.toml"
    config.write_text(f'model = "mlp"\nrounds = 1\n[sweep]\nmethods = ["topk-ef"]\nsparsities = [0.99]\nout = "{tmp_path / "runs"}"\n')
    refused(capsys, "seed must be an integer in [0, 2^63), got -1", "sweep", config, "--seeds", "-1")
    refused(capsys, "seed must be an integer in [0, 2^63), got -1", "sweep", config, "--seeds", "0,-1", "--dry-run")
    for jobs in ("0", "-3"):
        refused(capsys, f"jobs must be >= 1, got {jobs}", "sweep", config, "--jobs", jobs)
        refused(capsys, f"jobs must be >= 1, got {jobs}", "sweep", config, "--jobs", jobs, "--dry-run")
    config.write_text(config.read_text().replace("[sweep]", "seed = -2\n[sweep]\nseeds = [-2]"))
    refused(capsys, "seed must be an integer in [0, 2^63), got -2", "sweep", config)
    assert not (tmp_path / "runs").exists()


def test_bits_refuses_to_measure_a_draw_too_large_to_encode(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    line = refused(capsys, "--measure is limited to n <= 100,000,000 entries and k <= 10,000,000 sent entries",
                   "bits", "--params", "2000000000", "--sparsity", "0.5", "--measure")
    assert "k = 1,000,000,000" in line and "--no-measure" in line
    refused(capsys, "k = 20,000,000", "bits", "--params", "40000000", "--sparsity", "0.5", "--measure")
    refused(capsys, "sparsity must be in [0, 1)", "bits", "--sparsity", "nan")
    code, out, err = cli(capsys, "bits", "--params", "2000000000", "--sparsity", "0.5")  # the default: expected only
    assert code == 0 and "measured" not in out, err
    code, out, _ = cli(capsys, "bits", "--help")
    assert "refused above n = 1e+08 entries or k = 1e+07 sent entries" in " ".join(out.split())


def test_bench_refuses_an_unknown_device(capsys):
    refused(capsys, "unknown device 'tpu' (choose from: auto, cpu, cuda, cuda:N)", "bench", "--device", "tpu",
            "--model", "mlp", "--clients", "2", "--batch-size", "8")


# ---------------------------------------------------------------------------------------- damaged runs
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two complete runs (mlp, 3 rounds) to copy and damage."""
    out = tmp_path_factory.mktemp("damaged") / "runs"
    for method in ("none", "topk-ef"):
        run(tiny(method=method, rounds=3, eval_every=1, samples_per_client=60, out=str(out), name=method))
    return out


def damage(two_runs, tmp_path, how):
    """A copy of the two runs with run ``topk-ef`` damaged by ``how(run_dir)``; returns (results dir, damaged run)."""
    root = tmp_path / "results"
    shutil.copytree(two_runs, root)
    bad = root / "topk-ef"
    how(bad)
    return root, bad


def cut_mid_row(run_dir):
    text = (run_dir / "metrics.csv").read_text()
    (run_dir / "metrics.csv").write_text(text[: len(text) - 20])


def non_numeric_cell(run_dir):
    lines = (run_dir / "metrics.csv").read_text().splitlines(keepends=True)
    cells = lines[2].split(",")
    cells[4] = "abc"  # test_accuracy of round 1
    lines[2] = ",".join(cells)
    (run_dir / "metrics.csv").write_text("".join(lines))


def wrong_types(run_dir):
    meta = json.loads((run_dir / "config.json").read_text())
    meta["config"]["rounds"] = "three"
    (run_dir / "config.json").write_text(json.dumps(meta))


def rows_missing(run_dir):
    lines = (run_dir / "metrics.csv").read_text().splitlines(keepends=True)
    (run_dir / "metrics.csv").write_text("".join(lines[:-2]))  # whole rows gone, config.json still says complete


DAMAGE = [
    (cut_mid_row, "metrics.csv is damaged (line 5 is cut mid-row, yet config.json says the run is complete)"),
    (non_numeric_cell, "metrics.csv is damaged (line 3, column test_accuracy: 'abc' is not a number)"),
    (wrong_types, "config.json is damaged (config.rounds should be an integer, got \"three\")"),
    (rows_missing, "metrics.csv is damaged (config.json says the run completed 3 rounds, metrics.csv has rows up to round 1)"),
]


@pytest.mark.parametrize("how,fragment", DAMAGE, ids=[d[0].__name__ for d in DAMAGE])
def test_compare_list_show_name_the_damaged_file_and_go_on(two_runs, tmp_path, capsys, how, fragment):
    root, bad = damage(two_runs, tmp_path, how)
    said = f"run {bad}: {fragment}"
    # compare: the damaged run is skipped with a warning naming it; the other run is compared
    code, out, err = cli(capsys, "compare", root, "--out", tmp_path / "cmp", "--format", "none")
    warnings = [l for l in err.splitlines() if said in l]
    assert code == 0 and len(warnings) == 1 and warnings[0].startswith("flarebench: warning: skipped "), err
    assert "Traceback" not in err and "1 run" in out and "none" in out
    # compare of the damaged run alone: one error line
    refused(capsys, said, "compare", bad, "--out", tmp_path / "cmp2")
    assert not (tmp_path / "cmp2").exists()
    # list: a warning naming the file, the run listed as damaged (not complete), the other run listed as usual
    code, out, err = cli(capsys, "list", root)
    assert code == 0 and err.strip() == f"flarebench: warning: {said}", err
    (line,) = [l for l in out.splitlines() if l.startswith("topk-ef")]
    assert "damaged" in line and "complete" not in line, line
    assert any(l.startswith("none") and "complete" in l for l in out.splitlines()), out
    # show: one error line
    refused(capsys, said, "show", bad)


def test_a_killed_runs_cut_last_row_is_not_damage(two_runs, tmp_path, capsys):
    """A run killed while writing a row leaves it cut; the run is listed as interrupted, the cut row dropped."""
    def killed(run_dir):
        meta = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps({**meta, "status": "running"}))
        cut_mid_row(run_dir)

    root, bad = damage(two_runs, tmp_path, killed)
    code, out, err = cli(capsys, "list", root)
    assert code == 0 and err == "", err
    (line,) = [l for l in out.splitlines() if l.startswith("topk-ef")]
    assert "2/3" in line and "interrupted (killed, resumable)" in line, line


def test_a_run_whose_config_lacks_what_compare_needs_is_skipped_with_a_warning(two_runs, tmp_path, capsys):
    def no_dataset(run_dir):
        meta = json.loads((run_dir / "config.json").read_text())
        del meta["config"]["dataset"]
        (run_dir / "config.json").write_text(json.dumps(meta))

    root, bad = damage(two_runs, tmp_path, no_dataset)
    code, out, err = cli(capsys, "compare", root, "--out", tmp_path / "cmp", "--format", "none")
    assert code == 0 and f"flarebench: warning: skipped {bad}: run {bad}: config.json lacks dataset" in err, err
    code, out, err = cli(capsys, "list", root)
    assert code == 0 and f"flarebench: warning: run {bad}: cannot be listed (KeyError: 'dataset')" in err, err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------- part values
RUN = ["run", "--model", "mlp", "--clients", "3", "--rounds", "2", "--batch-size", "50", "--samples-per-client", "100",
       "--engine", "sequential", "--device", "cpu", "--quiet"]


@pytest.mark.parametrize("args,fragment", [
    (["--method", "threshold", "-p", "compressor.tau=1e308"], "compressor.tau must be in [1.18e-38, 3.4e+38] (a positive normal float32)"),
    (["--method", "threshold", "-p", "compressor.tau=1e-300"], "compressor.tau must be in [1.18e-38"),
    (["--method", "fetchsgd", "-p", "compressor.columns_per_k=1e300"], "compressor.columns_per_k must be in (0, 1073741824]"),
    (["--method", "fetchsgd", "-p", "compressor.rows=10000000"],
     "rows=10000000, columns_per_k=10.0, columns_per_entry=0.077 make a sketch of 10000000 x 6123 cells (k = 80 of the "
     "model's 79510 entries) and 10000000 x 79510 hash codes: 3.27e+06 MiB, more than 64 times the model (0.303 MiB)"),
    (["--method", "fetchsgd", "-p", "compressor.rows=100000"], "3.27e+04 MiB, more than 64 times the model"),
    (["--method", "fetchsgd", "--sparsity", "0.001", "-p", "compressor.rows=60"], "a sketch of 60 x 794300 cells"),
    (["--method", "flare", "-p", "regularizer.decay=1e-200"],
     "regularizer flare: tau_r = tau0 / decay^(r+1) with tau0=0.05, decay=1e-200 must stay finite over the run's 2 rounds: "
     "tau_r is 5e+198 at round 1, above float32's 3.4e+38"),
    (["--method", "flare", "-p", "regularizer.tau0=0", "-p", "regularizer.decay=1e-200"], "decay^2 underflows to 0 at round 2"),
    (["--method", "fedprox-ef", "-p", "regularizer.decay=1e-200"], "regularizer prox: tau_r = tau0 / decay^(r+1)"),
    (["--method", "fedprox-ef", "-p", "regularizer.decay=1e-20"], "tau_r is 5e+38 at round 2"),
    (["--method", "flare", "-p", "regularizer.tau0=1e39"], "tau_r is 9.09e+38 at round 1"),
    (["--method", "signsgd", "-p", "aggregator.step=1e39"], "aggregator.step must be in [1.18e-38, 3.4e+38]"),
    (["--method", "terngrad", "-p", "compressor.clip=1e39"], "compressor.clip must be in [0, 3.4e+38] (a float32)"),
    (["--method", "dgc", "-p", "memory.clip=1e39"], "memory.clip must be in [0, 3.4e+38] (a float32)"),
    (["--compressor", ""], "compressor name is empty: name a part"),
    (["--regularizer", " "], "regularizer name is empty"),
])
def test_part_values_that_would_crash_or_hang_a_run_are_refused(capsys, tmp_path, args, fragment):
    """Each used to pass validation and then fail in round 1 (overflow, division by zero) or never
    finish a round (a sketch of 10^7 rows); now one line, exit 2, before anything is created."""
    refused(capsys, fragment, *RUN, *args, "--out", tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_an_empty_part_name_in_toml_is_refused(capsys, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('method = "topk-ef"\n[compressor]\nname = ""\n')
    refused(capsys, "compressor name is empty", "run", "--config", config, "--out", tmp_path / "r")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_a_schedule_is_checked_over_the_runs_rounds_and_its_extension(capsys, tmp_path):
    """decay 0.5: tau_r = 0.05 * 2^(r+1) stays a float32 for 100 rounds, not for 200; extending a
    finished 2-round run to 200 rounds is refused and leaves it byte for byte as it was."""
    from flarebench import make_config
    from flarebench.errors import ConfigError

    make_config(method="flare", rounds=100, params={"regularizer": {"decay": 0.5}})
    with pytest.raises(ConfigError, match="over the run's 200 rounds: tau_r is .* at round 1.."):
        make_config(method="flare", rounds=200, params={"regularizer": {"decay": 0.5}})
    code, _, err = cli(capsys, *RUN, "--method", "flare", "-p", "regularizer.decay=0.5", "--out", tmp_path, "--name", "r")
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    refused(capsys, "must stay finite over the run's 200 rounds", "run", "--resume", tmp_path / "r", "--rounds", "200", "--quiet")
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before


@pytest.mark.parametrize("args", [
    ["--method", "threshold", "-p", "compressor.tau=3e38"],  # nothing ever crosses it: nothing is sent
    ["--method", "flare", "-p", "regularizer.decay=1e39"],  # the pull vanishes after round 1
    ["--method", "flare", "-p", "regularizer.decay=1e308"],  # decay^2 overflows: tau_2 is its limit, 0
    ["--method", "fedprox-ef", "-p", "regularizer.decay=1e308"],
    ["--method", "fetchsgd", "-p", "compressor.rows=1", "-p", "compressor.columns_per_k=1e-300"],  # a 1 x 1 sketch
    ["--method", "dgc", "-p", "memory.clip=3e38"],
])
def test_extreme_but_legitimate_part_values_complete(capsys, tmp_path, args):
    code, _, err = cli(capsys, *RUN, *args, "--out", tmp_path, "--name", "r")
    assert code == 0 and "Traceback" not in err, err
    assert json.loads((tmp_path / "r" / "config.json").read_text())["status"] == "complete"
