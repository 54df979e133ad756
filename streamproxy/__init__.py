"""streamproxy: a streaming media transfer service for chat platforms."""

from __future__ import annotations

__version__ = "0.1.0"

from .app import create_app
from .runtime.settings import Settings, load_settings

__all__ = ["Settings", "__version__", "create_app", "load_settings"]
