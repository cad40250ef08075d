"""Numbers typed into a chapter's prose: what the page check of the book's rule flags.

The rule (README, "Writing a chapter"): every number the prose states about a run is computed
in the chapter and shown with myst-nb's ``glue`` (``ob.glue(name, value)`` in a code cell,
``{glue:text}`name:.2f``` in the prose), never typed in, because typed numbers drift from the
output. Mechanically, this module flags, in the prose of a chapter (markdown cells and the text
of admonitions, exercises and figures, but not math, code, roles or labels):

* a number with a unit of measurement: ``%``, a factor (``3x``, ``2.5×``), a time (``s``,
  ``ms``, ``min``, ``seconds``, ``minutes``, ``hours``), a memory size (``KB``, ``MB``, ``GB``,
  ``TB``), or a count of ``iterations``;
* a decimal with two or more digits after the point (``0.005``, ``2.68``, ``7.31``).

A paragraph that must type such numbers (what a paper reports, a table of settings, an exercise
whose answer is a closed form) is preceded by a MyST comment line that says why::

    % typed-numbers: the paper's Table 2

Usage: ``python tools/prose.py chapters/foundations/02_entropic.md ...`` prints each flagged
number with its line; the chapter tests run :func:`typed_numbers` on every chapter.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

UNITS = (r"%|x\b|×(?!\s*\d)|ms\b|s\b|min\b|seconds?\b|minutes?\b|hours?\b|[KMGT]B\b|"
         r"iterations?\b")
NUMBER = r"\d[\d,]*(?:\.\d+)?"
FLAGS = [
    re.compile(rf"(?<![\w.$\\]){NUMBER}\s?(?:{UNITS})"),
    re.compile(r"(?<![\w.$\\])\d+\.\d{2,}(?![\w])"),
]
CODE_DIRECTIVES = {"code-cell", "literalinclude", "math", "eval-rst", "code", "code-block",
                   "raw", "glue:figure", "glue:math"}
ALLOW = re.compile(r"^%\s*typed-numbers:\s*\S")

# spans of a line that are not prose: inline math, code spans, roles with their content,
# link targets, MyST labels, HTML comments
NOT_PROSE = re.compile(
    r"\$\$.*?\$\$|\$[^$]*\$|``.*?``|`[^`]*`|\{[\w:.-]+\}`[^`]*`|\]\([^)]*\)|^\([\w-]+\)=\s*$"
    r"|<!--.*?-->"
)


def _prose_lines(text: str):
    """Yield ``(line number, line)`` for the prose lines of a MyST markdown document, with the
    flag of an allow comment for the paragraph each belongs to."""
    fence = None  # the backtick run that opened a code or code-like directive fence
    in_math = allowed = False
    for k, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence) and stripped.strip("`") == "":
                fence = None
            continue
        m = re.match(r"^(`{3,}|~{3,})\s*(\{([\w:-]+)\})?", stripped)
        if m:
            name = m.group(3)
            if name is None or name in CODE_DIRECTIVES:
                fence = m.group(1)
            continue  # a prose directive (admonition, exercise, ...): its text is checked
        if stripped.startswith("$$"):
            in_math = not (in_math or stripped.endswith("$$") and len(stripped) > 2)
            continue
        if in_math:
            if stripped.endswith("$$"):
                in_math = False
            continue
        if ALLOW.match(stripped):
            allowed = True
            continue
        if not stripped:
            allowed = False
            continue
        if stripped.startswith((":", "+++", "---")) or stripped.startswith("%"):
            continue  # directive options, cell markers, front matter, comments
        yield k, line, allowed


def typed_numbers(path) -> list[str]:
    """The typed-in run numbers of a chapter (a MyST markdown notebook): ``"line: text"``."""
    text = Path(path).read_text()
    if text.startswith("---"):  # the jupytext front matter
        end = text.find("\n---", 3)
        text = "\n" * text[:end + 4].count("\n") + text[end + 4:]
    found = []
    for k, line, allowed in _prose_lines(text):
        if allowed:
            continue
        prose = NOT_PROSE.sub(" ", line)
        for pattern in FLAGS:
            for m in pattern.finditer(prose):
                found.append(f"{k}: {m.group(0).strip()!r} in: {line.strip()[:100]}")
    return found


def main(argv=None) -> int:
    paths = (argv if argv is not None else sys.argv[1:])
    total = 0
    for p in paths:
        for item in typed_numbers(p):
            print(f"{p}:{item}")
            total += 1
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
