"""A manager's SMS reply to a result prompt, parsed: pure functions, no
database, no clock (the caller passes "now").

The forms a reply may take (what the prompt and the help SMS teach):

    1                 result code 1
    6 1201 1430       code 6, call back on 1 December at 14:30 (local time)
    6 1430            code 6, call back at 14:30 today (tomorrow if past)
    6 12011430        the same as `6 1201 1430`, written together
    1 #12             code 1 for the prompt with reference #12 (needed when
    #12 1             several prompts are open); the reference may stand
    6 1201 1430 #12   anywhere, always written with '#' before its digits

- the result code is 1 or 2 digits (the codes of the task's type);
- the call-back time follows the code: MMDD HHMM, MMDDHHMM or HHMM, and
  its pieces may also be separated (`6 12-01 14:30`, `6 12月1日 14点30`):
  then a 1-digit piece counts as 2 (`9` = `09`) and a 3-digit one as 4
  (`930` = `0930`); what is left must be 4 digits (HHMM) or 8 (MMDDHHMM);
- full-width digits and signs (１２＃), spaces, and the separators
  , ， 、 . 。 ; ； : ： + - / 月 日 号 点 时 分 are all fine, anywhere;
- words after all that are a note filed with the result (`1 客户很满意`,
  `1回访成功` echoing the menu); a reply that starts with words, or has
  two references, a misplaced '#', a code of 3 digits or a time that is
  no time, is unclear: `parse` raises `Unclear`, and the sender gets the
  help SMS.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import re
import unicodedata

# what may separate the parts of a reply (after NFKC: full-width is ASCII)
SEPARATORS = " \t\r\n,、.。;:+-/月日号點点时時分"
_TOKEN = re.compile(r"#?\d+")
# the structured part: digits, references and separators, from the start
_STRUCTURED = re.compile(r"(?:#?\d+|[" + re.escape(SEPARATORS) + "])*")
MAX_REF_DIGITS = 4


class Unclear(ValueError):
    """The text is not a reply in any of the forms above."""


@dataclasses.dataclass(frozen=True)
class CallBack:
    """A call-back time as written: month and day may be absent (today)."""
    hour: int
    minute: int
    month: int | None = None
    day: int | None = None


@dataclasses.dataclass(frozen=True)
class Reply:
    code: str                      # the result code as digits, e.g. "1", "12"
    ref: str | None = None         # the prompt's reference, digits without '#'
    call_back: CallBack | None = None
    note: str = ""                 # words after the structured part, if any


def normalize(text: str) -> str:
    """Full-width forms to ASCII (NFKC); nothing else."""
    return unicodedata.normalize("NFKC", text or "")


def parse(text: str) -> Reply:
    """The reply in `text`, or raise Unclear (its message says why, in English)."""
    norm = normalize(text)
    # the pattern matches the empty string too: there is always a match
    match = _STRUCTURED.match(norm)
    structured = match.group() if match else ""
    note = norm[len(structured):].strip()
    if note.startswith("#"):
        raise Unclear("'#' must be followed by the reference's digits")
    tokens = _TOKEN.findall(structured)
    refs = [t[1:] for t in tokens if t.startswith("#")]
    rest = [t for t in tokens if not t.startswith("#")]
    if len(refs) > 1:
        raise Unclear("more than one reference")
    ref = (refs[0].lstrip("0") or "0") if refs else None
    if ref is not None and len(ref) > MAX_REF_DIGITS:
        raise Unclear("the reference is too long")
    if not rest:
        raise Unclear("no result code")
    code, pieces = rest[0], rest[1:]
    if len(code) > 2:
        raise Unclear("the result code is 1 or 2 digits")
    return Reply(code=code, ref=ref, call_back=_call_back(pieces) if pieces else None,
                 note=note)


def _call_back(pieces: list[str]) -> CallBack:
    digits = "".join("0" + p if len(p) in (1, 3) else p for p in pieces)
    if len(digits) == 4:
        month = day = None
        hour, minute = int(digits[:2]), int(digits[2:])
    elif len(digits) == 8:
        month, day = int(digits[:2]), int(digits[2:4])
        hour, minute = int(digits[4:6]), int(digits[6:])
        # 29 February is a real date some years: checked when resolved
        if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(2024, month)[1]:
            raise Unclear("no such date")
    else:
        raise Unclear("the call-back time is MMDD HHMM or HHMM")
    if hour > 23 or minute > 59:
        raise Unclear("no such time of day")
    return CallBack(hour=hour, minute=minute, month=month, day=day)


def resolve(call_back: CallBack, now_local: dt.datetime) -> dt.datetime:
    """The call-back moment (naive, local wall-clock) of `call_back`: the
    first one after `now_local` (today or tomorrow for HHMM; this year or
    the next for MMDD HHMM, skipping years without 29 February)."""
    now_local = now_local.replace(tzinfo=None, second=0, microsecond=0)
    if call_back.month is None or call_back.day is None:  # HHMM: both or neither
        at = now_local.replace(hour=call_back.hour, minute=call_back.minute)
        return at if at > now_local else at + dt.timedelta(days=1)
    for year in range(now_local.year, now_local.year + 9):
        try:
            at = dt.datetime(year, call_back.month, call_back.day, call_back.hour,
                             call_back.minute)
        except ValueError:  # 29 February in a common year
            continue
        if at > now_local:
            return at
    raise Unclear("no such date")  # unreachable: a leap year comes within 8 years
