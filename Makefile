# The two commands a newcomer needs: `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint bench

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(VENV)/.installed

## Set up, then run the main job on the embedded default (a shipped sample).
run: setup
	$(VENV)/bin/mindgap verify --batch mindgap/samples/verify_sample.jsonl

## Set up, lint, and run the whole test suite.
test: setup lint
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/verifier_throughput.py
