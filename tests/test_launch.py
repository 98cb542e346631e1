"""One launcher, one world builder: runner.py knows no backend; a Flower run checks its output and stamps its
default name once (it was 4 and 3 times through runner -> simulation -> serverapp -> runner)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import FLOWER_MISSING, tiny

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code, as written (relative ones with their dots)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out |= {"." * node.level + (node.module or "") + (f".{a.name}" if not node.module else "") for a in node.names}
    return out


def test_runner_and_world_import_no_backend():
    for module in ("runner.py", "world.py"):
        imports = imported_modules(REPO / "flarebench" / module)
        assert imports and not [m for m in imports if "backends" in m or m in {".launch", "flarebench.launch"}], (module, imports)


def test_a_flower_run_checks_its_output_and_stamps_its_name_once(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason=FLOWER_MISSING)
    from flarebench import config, launch, runner

    calls = {"check_output": 0, "default_name": 0}

    def counted(module, name):
        real = getattr(module, name)

        def spy(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)

    counted(launch, "check_output")
    counted(runner, "check_output")
    counted(runner, "default_name")
    counted(config, "default_name")
    cfg = tiny(method="topk-ef", clients=2, samples_per_client=50, rounds=1, out=str(tmp_path), backend="flower")
    result = launch.run(cfg)
    assert calls == {"check_output": 1, "default_name": 1}
    assert result.path.parent == tmp_path and result.path.name.startswith("topk-ef-s0.999-mnist-embedded-mlp-")
    assert [p.name for p in tmp_path.iterdir()] == [result.path.name]
