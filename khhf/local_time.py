"""Local time: the one place a time crosses between the database and the site.

The database keeps every timestamp as naive UTC (khhf.models.utcnow); people
read and type times in the site's zone, Settings.timezone (Asia/Shanghai by
default). Every conversion goes through these functions, so a site in
another zone sees its own times everywhere: pages, exports, reports, SMS,
recording folders, the calling window, the days campaigns and reports count.
"""

from __future__ import annotations

import datetime as dt
import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from khhf.services import N_

# zones people name with a word of their own (a msgid: the catalog translates
# it); any other zone is named by its own name, e.g. "Asia/Urumqi"
ZONE_WORDS = {
    "Asia/Shanghai": N_("Beijing time"),
}


@functools.lru_cache(maxsize=8)
def zone(name: str) -> ZoneInfo:
    """The zone named `name` (an IANA name, e.g. Asia/Shanghai)."""
    return ZoneInfo(name)


def is_zone(name: str) -> bool:
    """Whether `name` names a time zone this system knows."""
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def to_local(utc: dt.datetime, zone_name: str) -> dt.datetime:
    """A naive UTC time (as the database keeps it) as an aware time in `zone_name`."""
    return utc.replace(tzinfo=dt.UTC).astimezone(zone(zone_name))


def from_local(local: dt.datetime, zone_name: str) -> dt.datetime:
    """A wall-clock time in `zone_name` (naive; an aware one is taken as it
    is) as naive UTC, as the database keeps it."""
    if local.tzinfo is None:
        local = local.replace(tzinfo=zone(zone_name))
    return local.astimezone(dt.UTC).replace(tzinfo=None)


def now(zone_name: str) -> dt.datetime:
    """Now, as an aware time in `zone_name`."""
    return dt.datetime.now(zone(zone_name))


def today(zone_name: str, utc_now: dt.datetime | None = None) -> dt.date:
    """The local day it is in `zone_name` (at naive-UTC `utc_now`, default now)."""
    return (now(zone_name) if utc_now is None else to_local(utc_now, zone_name)).date()


def day_start(day: dt.date, zone_name: str) -> dt.datetime:
    """Local midnight at the start of `day`, as naive UTC."""
    return from_local(dt.datetime.combine(day, dt.time()), zone_name)


def zone_word(zone_name: str) -> str:
    """How people name the zone: a msgid to translate ("Beijing time"), or
    the zone's own name."""
    return ZONE_WORDS.get(zone_name, zone_name)
