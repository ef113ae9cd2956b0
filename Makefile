# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv if missing, install, train the `quick` preset (the main job)
#   make test   create .venv if missing, install, lint (ruff + mypy), run the test suite (offline, minutes on 2 cores)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
RUN    ?= runs/quick-$(shell date +%Y%m%d-%H%M%S)

N      ?= 5

.PHONY: demo test lint test-slow test-all test-repeat test-avx2 data bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST from Debian's package where we are root on Debian; elsewhere the demo downloads it.
data:
	@if [ ! -d $(FMNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } || \
	  echo "note: could not install dataset-fashion-mnist; make demo downloads Fashion-MNIST instead (make test-slow then finds it)"; \
	fi

# --download fetches Fashion-MNIST (checksummed, into ~/.cache/alexnet) only where it is found nowhere
# ($ALEXNET_DATA, the cache, $(FMNIST)); a failed download says in one line how to get the files instead.
demo: $(STAMP) data
	$(BIN)/alexnet train --preset quick --download --out $(RUN)

lint: $(STAMP)
	$(BIN)/ruff check alexnet tests benchmarks
	$(BIN)/mypy

test: lint data
	$(BIN)/python -m pytest -q

test-slow: $(STAMP) data
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP) data
	$(BIN)/python -m pytest -q -m ''

# The timing-sensitive tests (torchrun ranks, signals, kills, resumes) N times in a row; stops at the first failure.
test-repeat: $(STAMP) data
	@for i in $$(seq $(N)); do echo "== round $$i of $(N)"; \
	  $(BIN)/python -m pytest -q -m 'distributed or timing' -p no:cacheprovider || exit 1; done

# The default suite on the kernels an AVX2-only CPU runs (ATen's AVX2 code paths, oneDNN capped at AVX2: no
# AVX512, no bf16 units), from any x86 CPU: CI must be green on every CPU a session may get.
test-avx2: $(STAMP) data
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP) data
	$(BIN)/alexnet bench --model d2l --batch-size 32 --steps 5 --warmup 2 --baseline

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
