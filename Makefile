# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch and torchvision installed as a matching pair before the package itself.
TORCH  := torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: demo test setup lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/syllabus run all

test: $(STAMP)
	$(PY) -m ruff check syllabus tests benchmarks
	$(PY) -m pytest -n 2

bench: $(STAMP)
	$(PY) benchmarks/bench_norms.py

clean:
	rm -rf runs .pytest_cache
