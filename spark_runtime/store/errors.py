"""The one exception the store raises: every message is a single line a user can act on."""

from __future__ import annotations


class StoreError(Exception):
    """Bad input or a conflicting write; nothing stored has changed when it is raised."""


def head_moved(branch_name: str) -> StoreError:
    """The error of a write made for a branch head that another session has moved since."""
    return StoreError(
        f"branch {branch_name!r} moved: another session changed its head first "
        "(a new generation or an undo); evolve again from its new head"
    )
