# Tasks for developers. `make test` is the README's test command.
PYTHON ?= python3
CARGO_PROFILE ?= release
# Keep in step with the `test` extra in pyproject.toml.
TEST_DEPS = "pytest>=8" "pytest-timeout>=2.3" "gguf>=0.10" "safetensors>=0.4" \
	"tiktoken>=0.7" "bpe-openai>=0.1.4" "tokenizers>=0.15" "matplotlib>=3.7" \
	"fastapi>=0.110" "uvicorn>=0.29" "openai>=1.40" "anthropic>=0.40"

.PHONY: help build dev test test-rust test-python lint fmt bench clean

help:
	@echo "build        pip install . (release extension for this CPU)"
	@echo "dev          editable install with maturin (release build) and the test extras"
	@echo "test         Rust unit tests + Python tests (installs the test extras)"
	@echo "lint         cargo fmt --check, clippy, ruff"
	@echo "fmt          format Rust and Python"
	@echo "bench        criterion micro-benchmarks + the end-to-end comparison"

build:
	$(PYTHON) -m pip install .

dev:
	$(PYTHON) -m pip install -q "maturin>=1.8,<2"
	maturin develop --release --extras test

test: test-rust test-python

test-rust:
	cargo test --profile $(CARGO_PROFILE) -p smolgen-core

test-python:
	$(PYTHON) -m pip install -q $(TEST_DEPS)
	$(PYTHON) -m pytest

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	ruff format --check python tests benches
	ruff check python tests benches
	$(PYTHON) -m mypy.stubtest smolgen._core

fmt:
	cargo fmt --all
	ruff format python tests benches
	ruff check --fix python tests benches

bench:
	cargo bench -p smolgen-core
	$(PYTHON) benches/e2e.py

clean:
	cargo clean
	rm -rf build dist .pytest_cache
