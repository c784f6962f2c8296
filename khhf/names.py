"""People's and customers' names: how lists of them are ordered.

Chinese names sort by their pinyin (张伟 after 王芳, as in a phone book), not
by code point; the readings come from pypinyin, a maintained dictionary of
pinyin for every Han character and common phrase. Latin letters and digits
keep their own spelling, lower-cased, so mixed lists still read naturally.

The lists sorted today are bounded (a county's managers, the counties, a
manager's customers), so they are sorted in Python with `by_pinyin`. A list
that is paginated in the database (customers of a province, say) would
store `pinyin_key` in a column, written by the same function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from pypinyin import Style, lazy_pinyin

T = TypeVar("T")


def pinyin_key(name: str | None) -> tuple[tuple[str, ...], str]:
    """A sort key: the name's pinyin syllables with tone numbers
    ('zhang1', 'wei3'), then the name itself to break ties between
    homophones deterministically."""
    name = (name or "").strip()
    syllables = lazy_pinyin(name, style=Style.TONE3, neutral_tone_with_five=True)
    return tuple(s.strip().lower() for s in syllables if s.strip()), name


def by_pinyin(items: Iterable[T], name: Callable[[T], str | None]) -> list[T]:
    """`items` sorted by the pinyin of `name(item)`."""
    return sorted(items, key=lambda item: pinyin_key(name(item)))


def by_manager_name(managers: Iterable) -> list:
    """Customer managers as lists show them: active ones first, each group
    by the pinyin of the person's name."""
    return sorted(by_pinyin(managers, lambda m: m.user.display_name),
                  key=lambda m: m.status != "active")
