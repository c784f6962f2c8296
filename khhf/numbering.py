"""Phone numbers as carriers present them, normalised: the one home of the
number rules.

customers.phone holds numbers normalised by `normalise`: ASCII digits only,
no country prefix; an 11-digit mobile (1[3-9]...) or a fixed line with its
area code and trunk prefix 0 (010-12345678 -> 01012345678). The hotline
normalises the caller id the same way, once, before any look-up or insert,
so a customer stored as 13812345678 is found whatever form the carrier
delivers:

    13812345678            the plain mobile
    013812345678           the mobile with the national trunk prefix 0
    +8613812345678, 8613812345678, 008613812345678   international forms
    tel:+86-138-1234-5678;phone-context=...          a tel: URI (RFC 3966)
    sip:+8613812345678@carrier;user=phone            a SIP URI's user part
    138 1234 5678, 138-1234-5678, 138.1234.5678, (0571)87654321  separators
    0571-87654321, +86 571 8765 4321                 fixed lines with area code

A fixed line without its area code (87654321) is ambiguous across counties:
it is refused unless the caller passes the area code the number belongs to
(`area_code=`). Everything else is refused with a NumberError saying why.

Every number enters the system through one of these functions, once, at the
door: `normalise` for a customer's number (imports, forms, the hotline's
caller id), `mobile` for a manager's mobile and an SMS's sender (the SMSC's
source address in any of the forms above), `unified_number` for a county's
unified number (the county form, and so every later dial). What is stored
is the normalised form, so comparisons are plain equality.

The same rules give the dialplan its extension patterns (`dialplan_tokens`,
rendered into asterisk/ by pbxctl.pbx) and the originate path its checks
(`CUSTOMER_NUMBER`, `UNIFIED_NUMBER`), so they cannot drift apart.
"""

from __future__ import annotations

import re

# A mobile: 1, then 3-9, then 9 digits. A fixed line: the trunk prefix 0,
# an area code (010 and 02X are two digits, the rest three: 0[3-9]XX) and a
# 7- or 8-digit line (8 after a two-digit code). Written as (prefix, length)
# rules so the regular expressions and the dialplan patterns come from the
# same facts.
MOBILE_RULES = (("1[3-9]", 11),)
FIXED_LINE_RULES = (("010", 11), ("02", 11), ("0[3-9]", 11), ("0[3-9]", 12))


def _prefix_length(prefix: str) -> int:
    return len(re.sub(r"\[[^\]]*\]", "X", prefix))


def _regex(rules) -> re.Pattern:
    return re.compile("|".join(f"{prefix}[0-9]{{{length - _prefix_length(prefix)}}}"
                               for prefix, length in rules))


def _dialplan(rules) -> tuple[str, ...]:
    return tuple(f"_{prefix}{'X' * (length - _prefix_length(prefix))}" for prefix, length in rules)


MOBILE = _regex(MOBILE_RULES)
FIXED_LINE = _regex(FIXED_LINE_RULES)
# what a customer's number may be: what the system dials out to
CUSTOMER_NUMBER = _regex(MOBILE_RULES + FIXED_LINE_RULES)
# a county's unified number (统一号码) is a mobile-format 11-digit number:
# what the trunk's context matches ({{UNIFIED_EXTEN}}) and Originate shows
UNIFIED_NUMBER = MOBILE
# a local fixed line as dialled inside its area: 7 or 8 digits, not 0/1 first
LOCAL_LINE = re.compile(r"[2-9][0-9]{6,7}")
AREA_CODE = re.compile(r"010|02[0-9]|0[3-9][0-9]{2}")
# service numbers no customer calls from (400/800 hotlines, 95xxx, 10xxx, 12xxx)
SERVICE_NUMBER = re.compile(r"(?:400|800)[0-9]{7}|95[0-9]{3,6}|10[0-9]{3,5}|1[0-2][0-9]{3}")

# longest input considered at all: longer is garbage, refused before any work
MAX_INPUT = 128
_SEPARATORS = re.compile(r"[\s\-().\u00a0\u3000]")
_WITHHELD = {"anonymous", "unknown", "restricted", "private", "unavailable", "withheld"}


# A desk phone's extension, also its PJSIP endpoint name: four digits 2000-9999
# (1xxx would look like the start of a mobile number, 0xxx like a trunk
# prefix). The dialplan's pattern for it is rendered from DESK_EXTENSION_DIALPLAN.
DESK_EXTENSION = re.compile(r"[2-9]\d{3}")
DESK_EXTENSION_DIALPLAN = "_[2-9]XXX"


class NumberError(ValueError):
    """The number cannot be a mainland mobile or fixed line; says why."""


