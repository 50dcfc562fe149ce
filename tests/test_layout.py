"""The package's layout holds: the engine side never imports the lab."""

from __future__ import annotations

import subprocess
import sys


def test_the_engine_side_imports_nothing_from_the_lab():
    code = (
        "import sys, smolgen, smolgen.chat, smolgen.peek, smolgen.hub, smolgen.bench, "
        "smolgen.sampling, smolgen.errors\n"
        "try:\n"
        "    import smolgen.server.app\n"
        "except ImportError:\n"
        "    pass  # the serve extra is not installed\n"
        "print(sorted(m for m in sys.modules if m.startswith('smolgen.lab')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
