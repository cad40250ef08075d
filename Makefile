# otbook: the two commands are `make book` and `make test`; everything else is a convenience.
# Each target creates .venv and installs what it needs on first use.
#
#   make book      build the HTML book, executing every chapter   -> _build/html/index.html
#   make test      unit tests + every chapter of _toc.yml executed afresh
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
JB     := $(VENV)/bin/jupyter-book

.PHONY: book test unit chapters lab student notebooks install clean

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
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

test: $(STAMP)
	$(PY) -m pytest tests

unit: $(STAMP)
	$(PY) -m pytest tests --ignore=tests/test_chapters.py

chapters: $(STAMP)
	$(PY) -m pytest tests/test_chapters.py

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
