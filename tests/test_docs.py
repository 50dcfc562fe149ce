"""Every Python block of the documentation site runs, page by page in one namespace, against
the real model: a page whose code no longer works fails here."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_the_site_has_pages_with_code():
    assert sum(bool(BLOCK.findall(p.read_text(encoding="utf-8"))) for p in PAGES) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_the_page_runs(page, smollm2_gguf, monkeypatch, tmp_path, capsys):
    blocks = BLOCK.findall(page.read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip("no Python on this page")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs.{page.stem}"}
    try:
        for number, code in enumerate(blocks, start=1):
            try:
                exec(compile(code, f"{page.relative_to(DOCS)} block {number}", "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"{page.name}, block {number}:\n{code}") from e
    finally:
        # A page that starts a server stops it in its last block; not when a block failed.
        for value in namespace.values():
            if isinstance(value, subprocess.Popen) and value.poll() is None:
                value.kill()
                value.wait()
    assert capsys.readouterr().out  # each page shows something
