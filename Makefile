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

.PHONY: help install build dev test test-fast test-rust test-rust-fast test-python test-aarch64 wheel test-wheel docs lint stubtest fmt bench fuzz clean

help:
	@echo "install      pip install '.[test]' when the sources changed since the last install"
	@echo "dev          editable install with maturin (release build) and the test extras"
	@echo "test         Rust unit tests + every Python test (installs first when stale)"
	@echo "test-fast    Rust unit tests + the Python tests not marked slow (no real model)"
	@echo "test-aarch64 the core's unit tests built for AArch64 and run under qemu (the NEON kernels)"
	@echo "wheel        a portable manylinux2014 wheel in dist/ (WHEEL_ARCH=x86_64 or aarch64)"
	@echo "test-wheel   that wheel in a fresh venv with no cargo or C compiler on PATH: first command + tests"
	@echo "docs         the documentation site in build/site, warnings as errors (its code runs in make test)"
	@echo "lint         what CI checks: formatting, clippy (x86-64 and aarch64), rustdoc, ruff, mypy, stubtest"
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

# A wheel for other machines: abi3 (one file for every Python >= 3.10), linked by zig against
# glibc 2.17 (manylinux2014), for the architecture's baseline CPU. The kernels pick AVX-512, AVX2
# or NEON at run time, so it is as fast as a native build; only candle's CPU kernels (the IQ
# types) lose their compile-time SIMD. It builds in its own target directory, so switching
# between it and `make install` recompiles nothing.
WHEEL_ARCH ?= x86_64
WHEEL_TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)/wheel
WHEEL_VENV ?= build/wheel-venv
PORTABLE_CPU_x86_64 := x86-64
PORTABLE_CPU_aarch64 := generic
wheel:
	$(PYTHON) -m pip install -q "maturin>=1.8,<2" "ziglang>=0.13" auditwheel
	rm -f dist/smolgen-*-manylinux*_$(WHEEL_ARCH).whl
	CARGO_TARGET_DIR=$(WHEEL_TARGET_DIR) RUSTFLAGS="-C target-cpu=$(PORTABLE_CPU_$(WHEEL_ARCH))" \
		maturin build --release --zig --compatibility manylinux2014 \
		--target $(WHEEL_ARCH)-unknown-linux-gnu --out dist
	$(PYTHON) -m auditwheel show dist/smolgen-*-manylinux*_$(WHEEL_ARCH).whl
	@ls -l dist/smolgen-*-manylinux*_$(WHEEL_ARCH).whl

# The x86_64 wheel as a user gets it: a fresh virtual environment, the wheel and its test extras
# from the index, and a PATH on which no cargo, rustc or C compiler can be found (the system's
# tools minus the compilers). Then the README's first command and the Python tests.
test-wheel:
	rm -rf $(WHEEL_VENV) build/no-compiler-bin
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q --only-binary smolgen \
		"$$(ls dist/smolgen-*-manylinux*_x86_64.whl)[test]"
	mkdir -p build/no-compiler-bin
	for tool in /usr/bin/* /bin/*; do \
		case "$${tool##*/}" in \
			cc|c++|c89|c99|cpp|gcc*|g++*|clang*|*-gcc*|*-g++*|ld|ld.*|as|cargo*|rustc*|rustup) ;; \
			*) ln -sf "$$tool" build/no-compiler-bin/ ;; \
		esac; \
	done
	PATH="$(abspath $(WHEEL_VENV))/bin:$(abspath build/no-compiler-bin)" sh -c '\
		for tool in cargo rustc cc gcc clang; do \
			if command -v $$tool >/dev/null; then echo "$$tool is on PATH" >&2; exit 1; fi; \
		done; \
		smolgen generate "Once upon a time" --max-tokens 24 --temperature 0.7 --seed 1 \
		&& python -m pytest -p no:cacheprovider'

# The site's tools are in docs/requirements.txt. The command-line reference is written from the
# installed package's parsers; the Python reference is read from the sources.
docs: install
	$(PYTHON) -m pip install -q -r docs/requirements.txt
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict

# The aarch64 lint runs without .cargo/config.toml's `target-cpu=native`: that names this x86 CPU.
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
