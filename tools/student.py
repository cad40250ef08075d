"""Build the student edition's sources: the book with every exercise solution removed.

sphinx-exercise's own ``hide_solutions`` option crashes on gated solutions (``solution-start`` /
``solution-end``, needed when a solution holds code cells), so the student edition is built from
a copy of the sources in which the solution blocks are cut out. Exercises stay.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def main(dest: str) -> None:
    dest_dir = ROOT / dest
    if dest_dir.exists():
        shutil.rmtree(dest_dir)
    dest_dir.mkdir(parents=True)
    for name in ["_config.yml", "_toc.yml", "intro.md", "references.bib"]:
        shutil.copy(ROOT / name, dest_dir / name)
    shutil.copytree(ROOT / "otbook", dest_dir / "otbook")  # for {literalinclude} of library code
    for src in (ROOT / "chapters").rglob("*.md"):
        out = dest_dir / src.relative_to(ROOT)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(strip_solutions(src.read_text()))
    cfg = (dest_dir / "_config.yml").read_text()
    cfg = re.sub(r'^title: "(.*)"', r'title: "\1 (student edition)"', cfg, count=1, flags=re.M)
    (dest_dir / "_config.yml").write_text(cfg)
    print(f"student sources in {dest_dir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "_build/student/src")
