"""The README is a front page that CI mirrors; the docs site (mkdocs.yml, docs/) lists every page and builds strictly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DOCS_MISSING = 'needs the docs extra: pip install -e ".[docs]"'


def nav_pages() -> list[str]:
    """The pages in mkdocs.yml's nav, in order (paths relative to docs/)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:\n") :]
    return re.findall(r"^\s+- (?:\"[^\"\n]*\"|[^:\n]+):\s*(\S+\.md)\s*$", nav, flags=re.M)


def doc_pages() -> list[str]:
    """Every Markdown page under docs/ that mkdocs builds (docs/_hooks/ is excluded in mkdocs.yml)."""
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)


def links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_readme_is_a_front_page_under_200_lines():
    assert len(README.read_text().splitlines()) < 200


def test_ci_runs_the_readmes_first_two_commands_as_written():
    """.ci/run mirrors the README's first code block (install + main job, then the tests), line for line."""
    block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    commands = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]
    assert commands == ['pip install -e ".[test]" && flarebench run', "pytest"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci, f".ci/run does not run the README's `{command}`"


def test_every_docs_page_is_in_the_nav_and_linked_from_the_front_pages():
    nav = nav_pages()
    assert len(nav) == len(set(nav)) and "index.md" in nav
    assert sorted(nav) == doc_pages()  # no page missing from the nav, no nav entry without its page
    readme_links = {Path(l.split("#")[0]).as_posix() for l in links(README.read_text())}
    index_links = {l.split("#")[0] for l in links((DOCS / "index.md").read_text())}
    for page in nav:
        assert f"docs/{page}" in readme_links or page == "index.md" and "docs/index.md" in readme_links, page
        assert page in index_links or page == "index.md", f"docs/index.md does not link {page}"


def test_readme_links_resolve():
    for target in links(README.read_text()):
        if "://" not in target:
            assert (ROOT / target.split("#")[0]).exists(), target


def test_cli_page_has_every_command():
    from flarebench.cli.app import app

    page = (DOCS / "cli.md").read_text()
    names = [c.name for c in app.registered_commands]
    assert len(names) >= 10
    for name in names:
        assert f"\n## `flarebench {name}`\n" in page, f"docs/cli.md lacks flarebench {name}"


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_site_builds_strictly_with_the_linked_figures(tmp_path):
    pytest.importorskip("material", reason=DOCS_MISSING)
    r = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert r.returncode == 0, r.stderr
    # the figures under results/ that pages link as ../results/... are in the site, and the pages point at them
    zoo = (tmp_path / "site" / "zoo" / "index.html").read_text()
    src = re.search(r'src="\.\./(repo/results/[^"]+\.png)"', zoo).group(1)
    assert (tmp_path / "site" / src).read_bytes() == (ROOT / src.removeprefix("repo/")).read_bytes()


def test_a_link_to_a_missing_repository_file_fails_the_build(tmp_path):
    pytest.importorskip("material", reason=DOCS_MISSING)
    (tmp_path / "docs").mkdir()
    shutil.copytree(DOCS / "_hooks", tmp_path / "docs" / "_hooks")
    (tmp_path / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n![a figure](../figure.png)\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: t\nexclude_docs: |\n  _hooks/\nhooks:\n  - docs/_hooks/repo_files.py\n"
                                         "theme:\n  name: material\n  font: false\n")
    ok = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "site" / "repo" / "figure.png").read_bytes() == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n![a figure](../no-such-figure.png)\n")
    bad = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert bad.returncode != 0 and "../no-such-figure.png" in bad.stderr
