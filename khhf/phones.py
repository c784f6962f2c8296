"""Phone numbers: normalising what people type, masking what logs show."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s\-()]")


def normalize_mobile(raw: str) -> str | None:
    """Digits only, without the +86/0086/86 prefix; None if not a mainland mobile."""
    digits = _SEPARATORS.sub("", raw or "")
    for prefix in ("+86", "0086", "86"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            digits = digits[len(prefix):]
            break
    if re.fullmatch(r"1[3-9]\d{9}", digits):
        return digits
    return None


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
