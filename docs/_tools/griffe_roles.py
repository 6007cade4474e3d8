"""A griffe extension: the docstrings' Sphinx roles as Markdown for the API reference.

The docstrings use reStructuredText roles (``:class:`~strict_singleton.errors.ScheduleError```)
so that they read well in an editor and in ``help()``. mkdocstrings renders Markdown, where a
role would show as literal text. A role whose target is a fully qualified public name
(``strict_singleton.`` with no part starting with an underscore) becomes a cross-reference,
which must resolve: in strict mode a missing one fails the build. Any other role (a name
relative to its module, a private one, the standard library's) becomes a code span.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|exc|data|mod|obj|const):`(~?)([^`]+)`")


def _markdown(match: re.Match[str]) -> str:
    short, target = match.group(1) == "~", match.group(2).strip()
    shown = target.rsplit(".", 1)[-1] if short else target
    parts = target.split(".")
    if parts[0] == "strict_singleton" and not any(part.startswith("_") for part in parts):
        return f"[`{shown}`][{target}]"
    return f"`{shown}`"


def roles_to_markdown(text: str) -> str:
    """Every Sphinx role in ``text`` as Markdown (a cross-reference or a code span)."""
    return _ROLE.sub(_markdown, text)


class SphinxRoles(griffe.Extension):
    """Rewrites each loaded object's docstring once, before mkdocstrings renders it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = roles_to_markdown(obj.docstring.value)
