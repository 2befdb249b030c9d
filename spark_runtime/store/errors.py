"""The one exception the store raises: every message is a single line a user can act on."""

from __future__ import annotations


class StoreError(Exception):
    """Bad input or a conflicting write; nothing stored has changed when it is raised."""
