"""Helpers shared by the build scripts and the chapter tests: which chapters the book has."""

from __future__ import annotations

import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _files(node):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for key in ("chapters", "sections", "parts"):
            for child in node.get(key, []) or []:
                yield from _files(child)
    elif isinstance(node, list):
        for child in node:
            yield from _files(child)


def toc_files(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    """Every page listed in ``_toc.yml`` (root first), as paths to existing ``.md`` files."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    names = [toc["root"], *_files(toc)]
    paths = []
    for name in names:
        p = root / name
        p = p if p.suffix else p.with_suffix(".md")
        if not p.exists():
            raise FileNotFoundError(f"_toc.yml lists {name}, which does not exist")
        paths.append(p)
    return paths


def is_notebook(path: pathlib.Path) -> bool:
    """A page is a notebook when its front matter names a kernel (jupytext MyST format)."""
    head = path.read_text()[:1000]
    return head.startswith("---") and "kernelspec" in head


def chapters(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    """The executable chapters of the book, in table-of-contents order."""
    return [p for p in toc_files(root) if is_notebook(p)]
