# Two commands matter: `make run` and `make test`. Each creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared

.PHONY: run test validation bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# After installing, one tiny run with PARASIM_FASTPATH=1 compiles the serving loop's numba kernel
# (serving/fastloop.py; about 10 s of CPU, once) into its cache, so a user's first run of 500,000+
# requests does not pay it (docs/serving.md, "Speed").
WARM_KERNEL := PARASIM_FASTPATH=1 $(BIN)/parasim serve --model llama-3-8b --gpu h100-sxm --scheduler sarathi \
	--requests 20 --rate 1 > /dev/null

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(WARM_KERNEL)
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(WARM_KERNEL)
	touch $(VENV)/.installed $@

# The main question on a default: the best serving plan and the best training layout (a search each,
# seconds), then each winner simulated in full, with an HTML report and a Perfetto timeline in results/.
PLAN_SERVE := --model llama-3-8b --gpu h100-sxm --max-gpus 8 --rate 20 --prompt-tokens 1000 --output-tokens 250 \
	--length-dist lognormal --slo-ttft 1 --slo-tpot 0.05
PLAN_TRAIN := --model llama-3-70b --gpu h100-sxm --gpus 64 --global-batch-tokens 1000000 --seq-len 8192

run: $(VENV)/.installed
	@mkdir -p results
	$(BIN)/parasim plan serve $(PLAN_SERVE) --emit-yaml results/plan-serve.yaml --json-out results/plan-serve.json --report results/plan-serve.html
	$(BIN)/parasim serve -c results/plan-serve.yaml --json-out results/serve.json --report results/serve.html --timeline results/serve-timeline.json
	$(BIN)/parasim plan train $(PLAN_TRAIN) --emit-yaml results/plan-train.yaml --report results/plan-train.html
	$(BIN)/parasim train -c results/plan-train.yaml --json-out results/train.json --report results/train.html --timeline results/train-timeline.json
	@echo "wrote in results/: plan-serve.html, serve.html and serve-timeline.json (the serving winner); plan-train.html, train.html and train-timeline.json (the training winner)"
	@echo "open the .html files in a browser; load the *-timeline.json files in https://ui.perfetto.dev or chrome://tracing (docs/report.md)"

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n 2

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# calibration out of sample (docs/calibration.md): 5 folds per file and the 3-run check. Each factor
# costs one more run per case, so serving fits three (GEMM and memory-bound efficiency: most of an iteration;
# and communication, stepped only on multi-GPU runs: the TP all-reduce over PCIe is what an L40S table
# leaves, docs/calibration.md) and training, cheap to run, all four: about 5-6x a plain validation.
CV ?= --cv 5 --cv-factors gemm_efficiency,memory_efficiency,comm_efficiency,training:attention_efficiency
PROJECT_CASES := validation/trtllm-0.9-static-batch.yaml $(foreach v,0.10 0.11 0.12 0.13 0.14 0.15 0.17 1.0,validation/trtllm-$(v)-perf-overview.yaml) \
	validation/apex-vllm-0.6-traces.yaml validation/vllm-v1-published.yaml \
	validation/vllm-v1-h100-threads.yaml validation/sglang-published.yaml validation/oracle-mi300x-405b-latency.yaml \
	validation/trtllm-deepseek-r1-adp.yaml validation/trtllm-1.0-moe-perf-overview.yaml validation/trtllm-1.2-perf-overview.yaml validation/llama3-405b-training.yaml validation/llmfoundry-mpt-training.yaml \
	validation/torchtitan-training.yaml validation/bloom-176b-training.yaml \
	validation/memory-published.yaml validation/moe-training-published.yaml \
	validation/kempnerforge-h200-training.yaml validation/mbridge-dense-training.yaml validation/amd-primus-training.yaml \
	validation/gaudi-optimum-habana-fp8.yaml \
	validation/sglang-gpt-oss-h100.yaml validation/vllm-recipes-deepseek-v32-h20.yaml \
	validation/amd-blog-mi300x-latency.yaml validation/vllm-v1-recent-nvidia.yaml \
	validation/nim-llama33-70b-h100.yaml validation/lmdeploy-0.1-a100-static.yaml \
	validation/sglang-0.4-h200-datacrunch.yaml validation/gpustack-vllm-moe.yaml validation/gpustack-sglang-moe.yaml \
	validation/gpustack-vllm-dense.yaml validation/dgxc-benchmarking-training.yaml \
	validation/nemo-perf-summary-training.yaml validation/gpustack-more-serving.yaml \
	validation/lmdeploy-0.2-a100-static.yaml validation/sglang-0.4-deepseek-v3-h200.yaml validation/blis-vllm-online.yaml validation/blis-vllm-heldout.yaml \
	validation/maxtext-llama2-h100-training.yaml validation/paxml-gpt-training.yaml validation/flagperf-training.yaml validation/mlperf-training-llm.yaml \
	validation/mlperf-inference-llm.yaml

validation: $(VENV)/.installed
	$(BIN)/parasim validate $(SHARED)/validation/dev.yaml --markdown docs/VALIDATION.md -j $(JOBS) $(CV) \
	  --error-table src/parasim/specs/data/expected_error.yaml \
	  --extra $(SHARED)/validation/dev-traces.yaml $(foreach f,$(PROJECT_CASES),--extra $(f))

bench: $(VENV)/.installed
	for f in benchmarks/*.py; do $(BIN)/python $$f; done

clean:
	rm -rf $(VENV) results
