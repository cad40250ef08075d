"""Build the student edition's sources: the book with every exercise solution removed.

sphinx-exercise's own ``hide_solutions`` option crashes on gated solutions (``solution-start`` /
``solution-end``, needed when a solution holds code cells), so the student edition is built from
a copy of the sources in which the solution blocks are cut out. Exercises stay.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.book import ROOT, write_config  # noqa: E402

OPEN = re.compile(r"^(`{3,}|:{3,})\{(solution|solution-start|solution-end)\}")


def strip_solutions(text: str) -> str:
    """Remove ``{solution}`` blocks and ``{solution-start}`` ... ``{solution-end}`` ranges."""
    out, lines, i = [], text.splitlines(keepends=True), 0
    while i < len(lines):
        m = OPEN.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        fence, kind = m.group(1), m.group(2)
        if kind == "solution-end":
            raise ValueError("solution-end without solution-start")
        if kind == "solution-start":  # skip to the closing fence of the matching solution-end
            while i < len(lines) and not (OPEN.match(lines[i]) and OPEN.match(lines[i]).group(2) == "solution-end"):
                i += 1
            fence = OPEN.match(lines[i]).group(1)
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            i += 1
        i += 1
    return "".join(out)


def main(dest: str, execute: str | None = None) -> None:
    dest_dir = ROOT / dest
    if dest_dir.exists():
        shutil.rmtree(dest_dir)
    dest_dir.mkdir(parents=True)
    for name in ["_toc.yml", "intro.md", "references.bib"]:
        shutil.copy(ROOT / name, dest_dir / name)
    shutil.copytree(ROOT / "otbook", dest_dir / "otbook")  # for {literalinclude} of library code
    for src in (ROOT / "chapters").rglob("*.md"):
        out = dest_dir / src.relative_to(ROOT)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(strip_solutions(src.read_text()))
    write_config(dest_dir / "_config.yml", execute=execute, title_suffix=" (student edition)")
    print(f"student sources in {dest_dir}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Write the student edition's sources.")
    ap.add_argument("dest", nargs="?", default="_build/student/src")
    ap.add_argument("--execute", help="execution mode of its build (default: the book's)")
    args = ap.parse_args()
    main(args.dest, args.execute)
