"""The README a newcomer reads in five minutes, and the docs pages it links (issue 21, step 8).

The README stays short and points at ``docs/*.md`` for the rest; every relative link of the
README and of the docs pages reaches a file (and, with ``#anchor``, a heading) that exists, so
moving or renaming a page cannot leave a dead link behind. The docs' examples are checked where
they live: ``tests/test_examples.py`` (docs/own-flows.md), ``tests/unit/test_models_today.py`` (the
README's Models table).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250

#: README headings that other text names: the CLI's and the flow's messages ("see the README's
#: "Scaling out"", "... "Scale and cost"", "... Models"), .ci/run ("the README's test command")
#: and CHANGELOG.md (the README's *Models* table).
README_SECTIONS_NAMED_ELSEWHERE = ("Two commands", "Models", "Scale and cost", "Scaling out")


def pages() -> list[Path]:
    """The README and every docs page."""
    return [README, *sorted(DOCS.glob("*.md"))]


FENCED_BLOCK = re.compile(r"^```.*?^```[ \t]*$", flags=re.DOTALL | re.MULTILINE)
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """Markdown without its fenced code blocks and with code spans blanked (their text kept out)."""
    return re.sub(r"`[^`\n]*`", "code", FENCED_BLOCK.sub("", text))


def anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes for a Markdown file (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in raw_headings(path):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def raw_headings(path: Path) -> list[str]:
    """A Markdown file's headings, as written (code spans included)."""
    text = FENCED_BLOCK.sub("", path.read_text(encoding="utf-8"))
    return re.findall(r"^#{1,6}[ \t]+(.+?)[ \t]*$", text, flags=re.MULTILINE)


def relative_links(path: Path) -> list[str]:
    """The link targets of a Markdown file that are neither absolute URLs nor e-mail addresses."""
    targets = LINK.findall(prose(path.read_text(encoding="utf-8")))
    return [target for target in targets if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target)]


def test_the_readme_is_at_most_250_lines() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move the detail to docs/*.md"


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_links_every_docs_page() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(README)}
    orphans = [page.name for page in sorted(DOCS.glob("*.md")) if page.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"


def test_the_readme_keeps_the_sections_other_text_names() -> None:
    headings = raw_headings(README)
    missing = [name for name in README_SECTIONS_NAMED_ELSEWHERE if name not in headings]
    assert not missing, f"README.md lost the sections {missing} that messages and .ci/run name"
    text = README.read_text(encoding="utf-8")
    two_commands = text.split("\n## Two commands\n", 1)[1].split("\n## ", 1)[0]
    assert "make run" in two_commands and "make test" in two_commands


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_the_python_blocks_are_python(page: Path) -> None:
    for number, block in enumerate(PYTHON_BLOCK.findall(page.read_text(encoding="utf-8")), 1):
        compile(block, f"{page.name}, python block {number}", "exec")
