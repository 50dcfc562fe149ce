"""Shared fixtures: the real model (pulled once into the cache), the llama.cpp test vectors, a
tiny random Llama written by the tests in every format smolgen reads, and the server with the
official clients pointed at it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import smolgen

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# The fuzzers' tests assert inside the shared driver; show those failures as pytest shows its own.
pytest.register_assert_rewrite("fuzz_driver")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tokenize_vectors() -> list[dict]:
    return json.loads((FIXTURES / "smollm2_tokenize.json").read_text())["cases"]


@pytest.fixture(scope="session")
def greedy_vectors() -> list[dict]:
    return json.loads((FIXTURES / "smollm2_greedy.json").read_text())["cases"]


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF, from the cache (pulled on first use)."""
    return smolgen.pull(smolgen.DEFAULT_MODEL, progress=False)


# The device the real-model tests run on: `SMOLGEN_TEST_DEVICE=cuda pytest` runs them on a GPU
# build (`--features cuda`), where `test_accelerator.py` also holds it to the CPU engine.
TEST_DEVICE = os.environ.get("SMOLGEN_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf: Path) -> smolgen.Model:
    return smolgen.load(smollm2_gguf, device=TEST_DEVICE)


# `smolgen serve` on the real model, for the modules that test it through the official clients:
# one server per module (`test_server.Server`), which must not log a traceback.
@pytest.fixture(scope="module")
def server(smollm2_gguf: Path):
    from test_server import Server

    s = Server(smollm2_gguf, "--max-concurrent", "4", "--max-queue", "8")
    yield s
    log = s.stop()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def client(server):
    from test_server import KEY

    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def claude(server):
    from test_server import KEY

    anthropic = pytest.importorskip("anthropic")
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def tiny_weights():
    import tiny_llama

    return tiny_llama.random_weights(seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_weights) -> Path:
    import tiny_llama

    return tiny_llama.write_hf_dir(tmp_path_factory.mktemp("tiny-hf"), tiny_weights, shards=2)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_weights) -> Path:
    import tiny_llama

    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny-f32.gguf"
    return tiny_llama.write_gguf(path, tiny_weights, qtype="F32")


REAL_MODEL_FIXTURES = {"smollm2", "smollm2_gguf"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the real model is slow, marked or not, so `-m "not slow"` never loads it."""
    for item in items:
        if REAL_MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
