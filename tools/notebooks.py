"""Write every chapter of the book as a Jupyter notebook (.ipynb), e.g. for Colab or download."""

import pathlib
import sys

import jupytext

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from tools.book import ROOT, chapters  # noqa: E402


def main(out: str) -> None:
    out_dir = ROOT / out
    for src in chapters():
        dest = out_dir / src.relative_to(ROOT).with_suffix(".ipynb")
        dest.parent.mkdir(parents=True, exist_ok=True)
        jupytext.write(jupytext.read(src), dest)
        print(dest.relative_to(ROOT))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "_build/notebooks")
