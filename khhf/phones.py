"""Phone numbers as logs and lists may show them (normalising: khhf.numbering)."""

from __future__ import annotations


def mask_phone(number: str | None) -> str:
    """A phone number fit for logs and lists: 13812345678 -> 138****5678.

    Shorter numbers keep only their last digits, so no customer number is
    ever shown whole.
    """
    if not number:
        return ""
    n = len(number)
    if n >= 11:
        return number[:3] + "*" * (n - 7) + number[-4:]
    if n >= 5:
        return "*" * (n - 4) + number[-4:]
    return "*" * (n - 2) + number[-2:]
