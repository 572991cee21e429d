# The two commands a newcomer needs: `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint bench

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(VENV)/.installed

## Set up, then run the main job on the embedded default: rewrite the shipped sample
## problems with the packaged SmolLM2 model, then show the policy gap it closed.
RUN_DIR := runs/sample
RUN_ARGS ?= --limit 8 --max-tokens 256
run: setup
	$(VENV)/bin/mindgap rewrite --data mindgap/samples/problems.jsonl \
	  --out $(RUN_DIR)/aligned.jsonl --overwrite $(RUN_ARGS)
	$(VENV)/bin/mindgap gap --data $(RUN_DIR)/aligned.jsonl --plot $(RUN_DIR)/gap.png

## Set up, lint, and run the whole test suite.
test: setup lint
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/verifier_throughput.py
	$(PY) benchmarks/rewrite_throughput.py
