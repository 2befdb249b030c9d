"""``RUN``, ``RUN@GEN``, ``RUN:BRANCH`` and ``RUN:BRANCH@GEN`` references used across the CLI."""

from __future__ import annotations

import re
from dataclasses import dataclass

_REF = re.compile(r"^(?P<run>[^:@\s]+)(?::(?P<branch>[^:@\s]+))?(?:@(?P<gen>[^:@\s]*))?$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RefError(ValueError):
    pass


@dataclass(frozen=True)
class Ref:
    run: str
    branch: str = "main"
    generation: int | None = None


def parse_ref(text: str) -> Ref:
    match = _REF.match(text or "")
    if not match:
        raise RefError(f"bad reference {text!r}: use RUN, RUN@GEN or RUN:BRANCH@GEN")
    generation = None
    if match["gen"] is not None:
        if not match["gen"].isdigit():
            raise RefError(f"bad generation in {text!r}: expected a whole number after '@'")
        generation = int(match["gen"])
    return Ref(run=match["run"], branch=match["branch"] or "main", generation=generation)


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name or ""):
        raise RefError(f"bad {kind} name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return name
