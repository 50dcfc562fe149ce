"""griffe extension: the Sphinx roles of the docstrings (:class:`~smolgen._core.Chunk`,
:meth:`chat`) written as the code they name (`Chunk`, `chat()`), so the Python reference shows
names, not role markup. The docstrings keep the roles, which editors and pydoc read."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(class|meth|func|data|attr|mod|exc|obj):`(~?)([^`]+)`")


def as_code(match: re.Match[str]) -> str:
    kind, short, target = match.groups()
    name = target.rsplit(".", 1)[-1] if short else target
    return f"`{name}()`" if kind in ("meth", "func") else f"`{name}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(as_code, obj.docstring.value)
