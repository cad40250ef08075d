# otbook: the two commands are `make book` and `make test`; everything else is a convenience.
# Each target creates .venv and installs what it needs on first use.
#
#   make book      build the HTML book, executing every chapter   -> _build/html/index.html
#   make test      every chapter of _toc.yml executed afresh by nbval (one test per code cell) +
#                  unit tests + the library's docstring examples + every page of the built book
#                  checked in headless Chromium (screenshots -> _build/screenshots)
#   make pages     the page check alone (tests/test_pages.py)
#   make browser   install Debian's chromium for the page check, when missing (apt-get, as root)
#   make lab       Jupyter Lab on the chapters (the .md files open as notebooks)
#   make student   the book with exercise solutions removed         -> _build/student/src/_build/html
#   make notebooks the chapters as .ipynb (for Colab / download)    -> _build/notebooks
#
# torch is installed first, pinned to a CPU-friendly build; a GPU reader picks their own, e.g.
#   make test TORCH="torch --index-url https://download.pytorch.org/whl/cu124"

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.otbook-installed
# the chapters run through nbval, one test item per code cell (tools/chapter_check.py)
NBVAL  := --nbval-lax --nbval-cell-timeout=600
JB     := $(VENV)/bin/jupyter-book

.PHONY: book test unit chapters pages browser lab student notebooks install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[book,test]"
	touch $(STAMP)

book: $(STAMP)
	$(PY) tools/cache_key.py _build/.jupyter_cache
	$(JB) build . --builder html -W --keep-going
	@echo "The book is at file://$(CURDIR)/_build/html/index.html (each chapter's executed .ipynb beside its page)"

test: $(STAMP) browser
	$(PY) -m pytest chapters tests otbook $(NBVAL)

unit: $(STAMP)
	$(PY) -m pytest tests otbook --ignore=tests/test_chapters.py --ignore=tests/test_pages.py

pages: $(STAMP) browser
	$(PY) -m pytest tests/test_pages.py

# Headless Chromium for the page check: Debian's package, installed when missing (CI runs as root).
CHROMIUM_FOUND = [ -n "$$OTBOOK_CHROMIUM" ] || [ -x /usr/lib/chromium/chromium ] \
	|| command -v chromium || command -v chromium-browser || command -v google-chrome
browser:
	@if { $(CHROMIUM_FOUND); } >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "The page check needs Chromium: install it, or set OTBOOK_CHROMIUM to its binary." >&2; exit 1; fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	echo "Installing Debian's chromium for the page check (apt-get)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	  || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

chapters: $(STAMP)
	$(PY) -m pytest chapters tests/test_chapters.py $(NBVAL)

student: $(STAMP)
	$(PY) tools/student.py _build/student/src
	$(JB) build _build/student/src --builder html -W --keep-going
	@echo "The student edition is at file://$(CURDIR)/_build/student/src/_build/html/index.html"

notebooks: $(STAMP)
	$(PY) tools/notebooks.py _build/notebooks

lab: $(STAMP)
	$(PY) -m pip install --quiet "jupyterlab>=4" "jupytext>=1.16"
	$(VENV)/bin/jupyter lab chapters

clean:
	rm -rf _build
