# Two commands matter: `make run` and `make test`. Each creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared

.PHONY: run test validation bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/parasim inspect --model llama-3-70b --gpu h100-sxm --tp 8
	$(BIN)/parasim train -c examples/train-llama3-70b.yaml --report results/train.html
	$(BIN)/parasim serve -c examples/serve-llama3-8b.yaml --requests-out results/serve-requests.csv --json-out results/serve.json --report results/serve.html
	@echo "reports: results/train.html, results/serve.html (open in a browser; docs/report.md)"

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n 2

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# calibration out of sample (docs/calibration.md): 5 folds per file and the 3-run check. Each factor
# costs one more run per case, so serving fits two (GEMM and memory-bound efficiency: most of an iteration)
# and training, cheap to run, all four: about 5x a plain validation (measured in the report).
CV ?= --cv 5 --cv-factors gemm_efficiency,memory_efficiency,training:attention_efficiency,training:comm_efficiency
PROJECT_CASES := validation/trtllm-0.9-static-batch.yaml $(foreach v,0.10 0.11 0.12 0.13 0.14 0.15 0.17 1.0,validation/trtllm-$(v)-perf-overview.yaml) \
	validation/apex-vllm-0.6-traces.yaml validation/vllm-v1-published.yaml \
	validation/vllm-v1-h100-threads.yaml validation/sglang-published.yaml \
	validation/trtllm-deepseek-r1-adp.yaml validation/llama3-405b-training.yaml validation/llmfoundry-mpt-training.yaml \
	validation/torchtitan-training.yaml validation/bloom-176b-training.yaml \
	validation/memory-published.yaml

validation: $(VENV)/.installed
	$(BIN)/parasim validate $(SHARED)/validation/dev.yaml --markdown docs/VALIDATION.md -j $(JOBS) $(CV) \
	  --error-table src/parasim/specs/data/expected_error.yaml \
	  --extra $(SHARED)/validation/dev-traces.yaml $(foreach f,$(PROJECT_CASES),--extra $(f))

bench: $(VENV)/.installed
	for f in benchmarks/*.py; do $(BIN)/python $$f; done

clean:
	rm -rf $(VENV) results