def _uri_user(raw: str) -> str:
    """The number inside a tel: or sip: URI (or a name-addr around one)."""
    text = raw.strip()
    if "<" in text and text.endswith(">"):   # "Name" <sip:...>
        text = text[text.rindex("<") + 1:-1].strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() not in ("tel", "sip", "sips"):
        return text
    if scheme.lower() == "tel":
        return rest.split(";", 1)[0]          # tel:+86-10-1234-5678;phone-context=...
    user, at, _host = rest.partition("@")
    if not at:
        raise NumberError(f"{raw!r} is a SIP URI without a user part")
    return user.split(";", 1)[0]             # sip:+8613812345678;npdi@host


def normalise(number: str | None, *, area_code: str | None = None) -> str:
    """ASCII digits, without +86/0086/86 or a mobile's trunk 0: a mobile
    (11 digits) or a fixed line with its area code (11 or 12 digits).

    `area_code` ("0571") completes a local fixed line that arrives without
    one; without it such a number is refused (it is ambiguous). Raises
    NumberError, and only NumberError, for anything else: empty, withheld,
    foreign, service numbers, wrong lengths, other characters.
    """
    raw = "" if number is None else str(number)
    if len(raw) > MAX_INPUT:
        raise NumberError(f"{raw[:20]!r}... is too long to be a phone number")
    if raw.strip().lower() in _WITHHELD:
        raise NumberError("the number is withheld")
    digits = _SEPARATORS.sub("", _uri_user(raw))
    international = False
    if digits.startswith("+"):
        if not digits.startswith("+86"):
            raise NumberError(f"{raw!r} is not a mainland China number (+86)")
        digits, international = digits[3:], True
    elif digits.startswith("0086"):
        digits, international = digits[4:], True
    elif digits.startswith("86") and len(digits) >= 12:
        # 86 + a national number, as some carriers present it: no local or
        # national number is 12 digits and starts 86, so this is unambiguous
        digits, international = digits[2:], True
    if not digits:
        raise NumberError("the number is empty (caller withheld?)")
    if not re.fullmatch(r"[0-9]+", digits):
        raise NumberError(f"{raw!r} has characters other than digits")
    if international and digits[0] != "0":
        digits = "0" + digits if not MOBILE.fullmatch(digits) else digits
    if digits.startswith("01") and MOBILE.fullmatch(digits[1:]):
        return digits[1:]                    # the national trunk prefix on a mobile
    if MOBILE.fullmatch(digits) or FIXED_LINE.fullmatch(digits):
        return digits
    if SERVICE_NUMBER.fullmatch(digits):
        raise NumberError(f"{raw!r} is a service number, not a customer's line")
    if LOCAL_LINE.fullmatch(digits):
        if area_code and AREA_CODE.fullmatch(area_code) \
                and FIXED_LINE.fullmatch(area_code + digits):
            return area_code + digits
        raise NumberError(f"{raw!r} is a fixed line without its area code")
    if digits[0] == "1":
        raise NumberError(f"{raw!r} is not an 11-digit mobile number")
    if digits[0] == "0":
        raise NumberError(f"{raw!r} is not a fixed line with area code (0 + area code + line: 11 or 12 digits)")
    raise NumberError(f"{raw!r} is neither a mobile nor a fixed line with area code")


def mobile(number: str | None) -> str:
    """A mobile number in any form `normalise` reads (+86..., 0086...,
    spaces, dashes, a SIP URI), as stored: 11 digits, 1[3-9]... Raises
    NumberError for anything else, fixed lines included."""
    digits = normalise(number)
    if not MOBILE.fullmatch(digits):
        raise NumberError(f"{number!r} is a fixed line, not a mobile number")
    return digits


def unified_number(number: str | None) -> str:
    """A county's unified number as typed, as stored: the only numbers the
    trunk's dialplan answers and Originate shows (UNIFIED_NUMBER). Raises
    NumberError for anything else."""
    try:
        digits = normalise(number)
    except NumberError as exc:
        raise NumberError(f"{number!r} is not a unified number: {exc}") from None
    if not UNIFIED_NUMBER.fullmatch(digits):
        raise NumberError(f"{number!r} is not a unified number: it must be 11 digits "
                          f"starting 13 to 19")
    return digits


def dialplan_tokens() -> dict[str, object]:
    """The extension patterns the dialplan matches numbers with, as
    pbxctl.pbx renders them ({{MOBILE_EXTEN}}; a tuple repeats the line)."""
    return {
        "UNIFIED_EXTEN": _dialplan(MOBILE_RULES)[0],
        "CUSTOMER_EXTEN": _dialplan(MOBILE_RULES + FIXED_LINE_RULES),
    }
