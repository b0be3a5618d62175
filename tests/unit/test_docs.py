"""The project stands alone: no file points outside the repository, every doc link resolves.

A clone holds only what git tracks, so the design and the metric definitions live in
``docs/``; a reference to a document next to the repository, or a relative link to a
file that is not there, leaves a reader with nothing.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

OUTSIDE_REFERENCES = ("../shared", "DESIGN.md", "STYLE.md")
# "DESIGN principle 6" and the like: the upper-case name of a document the clone lacks
_BARE_NAME = re.compile(r"\b(DESIGN|STYLE)\b")

# [text](target) and [text](target "title"); images too
_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return None  # binary, or deleted in the work tree but not yet in git


def outside_references(files: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in files:
        text = _text(path)
        if text is None:
            continue
        for n, line in enumerate(text.splitlines(), start=1):
            if any(ref in line for ref in OUTSIDE_REFERENCES) or _BARE_NAME.search(line):
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    return found


def _slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rule) gives a heading."""
    text = _CODE_SPAN.sub(lambda m: m.group(0)[1:-1], heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(markdown: str) -> set[str]:
    body = _FENCE.sub("", markdown)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", body, re.M)}


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    """Relative links in ``doc`` whose file (or, into Markdown, heading) is not in ``root``."""
    body = _CODE_SPAN.sub("", _FENCE.sub("", doc.read_text(encoding="utf-8")))
    broken = []
    for target in _LINK.findall(body):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # http:, https:, mailto: ...
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        where = f"{doc.relative_to(root)}: {target}"
        if not dest.is_relative_to(root):
            broken.append(f"{where} (outside the repository)")
        elif not dest.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text(encoding="utf-8")):
            broken.append(f"{where} (no such heading)")
    return broken


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_tracked_file_points_outside_the_repository() -> None:
    this_file = Path(__file__).resolve()  # it names what it looks for
    assert outside_references([f for f in _tracked_files() if f != this_file]) == []


def test_every_relative_link_in_the_docs_resolves() -> None:
    docs = _docs()
    assert {p.name for p in docs} >= {"README.md", "design.md", "metrics.md"}
    assert [b for doc in docs for b in broken_links(doc)] == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    # the forms that pointed readers outside a clone, and links to nothing
    sample = tmp_path / "sample.py"
    sample.write_text(
        "# see ../shared/x\n# DESIGN.md section\n# as in STYLE.md\n# DESIGN principle 6\n# designed well\n"
    )
    assert [line.split(": ", 1)[1] for line in outside_references([sample], tmp_path)] == [
        "# see ../shared/x",
        "# DESIGN.md section",
        "# as in STYLE.md",
        "# DESIGN principle 6",
    ]

    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text("# Repo\n")
    (root / "docs" / "design.md").write_text("# Design\n\n## Correctness `principles`\n")
    (tmp_path / "outside.md").write_text("# Outside\n")
    probe = root / "docs" / "probe.md"
    probe.write_text(
        "# Probe\n\n[a](../README.md) [b](nowhere.md) [c](design.md#no-such-heading)\n"
        "[d](design.md#correctness-principles) [e](#probe) [f](https://example.org/x.md)\n"
        "[g](../../outside.md) `[h](in-code.md)`\n\n```\n[i](in-a-fence.md)\n```\n"
    )
    assert broken_links(probe, root) == [
        "docs/probe.md: nowhere.md (no such file)",
        "docs/probe.md: design.md#no-such-heading (no such heading)",
        "docs/probe.md: ../../outside.md (outside the repository)",
    ]
