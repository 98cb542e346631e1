"""Shared fixtures: small real runs on the shipped MNIST (mlp, few clients, few rounds)."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# Ray (the ray tests' head, Flower's simulation engine) on the loopback address only: without this, Ray
# replaces 127.0.0.1 by the machine's network address; the tests' servers must stay on 127.0.0.1
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny(**overrides):
    """A RunConfig that runs in about a second: mlp, 4 clients x 200 samples, batch 50, 3 rounds."""
    from flarebench import make_config

    base = dict(
        model="mlp", clients=4, samples_per_client=200, batch_size=50, rounds=3,
        lr=0.1, momentum=0.9, eval_every=1, device="cpu", seed=0, engine="sequential",
    )
    base.update(overrides)
    return make_config(**base)


@pytest.fixture
def tiny_config(tmp_path):
    def make(**overrides):
        overrides.setdefault("out", str(tmp_path / "results"))
        return tiny(**overrides)

    return make


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``flarebench ARGS`` in-process: (exit code, stdout, stderr)."""
    from flarebench.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on a shared 2-core machine two threads oversubscribe (30x slower steps)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return SHARED_DATA


@contextmanager
def lock_held_elsewhere(run_dir):
    """Another process holds ``run_dir``'s lock (as a run still going does) for the block."""
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()
