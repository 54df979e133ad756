"""The page's tests share the URL-import sources (the page has an import form)."""

from __future__ import annotations

from ..fetch.conftest import start_source  # noqa: F401  (a fixture)
