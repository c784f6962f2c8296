"""Phone numbers as logs and lists may show them (normalising: khhf.numbering)."""

from __future__ import annotations

import re

from khhf.numbering import CUSTOMER_NUMBER

# a customer's number inside free text (a log line): with an optional
# country prefix, not part of a longer run of digits
_NUMBER_IN_TEXT = re.compile(rf"(?<![0-9])(?:\+?86)?(?:{CUSTOMER_NUMBER.pattern})(?![0-9])")


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


def mask_numbers(text: str) -> str:
    """`text` with every mobile or fixed-line number in it masked as
    mask_phone does: the last guard on each log line."""
    return _NUMBER_IN_TEXT.sub(lambda m: mask_phone(m.group(0)), text)
