"""Shared fixtures: small real runs on the shipped MNIST (mlp, few clients, few rounds)."""

from __future__ import annotations

import os
import shutil
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

USER_COMPRESSORS = Path(__file__).with_name("user_compressors.py")  # a user's file: fp16 and broken variants
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


# why a test of an optional extra is skipped, with the command that installs it
FLOWER_MISSING = 'needs the flower extra: pip install -e ".[flower]"'
RAY_MISSING = 'needs the ray extra: pip install -e ".[ray]"'


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``flarebench ARGS`` in-process: (exit code, stdout, stderr)."""
    from flarebench.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@contextmanager
def one_thread():
    """One intra-op torch thread for the block: on a shared 2-core machine two threads oversubscribe (30x
    slower steps), and float sums depend on the thread count (a Ray task with --cpus-per-run 1 has one)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def one_torch_thread():
    """:func:`one_thread` for the rest of the module that asks for it."""
    with one_thread():
        yield


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


PLUGIN = '''"""A tiny flarebench plug-in for the tests: a compressor, a model and a preset."""
import math

from torch import nn

from flarebench.methods.presets import preset
from flarebench.methods.registry import Param, positive, register
from flarebench.models.base import ModelPart

from .user_compressors import Half as Fp16


@register
class Half(Fp16):
    name = "plug-half"
    summary = "every entry as fp16 (16 bits per entry)"


@register
class Tiny(ModelPart):
    name = "plug-tiny"
    summary = "flatten, dense width + tanh, dense classes"
    inputs = ("images", "vectors")
    params = (Param("width", int, 16, "hidden width", check=positive, rule="> 0"),)

    def build(self, input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), self.width), nn.Tanh(),
                             nn.Linear(self.width, num_classes))


preset("plug-half-ef", "fp16 entries with error feedback (a plug-in's preset)", "the test plug-in",
       compressor="plug-half", memory="residual")
'''


def plugin_site(root: Path, broken: bool = False) -> Path:
    """A directory to put on PYTHONPATH holding the installed plug-in ``fbplug`` 0.1 (a hand-written
    .dist-info with its ``flarebench.parts`` entry point), and with ``broken`` a second one whose module
    does not exist."""
    site = root / "site"
    (site / "fbplug").mkdir(parents=True, exist_ok=True)
    (site / "fbplug" / "__init__.py").write_text(PLUGIN)
    shutil.copy(USER_COMPRESSORS, site / "fbplug" / "user_compressors.py")
    dists = [("fbplug", "fbplug")] + ([("fbbroken", "fbbroken_not_there")] if broken else [])
    for dist, module in dists:
        info = site / f"{dist}-0.1.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[flarebench.parts]\n{dist} = {module}\n")
        (info / "top_level.txt").write_text(f"{module}\n")
    return site


def env_with(*paths, **extra) -> dict:
    """os.environ with ``paths`` (and this checkout) first on PYTHONPATH, one torch thread, and ``extra``."""
    import os

    repo = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join([*map(str, paths), repo, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1", **extra}


def decode_peak_bytes(decode, data: bytes) -> int:
    """Peak traced Python memory (bytes) while ``decode(data)`` raises DecodeError, as it must."""
    import tracemalloc

    from flarebench.errors import DecodeError

    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            decode(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
