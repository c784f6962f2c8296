"""Drill 8, the soak: `calls` concurrent recorded calls for `minutes`,
through the whole system as real processes (simkit.drills.stack).

`calls` managers work in the web UI, each on one call at a time: open the
task list, click 呼叫, watch the call, and either file the result on the
task page (half of them) or leave it to the SMS prompt, which the jobs
daemon queues, the SMS gateway submits to the SMSC simulator, and the
manager's mobile answers ('#ref 1', back through the SMSC and the gateway).
Customers also call the hotline. Every second a sampler reads each
daemon's RSS and open file descriptors (/proc), the bridge's lag from its
heartbeat, and which rows turned final (for hang-up -> row final).

After the run: 0 lost or doubled rows, every recording's length = talk time
±1 s, every result and SMS exactly once; a table of each daemon's RSS and
fds at the start (after a minute's warm-up) and the end; the bridge's lag.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from khhf.calls.states import FINAL_STATES, CallOutcome
from khhf.daemon import run_dir
from khhf.models import Call, Feedback

from . import DrillRow
from .media import damaged
from .stack import Plan, Stack, fresh_database, process_usage
from .traffic import HotlineCallers, ManagerWorker, MobileReplies, account, settle, sms_once

WARM_UP_S = 60   # the "start" RSS is read after this (imports, caches, pools filled)


def _epoch(value: dt.datetime | None) -> float | None:
    return value.replace(tzinfo=dt.timezone.utc).timestamp() if value else None


class Sampler(threading.Thread):
    """Every `every` s: each process's (RSS KiB, fds); the bridge's heartbeat
    lag; and the moment each call row is first seen final."""

    def __init__(self, stack: Stack, stop: threading.Event, every: float = 2.0,
                 warm_up: float = WARM_UP_S):
        super().__init__(name="sampler", daemon=True)
        self.stack, self.stop_flag, self.every = stack, stop, every
        self.warm_until = time.monotonic() + warm_up
        self.first: dict[str, tuple[int, int, int]] = {}   # name -> (pid, rss, fds)
        self.last: dict[str, tuple[int, int, int]] = {}
        self.peak_rss: Counter = Counter()
        self.heartbeat_lag: list[float] = []
        # the lag's parts per beat (ami_bridge.bridge health_state): events'
        # delay from Asterisk to the bridge, and the longest batch write
        self.ami_delay: list[float] = []
        self.batch_seconds: list[float] = []
        # the lag itself: how many events were stored how long (s, rounded
        # up to 0.1) after Asterisk sent them
        self.stored_after: Counter = Counter()
        self.final_lag: list[float] = []
        self.restarts: Counter = Counter()
        self._open: set[int] = set()
        self._max_id = 0
        self._beat_at = None

    def run(self) -> None:
        while not self.stop_flag.wait(self.every):
            self.sample()

    def sample(self) -> None:
        for name, pid in self.stack.pids().items():
            usage = process_usage(pid)
            if usage is None:
                continue
            if name in self.last and self.last[name][0] != pid:
                self.restarts[name] += 1
            if time.monotonic() >= self.warm_until and name not in self.first:
                self.first[name] = (pid, *usage)
            self.last[name] = (pid, *usage)
            self.peak_rss[name] = max(self.peak_rss[name], usage[0])
        try:
            beat = json.loads((run_dir(self.stack.settings) / "bridge.json").read_text())
            self.heartbeat_lag.append(float(beat["state"]["lag_seconds"]))
            if beat["beat_at"] != self._beat_at:   # a beat's parts once (it beats every 5 s)
                self._beat_at = beat["beat_at"]
                self.ami_delay.append(float(beat["state"].get("ami_delay_seconds", 0.0)))
                self.batch_seconds.append(float(beat["state"].get("batch_seconds", 0.0)))
                self.stored_after.update({float(lag): n for lag, n in
                                          beat["state"].get("stored_after", {}).items()})
        except (OSError, ValueError, KeyError, TypeError):
            pass
        now = time.time()
        with self.stack.sessions() as s:
            rows = s.execute(select(Call.id, Call.state, Call.end_at).where(
                Call.direction == "outbound",
                Call.id.in_(self._open) | (Call.id > self._max_id))).all()
        for call_id, state, end_at in rows:
            self._max_id = max(self._max_id, call_id)
            if state in FINAL_STATES:
                self._open.discard(call_id)
                end = _epoch(end_at)
                if end is not None:
                    self.final_lag.append(max(0.0, now - end))
            else:
                self._open.add(call_id)


@dataclasses.dataclass
class SoakResult:
    row: DrillRow
    lines: list[str]   # the usage table and the figures under the drill table


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _counted_pct(counts: Counter, q: float) -> float:
    """The q-quantile of values given as {value: how many}."""
    total, seen = sum(counts.values()), 0
    for value in sorted(counts):
        seen += counts[value]
        if seen > q * total:
            return value
    return float("nan")


def peak_overlap(intervals) -> int:
    points = sorted([(a, 1) for a, b in intervals] + [(b, -1) for a, b in intervals])
    peak = level = 0
    for _, step in points:
        level += step
        peak = max(peak, level)
    return peak


def run_soak(minutes: float = 30, calls: int = 100, engine: str = "sqlite",
             pg_url: str | None = None, workdir: Path | None = None, talk: float = 30.0,
             hotline_managers: int = 2) -> SoakResult:
    started = time.monotonic()
    seconds = minutes * 60
    plan = Plan(outbound=calls, tasks=int(seconds / (talk + 4)) + 3,
                inbound=hotline_managers, callers=int(seconds / (talk + 4)) + 3)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="khhf-drill-soak-"))
    row = DrillRow(f"8 soak {calls} calls {minutes:g} min", engine)
    lines: list[str] = []
    with fresh_database(engine, workdir, pg_url) as url, \
            Stack(workdir, plan, talk_s=talk, database_url=url, smsc=True,
                  sms_prompt_delay_seconds=5) as stack:
        stop = threading.Event()
        desks = plan.out_desks()
        workers = [ManagerWorker(stack, ext, stop, results="web" if i % 2 == 0 else "sms",
                                 pause=1.0, poll=2.0) for i, ext in enumerate(desks)]
        callers = HotlineCallers(stack, stop, interval=(talk + 4) / max(1, hotline_managers))
        replies_stop = threading.Event()
        mobiles = MobileReplies(stack, replies_stop)
        sampler = Sampler(stack, stop, every=1.0, warm_up=min(WARM_UP_S, seconds / 4))
        for thread in (sampler, mobiles, callers):
            thread.start()
        for worker in workers:   # managers arrive over the first seconds, not at once
            worker.start()
            time.sleep(min(0.5, 30 / len(workers)))
        end = started + seconds
        while time.monotonic() < end:
            time.sleep(5)
            for name, daemon in stack.daemons.items():
                if daemon.proc.poll() is not None:
                    row.notes.append(f"{name} exited ({daemon.proc.returncode}) during the soak")
                    daemon.start()
        sampler.sample()   # the end figures, before the calls wind down
        stop.set()
        for worker in workers:
            worker.join(200)
        hotline = callers.wait(60 + talk)
        (workdir / "managers.log").write_text(
            "\n".join(sorted(e for w in workers for e in w.events)) + "\n")
        numbers = {c.number for w in workers for c in w.clicks} | set(hotline)
        left = settle(stack, numbers, timeout=120)
        # the last calls' prompts go out and their replies come back
        time.sleep(stack.settings.sms_prompt_delay_seconds + 20)
        replies_stop.set()
        mobiles.join(10)
        time.sleep(5)
        # a short file the row marks partial is counted partial, not silent
        result = account(stack, workers, hotline, damaged)
        row.add(result.counts)
        row.notes += result.notes
        if left != (0, 0):
            row.notes.append(f"after 120 s still open: {left[0]} rows, "
                             f"{left[1]} recordings unmeasured")
        row.sms_sent, row.sms_once = sms_once(stack)
        unanswered = results_missing(stack, [w for w in workers if w.mode == "sms"])
        if unanswered:
            row.notes.append(f"{unanswered} answered calls left to the SMS prompt have no result")
        with stack.sessions() as s:
            answered = s.execute(select(Call.answer_at, Call.end_at).where(
                Call.customer_number.in_(numbers), Call.answer_at.is_not(None),
                Call.end_at.is_not(None))).all()
            channels = Counter(s.scalars(select(Feedback.channel)))
        peak = peak_overlap([(_epoch(a), _epoch(b)) for a, b in answered])
        lag99 = _pct(sampler.final_lag, 0.99)
        beat99 = _pct(sampler.heartbeat_lag, 0.99)
        stored99 = _counted_pct(sampler.stored_after, 0.99)
        if lag99 > 1.0 + sampler.every:   # read every second: up to 1 s late
            row.notes.append(f"bridge lag p99 {lag99:.1f} s")
        row.operator_saw = (f"bridge lag p99 {stored99:.1f} s per event, {beat99:.2f} s "
                            f"(heartbeat); results "
                            + ", ".join(f"{n} by {c}" for c, n in sorted(channels.items())))
        lines.append(f"soak: {calls} managers on one call at a time (talk {talk:g} s), "
                     f"{hotline_managers} on-duty managers taking hotline calls, "
                     f"{minutes:g} min on {engine}; peak simultaneous answered calls {peak}; "
                     f"work dir {workdir}")
        lines.append(f"hang-up -> row final (seen by a reader every {sampler.every:g} s): p50 "
                     f"{_pct(sampler.final_lag, 0.5):.1f} s, p99 {lag99:.1f} s, max "
                     f"{max(sampler.final_lag, default=float('nan')):.1f} s over "
                     f"{len(sampler.final_lag)} calls; bridge heartbeat lag p99 {beat99:.2f} s, "
                     f"max {max(sampler.heartbeat_lag, default=float('nan')):.2f} s; of it, "
                     f"Asterisk -> bridge socket p99 {_pct(sampler.ami_delay, 0.99):.2f} s "
                     f"(Asterisk and the host), longest batch write p99 "
                     f"{_pct(sampler.batch_seconds, 0.99):.2f} s (the bridge and the database)")
        lines.append(f"bridge lag per event, Asterisk's event -> stored (committed), over "
                     f"{sum(sampler.stored_after.values())} events: p50 "
                     f"{_counted_pct(sampler.stored_after, 0.5):.1f} s, p99 "
                     f"{stored99:.1f} s, max "
                     f"{max(sampler.stored_after, default=float('nan')):.1f} s")
        lines.append(f"SMS: {row.sms_sent} sent, {mobiles.replied} prompts answered from the "
                     f"mobiles; results filed: {dict(channels)}")
        lines += usage_table(sampler)
    row.seconds = time.monotonic() - started
    return SoakResult(row, lines)


def results_missing(stack: Stack, workers: list[ManagerWorker]) -> int:
    """Answered calls of `workers` whose task has no result."""
    tasks = {c.task_id for w in workers for c in w.clicks}
    with stack.sessions() as s:
        answered = set(s.scalars(select(Call.task_id).where(
            Call.task_id.in_(tasks), Call.outcome == CallOutcome.ANSWERED)))
        filed = set(s.scalars(select(Feedback.task_id).where(Feedback.task_id.in_(answered))))
    return len(answered - filed)


def usage_table(sampler: Sampler) -> list[str]:
    out = ["", "| process | RSS start MiB | RSS end MiB | RSS peak MiB | fds start | fds end "
           "| restarts |", "|---|---|---|---|---|---|---|"]
    names = {"asterisk": "asterisk", "ami_bridge": "bridge", "agi": "agi", "webui": "web",
             "jobs": "jobs", "smsgw": "smsgw"}
    for key, label in names.items():
        first, last = sampler.first.get(key), sampler.last.get(key)
        if not first or not last:
            out.append(f"| {label} | - | - | - | - | - | {sampler.restarts[key]} |")
            continue
        out.append(f"| {label} | {first[1] / 1024:.0f} | {last[1] / 1024:.0f} | "
                   f"{sampler.peak_rss[key] / 1024:.0f} | {first[2]} | {last[2]} | "
                   f"{sampler.restarts[key]} |")
    return out


def soak(short: bool, minutes: float | None = None, calls: int | None = None,
         engine: str = "sqlite", pg_url: str | None = None,
         workdir: Path | None = None) -> DrillRow:
    """Drill 8 as a row of the drills' table (short: 3 minutes, 10 calls)."""
    minutes = minutes or (3 if short else 30)
    calls = calls or (10 if short else 100)
    return run_soak(minutes, calls, engine, pg_url, workdir).row

