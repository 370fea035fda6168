# Quick start: `make demo` runs the whole pipeline on the synthetic demo cohort; `make test` runs
# the test suite. Both create the virtual environment .venv first if needed (`make install`).
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: install install-horovod install-monailabel demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: install
	snakemake --cores all

# Horovod 0.28.1 is built from source against the pinned torch (cached wheel after the first time).
$(VENV)/.horovod: $(VENV)/.installed scripts/install_horovod.sh
	scripts/install_horovod.sh $(BIN)/python
	touch $@

install-horovod: $(VENV)/.horovod

# MONAI Label in an environment of its own (see the script), for tests/annotation/test_monailabel.py.
.venv-monailabel/.installed: scripts/install_monailabel.sh pyproject.toml
	scripts/install_monailabel.sh .venv-monailabel

install-monailabel: .venv-monailabel/.installed

test: install $(VENV)/.horovod
	tests/run.sh

lint: install
	ruff check . && ruff format --check . && snakefmt --check . && snakemake --lint && lint-imports

# Everything a run makes. Not corrections/ (corrections.dir): the reviewers' work, which MONAI
# Label's submissions reach through the review datastore's labels/final/ link.
clean:
	rm -rf results logs resources .snakemake
