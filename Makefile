# Tasks for developers. `make test` is the README's test command.
PYTHON ?= python3
CARGO_PROFILE ?= release
# `make fuzz`: how long in all (half for each fuzzer), and which run of cases (0 is the one the
# tests replay).
FUZZ_SECONDS ?= 1800
FUZZ_SEED ?= 1

# What the installed package is built from. `pip install .` copies the Python sources too, so a
# change to any of these means the installed package is stale and `make install` runs again.
SOURCES := Cargo.toml Cargo.lock pyproject.toml README.md \
	$(shell find rust -type f \( -name '*.rs' -o -name 'Cargo.toml' \) 2>/dev/null) \
	$(shell find python -type f -not -path '*/__pycache__/*' -not -name '*.so' 2>/dev/null)
# One stamp per Python environment, so switching virtual environments installs again.
ENV_ID := $(shell $(PYTHON) -c 'import hashlib, sys; print(hashlib.sha1(sys.prefix.encode()).hexdigest()[:12])')
STAMP := build/installed-$(ENV_ID)

.PHONY: help install build dev test test-fast test-rust test-rust-fast test-python test-aarch64 lint stubtest fmt bench fuzz clean

help:
	@echo "install      pip install '.[test]' when the sources changed since the last install"
	@echo "dev          editable install with maturin (release build) and the test extras"
	@echo "test         Rust unit tests + every Python test (installs first when stale)"
	@echo "test-fast    Rust unit tests + the Python tests not marked slow (no real model)"
	@echo "test-aarch64 the core's unit tests built for AArch64 and run under qemu (the NEON kernels)"
	@echo "lint         what CI checks: formatting, clippy, rustdoc, the aarch64 build, ruff, mypy, stubtest"
	@echo "fmt          format Rust and Python"
	@echo "bench        criterion micro-benchmarks + the end-to-end comparison"
	@echo "fuzz         mutated GGUF files and safetensors directories (FUZZ_SECONDS=1800 in all, FUZZ_SEED=1)"

# The release extension for this CPU, with the test extras (the `test` extra in pyproject.toml
# is the one list of test dependencies).
$(STAMP): $(SOURCES)
	$(PYTHON) -m pip install ".[test]"
	@mkdir -p $(dir $@)
	@touch $@

install: $(STAMP)

build: install

dev:
	$(PYTHON) -m pip install -q "maturin>=1.8,<2"
	maturin develop --release --extras test
	@mkdir -p $(dir $(STAMP))
	@touch $(STAMP)

test: test-rust test-python

test-fast: test-rust-fast install
	$(PYTHON) -m pytest -m "not slow"

test-rust:
	cargo test --profile $(CARGO_PROFILE) -p smolgen-core

# The library's unit tests only (no doc tests, no benches); the real-model tests skip themselves
# when the model is not in the cache.
test-rust-fast:
	cargo test --profile $(CARGO_PROFILE) -p smolgen-core --lib

test-python: install
	$(PYTHON) -m pytest

# The NEON kernels executed, not only compiled: the core's unit tests cross-built for AArch64 and
# run under user-mode emulation (Debian: qemu-user, gcc-aarch64-linux-gnu, libc6-dev-arm64-cross).
AARCH64_SYSROOT ?= /usr/aarch64-linux-gnu
test-aarch64:
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $(AARCH64_SYSROOT)" \
	RUSTFLAGS="" cargo test --profile $(CARGO_PROFILE) --target aarch64-unknown-linux-gnu \
		-p smolgen-core --lib

# The aarch64 check runs without .cargo/config.toml's `target-cpu=native`: that names this x86 CPU.
lint:
	cargo fmt --all -- --check
	ruff format --check python tests benches
	ruff check python tests benches
	$(PYTHON) -m mypy python/smolgen
	cargo clippy --workspace --all-targets --features smolgen-core/bench -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
	RUSTFLAGS="" cargo clippy --target aarch64-unknown-linux-gnu -p smolgen-core --all-targets \
		--features bench -- -D warnings
	$(MAKE) stubtest

# The type stub matches the built extension.
stubtest: install
	$(PYTHON) -m mypy.stubtest smolgen._core

fmt:
	cargo fmt --all
	ruff format python tests benches
	ruff check --fix python tests benches

bench:
	cargo bench -p smolgen-core --features bench
	$(PYTHON) benches/e2e.py

# Failing files land in tests/regressions/ (directories in tests/regressions/safetensors/), which
# the tests replay. Both fuzzers run even when the first finds failures; either fails the target.
fuzz: install
	@status=0; \
	$(PYTHON) tests/fuzz_gguf.py --seconds $$(($(FUZZ_SECONDS) / 2)) --seed $(FUZZ_SEED) || status=1; \
	$(PYTHON) tests/fuzz_safetensors.py --seconds $$(($(FUZZ_SECONDS) / 2)) --seed $(FUZZ_SEED) \
		|| status=1; \
	exit $$status

clean:
	cargo clean
	rm -rf build dist .pytest_cache
