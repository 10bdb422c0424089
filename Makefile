# Two commands for a newcomer:  make demo  |  make test
# Each creates (or reuses) .venv and installs what it needs, with torch pinned to the CPU
# build on local disk through constraints.txt.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

## Fit the default model on the bundled PBMCs; writes demo_output/
demo: $(STAMP)
	$(VENV)/bin/scvae-beta demo --out demo_output

## Lint, then the whole test suite (slow tests included, as in CI)
test: $(STAMP)
	$(VENV)/bin/ruff check scvae_beta tests benchmarks scripts
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest

## The suite without the slow tests
test-fast: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check scvae_beta tests benchmarks scripts
	$(VENV)/bin/ruff format --check scvae_beta tests benchmarks scripts

## Throughput against scvi-tools (needs .venv-bench, see DEVELOPERS.md)
bench:
	.venv-bench/bin/python benchmarks/throughput.py

## Re-pin constraints.txt from the current .venv
lock: $(STAMP)
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --exclude-editable \
	  | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) demo_output .pytest_cache

## The documentation site (sphinx, warnings are errors): docs/_build/html/index.html
.PHONY: docs docs-clean
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: built docs/_build/html/index.html"

docs-clean:
	rm -rf docs/_build docs/_generated docs/generated docs/tutorials/*.ipynb
