"""The reference tables of the docs are what results/reference/table.py prints from the committed runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("mode", [[], ["zoo"], ["unavail_cnn_k7"]], ids=["paper", "zoo", "unavail_cnn_k7"])
def test_docs_table_is_table_py_output(mode):
    out = subprocess.run([sys.executable, str(ROOT / "results" / "reference" / "table.py"), *mode],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout.splitlines()
    assert len(out) > 3  # header, rule, rows
    holding = [p for p in PAGES if out[0] in p.read_text().splitlines()]
    assert len(holding) == 1, f"the table's header is on {[str(p.relative_to(ROOT)) for p in holding]}, not one page"
    page = holding[0].read_text().splitlines()
    start = page.index(out[0])  # the table starts at its header line and runs line for line
    assert page[start : start + len(out)] == out
    assert not page[start + len(out)].startswith("|")  # and has no rows the script no longer prints


def test_unknown_experiment_is_one_line():
    r = subprocess.run([sys.executable, str(ROOT / "results" / "reference" / "table.py"), "no_such_experiment"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "error: no runs of no_such_experiment under results/reference/no_such_experiment "
        "(or no baselines/flare_paper/no_such_experiment.toml)"
    ]
