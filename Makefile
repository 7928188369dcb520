# Every target installs what it needs: `make setup` (run by the others) makes .venv and installs
# Cohort editable with its dev tools; it reruns only when pyproject.toml or setup.py change.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: setup proto run demo test bench chaos lint clean

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

proto: setup  ## regenerate shared/cohort/api from protos/
	$(PY) protos/generate.py

run: setup  ## the whole suite in one process on the embedded default (Ctrl-C stops it)
	$(VENV)/bin/cohort serve all

demo: setup  ## the main job: start the suite and show it working
	$(VENV)/bin/cohort demo

test: setup  ## the test suite (PostgreSQL/Redis tests run when COHORT_TEST_* name them)
	$(VENV)/bin/pytest -q

bench: setup  ## speed figures, each printed beside its target
	$(PY) tests/bench $(ARGS)

chaos: setup  ## training jobs under restarts of each service, PostgreSQL and Redis (a table of losses)
	$(PY) tests/chaos $(ARGS)

lint: setup  ## ruff, mypy (the files listed in pyproject.toml), generated-code drift, buf lint of the contracts
	$(VENV)/bin/ruff check shared services tests protos/generate.py setup.py
	@mkdir -p build/mypy-path/cohort && ln -sfn ../../../services build/mypy-path/cohort/services
	$(VENV)/bin/mypy
	$(PY) protos/generate.py --check
	npx --yes @bufbuild/buf lint

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .ruff_cache
