"""Throw away the book's execution cache when the library or the dependencies changed.

Jupyter Book's cache keys a notebook on its own source only, so a change in ``otbook/`` would
otherwise leave stale outputs in the built book.
"""

import hashlib
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def library_hash() -> str:
    h = hashlib.sha256()
    files = sorted((ROOT / "otbook").rglob("*.py")) + [ROOT / "pyproject.toml", ROOT / "_config.yml"]
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def main(cache_dir: str) -> None:
    cache = ROOT / cache_dir
    stamp = cache.parent / ".otbook-library-hash"
    key = library_hash()
    if stamp.exists() and stamp.read_text() != key and cache.exists():
        print(f"otbook/ changed since the last build: clearing {cache_dir}")
        shutil.rmtree(cache)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "_build/.jupyter_cache")
