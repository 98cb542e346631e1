"""A pytest plugin that counts the bad inputs the tests feed the CLI: every in-process ``flarebench ...``
call (tests/conftest.py's ``cli``) that exits with code 2, by surface. The counts of docs/reliability.md.

    PYTHONPATH=.:benchmarks python -m pytest -p count_refusals tests/test_bad_input.py tests/test_resume.py \\
        tests/test_ray.py tests/test_flower.py tests/test_compare.py tests/test_rundir.py tests/test_config.py \\
        tests/test_parts.py tests/test_bits.py tests/test_cli.py -q

Calls made in a subprocess, or through an import of ``main`` made before the plugin wraps it, are not counted.
"""

from __future__ import annotations

from collections import Counter

import pytest

REFUSED: Counter = Counter()
PART_OPTIONS = {"-p", "--param", "--regularizer", "--compressor", "--memory", "--aggregator"}


def surface(argv: list[str]) -> str:
    """Which surface a refused command line tried: the command, and for ``run`` the kind of input."""
    cmd = argv[0] if argv else "(none)"
    if cmd == "run":
        if "--resume" in argv:
            return "run --resume"
        if "flower" in argv:
            return "run --backend flower"
        if PART_OPTIONS & set(argv):
            return "run: part names and parameters"
        return "run: TOML config" if "--config" in argv else "run: options"
    if cmd == "sweep":
        return "sweep --ray" if any(a in argv for a in ("--ray", "--cpus-per-run", "--gpus-per-run")) else "sweep"
    return cmd


@pytest.fixture(autouse=True)
def _count_refusals(monkeypatch):
    import flarebench.cli as cli

    real = cli.main

    def main(argv=None, *args, **kwargs):
        try:
            return real(argv, *args, **kwargs)
        except SystemExit as e:
            if e.code == 2:
                REFUSED[surface([str(a) for a in argv or []])] += 1
            raise

    monkeypatch.setattr(cli, "main", main)
    yield


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"bad inputs refused with exit code 2: {sum(REFUSED.values())}")
    for name, n in REFUSED.most_common():
        terminalreporter.write_line(f"  {n:4d}  {name}")
