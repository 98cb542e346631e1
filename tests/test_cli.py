"""The command line: the main job's plumbing and one-line errors for bad input."""

import subprocess
import sys
import urllib.error

import pytest

from flarebench.cli import main
from conftest import cli, lock_held_elsewhere




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
    corrupt = tmp_path / "corrupt"
    (corrupt / "MNIST" / "raw").mkdir(parents=True)
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        (corrupt / "MNIST" / "raw" / name).write_bytes(bytes(range(256)) * 4)  # garbage, not idx files
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
        # the output is checked before the data is loaded
        (["--out", str(a_file / "sub"), "--dataset", "mnist", "--data-root", str(tmp_path / "empty")], "cannot create output directory"),
        (["--out", str(tmp_path), "--name", "file"], "exists and is not a run directory"),
        (["--dataset", "mnist", "--data-root", str(corrupt)], "is corrupt or unreadable (AssertionError); delete it and re-download"),
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


def test_overwrite_of_a_run_in_progress_keeps_its_files(capsys, tmp_path):
    run_dir = tmp_path / "x"
    run_dir.mkdir()
    files = {"config.json": b'{"status": "running"}', "metrics.csv": b"round\n0\n"}
    for name, data in files.items():
        (run_dir / name).write_bytes(data)
    with lock_held_elsewhere(run_dir):  # run x is still going in another process
        code, out, err = cli(capsys, "run", "--model", "mlp", "--clients", "3", "--samples-per-client", "100", "--rounds", "2",
                             "--out", str(tmp_path), "--name", "x", "--overwrite", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "in progress in another process" in err, err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == files


def test_download_failure_says_so_and_removes_what_it_created(capsys, tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    existing, fresh = tmp_path / "data", tmp_path / "new" / "data"
    existing.mkdir()
    for root in (existing, fresh):
        code, out, err = cli(capsys, "run", "--dataset", "mnist", "--data-root", str(root), "--download",
                             "--out", str(tmp_path / "results"), "--quiet")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert f"downloading mnist to {root} failed" in lines[0] and "no network" in lines[0], err
        assert "pass --download" not in lines[0], err
    assert existing.is_dir() and not any(existing.iterdir())  # it existed: kept; MNIST/raw it created: removed
    assert not (tmp_path / "new").exists()


def test_run_help_shows_every_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one line per option
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    lines = capsys.readouterr().out.splitlines()

    def line_of(option):  # the option's line, with its help where a long name puts it on the next line
        found = [i for i, l in enumerate(lines) if f" {option} " in l]
        assert len(found) == 1, (option, found)
        i = found[0]
        follow = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].lstrip().startswith("-") else ""
        return lines[i] + " " + follow.strip()

    for option, default in [("--sparsity", "0.999"), ("--lr", "0.1"), ("--compressor", "the method's"),
                            ("--memory", "the method's"), ("--batch-size", "50 samples"),
                            ("--rounds", "200 rounds"), ("--method", "flare"), ("--download", "no-download"),
                            ("--samples-per-client", "training set / clients"), ("--checkpoint-every", "auto")]:
        assert f"[default: {default}" in line_of(option), (option, line_of(option))
