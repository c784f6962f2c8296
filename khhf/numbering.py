"""Caller numbers as carriers present them, normalised for customer look-up.

customers.phone holds numbers normalised by `normalise`: digits only, no
country prefix; an 11-digit mobile (1[3-9]...) or a fixed line with its
area code and trunk prefix 0 (010-12345678 -> 01012345678). The hotline
normalises the caller number the same way, so a customer stored as
13812345678 is found whether the carrier sends +8613812345678,
008613812345678, 8613812345678 or 13812345678.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s\-().]")
MOBILE = re.compile(r"1[3-9]\d{9}")
# 0 + area code (2 to 3 digits after the 0, not starting 0) + 7 to 8 digits
FIXED_LINE = re.compile(r"0[1-9]\d{8,10}")


# A desk phone's extension, also its PJSIP endpoint name: four digits 2000-9999
# (1xxx would look like the start of a mobile number, 0xxx like a trunk
# prefix). The dialplan's pattern for it is rendered from DESK_EXTENSION_DIALPLAN.
DESK_EXTENSION = re.compile(r"[2-9]\d{3}")
DESK_EXTENSION_DIALPLAN = "_[2-9]XXX"


class NumberError(ValueError):
    """The number cannot be a mainland mobile or fixed line; says why."""


def normalise(number: str) -> str:
    """Digits only, without +86/0086/86: a mobile or a fixed line with area code.

    Raises NumberError for empty, withheld or foreign numbers, and for
    fixed lines without an area code (they are ambiguous across counties).
    """
    raw = number or ""
    digits = _SEPARATORS.sub("", raw)
    international = False
    if digits.startswith("+"):
        if not digits.startswith("+86"):
            raise NumberError(f"{raw!r} is not a mainland China number (+86)")
        digits, international = digits[3:], True
    elif digits.startswith("0086"):
        digits, international = digits[4:], True
    elif len(digits) == 13 and digits.startswith("86") and MOBILE.fullmatch(digits[2:]):
        digits = digits[2:]  # 86 + mobile, as some carriers present it
    if not digits:
        raise NumberError("the number is empty (caller withheld?)")
    if not digits.isdigit():
        raise NumberError(f"{raw!r} has characters other than digits")
    if MOBILE.fullmatch(digits):
        return digits
    if international and digits[0] != "0" and FIXED_LINE.fullmatch("0" + digits):
        # in international format a fixed line drops its trunk prefix 0
        return "0" + digits
    if FIXED_LINE.fullmatch(digits):
        return digits
    if digits[0] == "1":
        raise NumberError(f"{raw!r} is not an 11-digit mobile number")
    if digits[0] != "0":
        raise NumberError(f"{raw!r} is a fixed line without its area code")
    raise NumberError(f"{raw!r} is not a fixed line with area code (0 + 9 to 11 digits)")
