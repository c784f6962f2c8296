"""What a request may carry: ids in paths and query parameters, bounded.

Numbers in URLs end up in SQL and in date arithmetic. SQLite's integers
are 64-bit (a larger Python int raises OverflowError), and Python's dates
stop at years 1 and 9999 (a time-zone shift past either raises
OverflowError). So:

- every `<int:...>` part of every route is an id from 1 to 2**63 - 1
  (IdConverter replaces Werkzeug's int converter): anything else is a 404;
- a view that reads query parameters declares them with `@query(...)`:
  each is parsed and bounded here, and a bad one is a 400 that says which
  parameter is wrong and what it should be. The declarations are on the
  view (`view.query_params`), so tests/test_web_bounds.py tries every one.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import functools
import re

from flask import request
from flask_babel import gettext
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

MAX_ID = 2**63 - 1  # the largest integer SQLite and PostgreSQL's BIGINT hold
_WHOLE = re.compile(r"-?[0-9]{1,20}")


class IdConverter(IntegerConverter):
    """`<int:name>` in every route: a database id, 1 to MAX_ID; else 404."""

    def __init__(self, map, fixed_digits=0, min=None, max=None, signed=False):
        low = 1 if min is None else builtins.max(min, 1)
        high = MAX_ID if max is None else builtins.min(max, MAX_ID)
        super().__init__(map, fixed_digits=fixed_digits, min=low, max=high)


def init_app(app) -> None:
    """Install IdConverter as the `int` converter: call before any route is added."""
    app.url_map.converters["int"] = IdConverter


class BadParameter(BadRequest):
    """A query parameter is wrong; `description` says which and how (translated)."""


@dataclasses.dataclass(frozen=True)
class Whole:
    """A whole number from `low` to `high`; `default` when absent or empty."""
    label: str
    low: int
    high: int
    default: int | None = None

    def parse(self, raw: str):
        # ASCII digits only: int() would also take "1_000" and "٣"; and at
        # most 20 of them, so a 5,000-digit number is not even converted
        value = int(raw) if _WHOLE.fullmatch(raw) else None
        if value is None or not self.low <= value <= self.high:
            raise BadParameter(gettext(
                "%(name)s must be a whole number from %(low)d to %(high)d; got “%(value)s”.",
                name=self.label, low=self.low, high=self.high, value=_shown(raw)))
        return value


@dataclasses.dataclass(frozen=True)
class Day:
    """A calendar day, YYYY-MM-DD, from `low` to `high`; None when absent."""
    label: str
    low: dt.date = dt.date(1970, 1, 1)
    high: dt.date = dt.date(2999, 12, 31)
    default: None = None

    def parse(self, raw: str):
        try:
            value = dt.date.fromisoformat(raw)
        except ValueError:
            value = None
        if value is None or not self.low <= value <= self.high:
            raise BadParameter(gettext(
                "%(name)s must be a date from %(low)s to %(high)s, written YYYY-MM-DD; "
                "got “%(value)s”.", name=self.label, low=self.low.isoformat(),
                high=self.high.isoformat(), value=_shown(raw)))
        return value


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a few fixed codes (e.g. a report's figure); `default` when absent."""
    label: str
    choices: tuple
    default: str | None = None

    def parse(self, raw: str):
        if raw not in self.choices:
            raise BadParameter(gettext(
                "%(name)s must be one of the listed choices; got “%(value)s”.",
                name=self.label, value=_shown(raw)))
        return raw


def Id(label: str) -> Whole:
    """An optional id of a database row."""
    return Whole(label, 1, MAX_ID)


def _shown(raw: str) -> str:
    return raw if len(raw) <= 24 else raw[:24] + "…"


def query(**params):
    """Parse the named query parameters and pass them to the view as keyword
    arguments, e.g. `@query(page=Whole(_l("Page"), 1, 100_000, 1))`."""
    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            for name, param in params.items():
                raw = request.args.get(name, "").strip()
                kwargs[name] = param.parse(raw) if raw else param.default
            return view(*args, **kwargs)
        wrapper.query_params = dict(params)
        return wrapper
    return decorate


def refuse_nul_characters():
    """No query or form value may hold a NUL character: PostgreSQL refuses
    it in any text, and nobody types one."""
    values = [*request.args.values(), *request.args.keys()]
    if request.method != "GET" and request.mimetype in ("application/x-www-form-urlencoded",
                                                        "multipart/form-data"):
        values += [*request.form.values(), *request.form.keys()]
    if any("\x00" in value for value in values):
        raise BadParameter(gettext("The request holds a NUL character; remove it and "
                                   "try again."))

