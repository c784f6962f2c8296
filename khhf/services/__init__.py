"""Domain services: the writes that the web UI, AGI and imports share.

A service validates everything first and raises ValidationError listing
every problem, before it adds anything to the session: so a refused
request leaves nothing half-written. It records its own audit entries;
the caller commits.

Messages are English msgids marked with N_ and translated by the UI's
catalog (Simplified Chinese by default); each says what is wrong and
what to do.
"""

from __future__ import annotations

import dataclasses
from typing import NoReturn, TypeVar

T = TypeVar("T")

MAX_ID = 2**63 - 1  # the largest integer SQLite and PostgreSQL's BIGINT hold


def parse_int(value, default=None):
    """A whole number from a form, or `default`; a number no database column
    could hold counts as no number."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return default
    return number if -MAX_ID <= number <= MAX_ID else default


def N_(message: str) -> str:
    """Mark a message for the translation catalog without translating it here."""
    return message


@dataclasses.dataclass(frozen=True)
class Problem:
    field: str
    message: str
    params: dict = dataclasses.field(default_factory=dict)


class ValidationError(ValueError):
    """Input was refused; `problems` says which field and why."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(p.message % p.params for p in self.problems))


class Problems:
    """Collects problems so a form shows all of them at once."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, field: str, message: str, **params) -> None:
        self.items.append(Problem(field, message, params))

    def __contains__(self, field: str) -> bool:
        return any(p.field == field for p in self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ValidationError(self.items)

    def refuse(self, field: str, message: str, **params) -> NoReturn:
        """Add this problem and raise all collected so far: for a refusal no
        later check can run without (no such task, not yours)."""
        self.add(field, message, **params)
        raise ValidationError(self.items)


def validated(value: T | None, what: str) -> T:
    """`value`, which the checks before raise_if_any refused to let be
    missing: None here is a bug in those checks, not bad input."""
    if value is None:
        raise RuntimeError(f"{what} is missing after its checks passed")
    return value
