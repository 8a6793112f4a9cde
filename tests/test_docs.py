"""README as a front door (issue 34): short, opening with the two commands; every docs page in mkdocs.yml's nav."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def test_readme_is_short_and_opens_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text) <= 12_000, f"README.md is {len(text)} characters; move detail to docs/"
    first_block = re.search(r"```[^\n]*\n(.*?)```", text, re.S)
    assert first_block, "README.md has no code block"
    assert "make demo" in first_block.group(1) and "make test" in first_block.group(1)


def test_readme_links_to_docs_resolve():
    links = re.findall(r"\]\((docs/[^)#]+)", README.read_text(encoding="utf-8"))
    assert links, "README.md links to no docs page"
    assert [link for link in links if not (ROOT / link).is_file()] == []


def _nav_files(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [f for item in node for f in _nav_files(item)]
    if isinstance(node, dict):
        return [f for value in node.values() for f in _nav_files(value)]
    return []


def test_every_docs_page_is_in_the_nav_and_back():
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[dev]')")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_files(config["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert len(nav) == len(set(nav)), f"pages listed twice in the nav: {nav}"
    assert sorted(nav) == pages
