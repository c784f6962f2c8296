"""Fault drills (issue 19): the shared row every drill reports and the
accounting that fills it.

Each drill is a module of this package with a function that starts the
stack, injects its fault, recovers and returns a `DrillRow`. The tests run
the short form and assert `row.violations() == []`; `bench/drills.py` runs
the long forms and prints `table(rows)`.

The accounting works from what the callers did, not from what KHHF says it
did: a drill gives every call its own customer number, so "one row per call
SIPp placed" is "one row per number" (`expected`), whatever the bridge wrote.
"""

from __future__ import annotations

import dataclasses
import wave
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from khhf.calls.states import FINAL_STATES

# a recording is complete when its length is the talk time within this
RECORDING_TOLERANCE_S = 1.0


@dataclasses.dataclass
class DrillRow:
    drill: str
    engine: str                 # "sqlite" or "postgresql"
    placed: int = 0             # calls the callers (SIPp, the web) placed
    rows: int = 0               # call rows found for them
    lost: int = 0               # placed calls with no final row
    doubled: int = 0            # rows beyond one per placed call
    rec_ok: int = 0             # recordings complete (length = talk time ± 1 s)
    rec_partial: int = 0        # shorter, and the row says so
    rec_missing: int = 0        # answered, no file, and the row says so
    rec_silent: int = 0         # a half or absent file the row does NOT flag: always a failure
    sms_sent: int | None = None  # SMS the drill expected to go out
    sms_once: bool | None = None  # each exactly once
    operator_saw: str = ""      # what khhf status, /healthz, the banner said during the fault
    seconds: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)

    def violations(self) -> list[str]:
        """The broken promises, in words; [] when the drill held."""
        out = []
        if self.lost:
            out.append(f"{self.lost} of {self.placed} calls lost (no final row)")
        if self.doubled:
            out.append(f"{self.doubled} calls doubled")
        if self.rec_silent:
            out.append(f"{self.rec_silent} recordings half or missing without the row saying so")
        if self.sms_once is False:
            out.append("an SMS was lost or sent twice")
        if not self.operator_saw:
            out.append("the operator was told nothing")
        return out + self.notes

    def add(self, other: Mapping[str, int]) -> DrillRow:
        for key, value in other.items():
            setattr(self, key, getattr(self, key) + value)
        return self


COLUMNS = ("drill", "engine", "placed", "rows", "lost", "doubled", "recordings ok/partial/missing",
           "SMS once", "operator saw")


def _cells(row: DrillRow) -> list[str]:
    sms = "-" if row.sms_once is None else ("yes" if row.sms_once else "NO")
    if row.sms_sent is not None:
        sms = f"{sms} ({row.sms_sent})"
    rec = f"{row.rec_ok}/{row.rec_partial}/{row.rec_missing}"
    if row.rec_silent:
        rec += f" +{row.rec_silent} silent"
    return [row.drill, row.engine, str(row.placed), str(row.rows), str(row.lost), str(row.doubled),
            rec, sms, row.operator_saw]


def table(rows: Iterable[DrillRow]) -> str:
    """A Markdown table, one line per drill, as README's reliability chapter carries it."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def wav_seconds(path: Path) -> float | None:
    """Length of a WAV file, or None if it is absent or not a readable WAV."""
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (OSError, EOFError, wave.Error):
        return None


def account_calls(calls: Iterable, expected: Mapping[str, int], recordings_dir: Path | None,
                  damaged=lambda call: False) -> dict[str, int]:
    """Count `calls` (Call rows) against `expected` (customer number -> calls
    placed to or from it). `damaged(call)` says whether the row itself marks
    its recording as partial or missing; a half or absent file on a row that
    does not is counted `rec_silent`."""
    calls = list(calls)
    got = Counter(c.customer_number for c in calls if c.customer_number in expected)
    final = Counter(c.customer_number for c in calls
                    if c.customer_number in expected and c.state in FINAL_STATES)
    out = dict(placed=sum(expected.values()), rows=sum(got.values()), lost=0, doubled=0,
               rec_ok=0, rec_partial=0, rec_missing=0, rec_silent=0)
    for number, n in expected.items():
        out["lost"] += max(0, n - final[number])
        out["doubled"] += max(0, got[number] - n)
    if recordings_dir is None:
        return out
    for call in calls:
        if call.customer_number not in expected or not call.answer_at or not call.talk_seconds:
            continue
        if not call.recording_path:
            out["rec_missing" if damaged(call) else "rec_silent"] += 1
            continue
        seconds = wav_seconds(Path(recordings_dir) / call.recording_path)
        if seconds is not None and abs(seconds - call.talk_seconds) <= RECORDING_TOLERANCE_S:
            out["rec_ok"] += 1
        elif damaged(call):
            out["rec_missing" if seconds is None else "rec_partial"] += 1
        else:
            out["rec_silent"] += 1
    return out
