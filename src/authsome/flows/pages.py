"""The few HTML pages the loopback server shows, rendered from ``*.html`` templates next to this module."""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template


@cache
def _template(name: str) -> Template:
    return Template(resources.files(__package__ or "authsome.flows").joinpath(name).read_text(encoding="utf-8"))


def render(name: str, **values: str) -> str:
    """Fill template ``name`` with HTML-escaped ``values``; a value whose key ends in ``_html`` is inserted as is."""
    escaped = {k.removesuffix("_html"): v if k.endswith("_html") else html.escape(v) for k, v in values.items()}
    return _template(name).substitute(escaped)


def done_page(title: str, message: str) -> str:
    """The page shown after the one shot was used (success or failure)."""
    return render("done.html", title=title, message=message)
