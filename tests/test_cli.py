"""The command line: the main job's plumbing and one-line errors for bad input."""

import subprocess
import sys

import pytest

from flarebench.cli import main


def cli(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_run_writes_results_and_prints_summary(capsys, tmp_path):
    code, out, err = cli(capsys, "run", "--model", "mlp", "--clients", "3", "--samples-per-client", "100",
                         "--rounds", "2", "--out", str(tmp_path), "--name", "r", "--method", "topk-ef", "--quiet")
    assert code == 0, err
    assert "final test accuracy" in out and "total uplink" in out
    assert (tmp_path / "r" / "metrics.csv").is_file() and (tmp_path / "r" / "config.json").is_file()
    # the same name again: one line pointing to --resume / --overwrite
    code, out, err = cli(capsys, "run", "--model", "mlp", "--clients", "3", "--samples-per-client", "100",
                         "--rounds", "2", "--out", str(tmp_path), "--name", "r", "--quiet")
    assert code != 0 and "exists" in err and "--overwrite" in err


def test_dry_run_prints_resolved_config(capsys):
    code, out, err = cli(capsys, "run", "--model", "cnn", "--dry-run")
    assert code == 0 and '"num_params": 582026' in out


def bad_inputs(tmp_path):
    toml_bad = tmp_path / "bad.toml"
    toml_bad.write_text("rounds = [\n")
    toml_key = tmp_path / "key.toml"
    toml_key.write_text("learning_rate = 0.1\n")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    return [
        (["--method", "sgd"], "unknown method 'sgd'"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--model", "resnet50"], "unknown model 'resnet50'"),
        (["--partition", "zipf"], "unknown partition 'zipf'"),
        (["--sparsity", "1.5"], "sparsity must be in (0, 1)"),
        (["--sparsity", "0"], "sparsity must be in (0, 1)"),
        (["--rounds", "0"], "rounds must be >= 1"),
        (["--clients", "4", "--clients-per-round", "5"], "clients-per-round must be between 1 and clients"),
        (["--config", str(toml_bad)], "malformed TOML"),
        (["--config", str(toml_key)], "unknown key 'learning_rate'"),
        (["--config", str(tmp_path / "missing.toml")], "config file not found"),
        (["--dataset", "mnist", "--data-root", str(tmp_path / "empty")], "mnist not found under"),
        (["--out", str(a_file / "sub")], "cannot create output directory"),
        (["--rounds", "many"], "Invalid value for '--rounds'"),
    ]


def test_bad_input_gives_one_line(capsys, tmp_path):
    out_dir = tmp_path / "results"
    for args, fragment in bad_inputs(tmp_path):
        extra = [] if "--out" in args else ["--out", str(out_dir)]
        code, out, err = cli(capsys, "run", *args, *extra, "--quiet")
        assert code == 2, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("flarebench: error:"), (args, err)
        assert fragment in lines[0], (args, err)
        assert "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.iterdir())  # nothing half-written


def test_entry_point_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "flarebench", "run", "--sparsity", "2", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
