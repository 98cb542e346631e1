"""mkdocs hook: repository files that the pages link to (figures under results/, configs) go into the site.

A page links a repository file as GitHub shows it, relative to the page (``../results/reference/x.png``).
mkdocs only knows files under ``docs/``, so such a link would be "not found" under ``--strict``; this hook
adds every linked file that exists to the build, copied to ``repo/<path from the repository root>``.
A link to a repository file that does not exist is left alone, and ``--strict`` fails on it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel

LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target) and ![alt](target "title")


def outside_links(page_src_uri: str, markdown: str) -> set[str]:
    """Targets of the page's relative links, as paths relative to docs/, that leave docs/ ('../...')."""
    found = set()
    for target in LINK.findall(markdown):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not path or "://" in path or path.startswith(("/", "mailto:")):
            continue
        uri = posixpath.normpath(posixpath.join(posixpath.dirname(page_src_uri), path))
        if uri.startswith("../"):
            found.add(uri)
    return found


def on_files(files: Files, config) -> Files:
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    wanted = set()
    for f in files.documentation_pages():
        wanted |= outside_links(f.src_uri, Path(f.abs_src_path).read_text(encoding="utf-8"))
    for uri in sorted(wanted):
        path = (docs / uri).resolve()
        if files.get_file_from_path(uri) is None and path.is_file() and path.is_relative_to(root):
            dest = "repo/" + path.relative_to(root).as_posix()
            # included explicitly: mkdocs would exclude a src_uri starting with '.' as a dotfile
            files.append(File(uri, str(docs), config["site_dir"], config["use_directory_urls"], dest_uri=dest,
                              inclusion=InclusionLevel.INCLUDED))
    return files
