"""Concurrency: simultaneous recorded calls through the whole stack, raised
level by level until something fails.

    python3 -m bench.concurrency [--levels 50,100,200,300,400] [--rate 40]
                                 [--min-rate 12] [--budget 540]
                                 [--db sqlite|postgresql] [--pg-url URL]

One real Asterisk (tests/harness.py, RTP range widened to 4 ports per call)
with one desk extension per simultaneous call, all registered to one
answering SIPp (answer.xml: RTP audio until BYE); the carrier is one SIPp
answering as the customers (answer_hangup.xml: RTP audio, hangs up after
the talk time). The real bridge and command channel run in a thread
(tests/bridge_env.py) on a fresh SQLite file or PostgreSQL database.

Per level N: N click-to-dials (the dialing service writes the row, the
command channel originates), from 16 threads paced at up to --rate per
second, each manager its own customer; the talk time (N / --min-rate + 8 s)
is long enough that all N calls are up at once. Then per call:
- row: ended / answered / hung up by the customer, talk seconds = the
  carrier's talk time +-1 s;
- recording: the WAV exists, RMS > 500, length = answer->end +-1 s;
- events: every AMI event Asterisk sent about the call (counted by an own
  raw AMI session with the bridge's user, so the same eventfilter) is
  stored in call_events.
Also measured: peak simultaneous answered calls (from the rows), CPU of
Asterisk, of the two SIPp and of this process (bridge + dialers + checks),
as the level's average and its busiest second, in % of one core; the
bridge's largest queue; its lag (hang-up -> row final, sampled every
0.25 s); and how often a reconciler pass overran its 1 s interval. Stops
at the first level with a failure, or when the time budget would be
exceeded. Prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select

from bench.bridge_throughput import AmiTapThread, database, parse
from khhf import bridge_client, db
from khhf.calls import store
from khhf.calls.states import FINAL_STATES
from khhf.models import Call, CallEvent, County, Manager, User
from khhf.services.dialing import request_call
from pbxctl import pbx
from simkit import factories
from simkit.bridge_env import BridgeEnv
from simkit.harness import PbxHarness
from simkit.sipp import SIPP_DIR, Sipp, free_port, wav_stats

TICK = os.sysconf("SC_CLK_TCK")


class SkipCounter(logging.Filter):
    """Counts (and hides) APScheduler's 'skipped: maximum number of running
    instances' warnings: a reconciler pass that took longer than its interval."""

    count = 0

    def filter(self, record) -> bool:
        if "skipped" in record.getMessage():
            SkipCounter.count += 1
            return False
        return True


SKIPPED = SkipCounter()


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process `pid` so far (0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, TypeError):
        return 0.0


def add_managers(env: BridgeEnv, desks: list[str]) -> None:
    """A manager for each desk beyond the three BridgeEnv seeds."""
    with db.unit_of_work(env.sessions) as s:
        county = s.scalar(select(County))
        have = set(s.scalars(select(Manager.desk_extension)))
        for ext in desks:
            if ext not in have:
                factories.manager(s, county, f"m{ext}", employee_no=f"E{ext}", desk=ext,
                                  mobile=f"1370000{ext}")


def events_by_call(messages: list[bytes]) -> dict[str, set[str]]:
    """linkedid -> dedup keys of the events the bridge would store."""
    sent: dict[str, set[str]] = {}
    for raw in map(store.raw_from_ami, map(parse, messages)):
        if raw is not None:
            sent.setdefault(raw.linkedid, set()).add(raw.dedup_key)
    return sent


class Sampler(threading.Thread):
    """Every 0.25 s: CPU counters, the bridge's queue, which rows are final."""

    def __init__(self, env, pids: dict[str, list[int]], call_ids: list[int]):
        super().__init__(daemon=True)
        self.env, self.pids, self.call_ids = env, pids, call_ids
        self.final_seen: dict[int, float] = {}
        self.max_queue = 0
        self.last: dict[int, float] = {}
        self.peak: dict[str, float] = {}
        self.stopped = threading.Event()

    def cpu(self) -> dict[str, float]:
        for pids in self.pids.values():  # a process that exited keeps its last reading
            for pid in pids:
                self.last[pid] = max(self.last.get(pid, 0.0), cpu_seconds(pid))
        out = {name: sum(self.last[p] for p in pids) for name, pids in self.pids.items()}
        out["bench"] = sum(os.times()[:2])
        return out

    def run(self):
        self.started, self.cpu0 = time.monotonic(), self.cpu()
        history = [(self.started, self.cpu0)]
        while not self.stopped.wait(0.25):
            self.max_queue = max(self.max_queue, self.env.bridge.queue.qsize())
            now, cpu = time.monotonic(), self.cpu()
            history.append((now, cpu))
            # the busiest second: CPU over the last four samples
            then, before = history[max(0, len(history) - 5)]
            for name, seconds in cpu.items():
                self.peak[name] = max(self.peak.get(name, 0.0),
                                      100 * (seconds - before[name]) / (now - then))
            ids = [c for c in self.call_ids if c not in self.final_seen]
            if not ids:
                continue
            with self.env.sessions() as s:
                done = s.scalars(select(Call.id).where(Call.id.in_(ids),
                                                       Call.state.in_(FINAL_STATES)))
                now = time.time()
                for call_id in done:
                    self.final_seen[call_id] = now

    def stop(self) -> dict[str, tuple[float, float]]:
        """CPU % (of one core) per process group since start: (average, busiest second)."""
        self.stopped.set()
        self.join(5)
        wall = time.monotonic() - self.started
        return {k: (100 * (v - self.cpu0[k]) / wall, self.peak.get(k, 0.0))
                for k, v in self.cpu().items()}


def sipp_counts(party) -> tuple[int, int]:
    text = (party.workdir / "stdout.log").read_text(errors="replace")
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return (int(ok[-1]) if ok else 0), (int(failed[-1]) if failed else -1)


def db_url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def utc_epoch(value: dt.datetime | None) -> float | None:
    return value.replace(tzinfo=dt.UTC).timestamp() if value else None


def peak_overlap(intervals) -> int:
    points = sorted([(a, 1) for a, b in intervals] + [(b, -1) for a, b in intervals])
    peak = level = 0
    for _, step in points:
        level += step
        peak = max(peak, level)
    return peak


def recording_check(args) -> tuple[int, str]:
    call_id, path, seconds = args
    try:
        duration, rms = wav_stats(Path(path))
    except Exception as exc:  # noqa: BLE001 - report, do not stop the bench
        return call_id, f"unreadable ({exc.__class__.__name__})"
    if rms <= 500:
        return call_id, f"silent (RMS {rms:.0f})"
    if abs(duration - seconds) > 1.0:
        return call_id, f"{duration:.1f} s recorded for {seconds:.1f} s talk"
    return call_id, ""


@dataclasses.dataclass
class Level:
    n: int
    talk_s: float
    dial_errors: list = dataclasses.field(default_factory=list)
    dial_rate: float = 0.0
    desk: tuple = (0, 0)
    carrier: tuple = (0, 0)
    rows_ok: int = 0
    audio_ok: int = 0
    events_sent: int = 0
    events_stored: int = 0
    peak: int = 0
    cpu: dict = dataclasses.field(default_factory=dict)
    max_queue: int = 0
    lag: list = dataclasses.field(default_factory=list)
    reconcile_skipped: int = 0
    problems: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class Bench:
    def __init__(self, workdir: Path, max_calls: int, database_url: str | None,
                 min_rate: float = 12):
        self.min_rate = min_rate
        self.workdir = workdir
        self.desks = [str(8001 + i) for i in range(max_calls)]
        h = PbxHarness(workdir, name=f"bench-cc{os.getpid()}", desk_extensions=self.desks)
        # 2 legs x (RTP + RTCP) per call, and some room
        span = 4 * max_calls + 100
        rtp = free_port(span=span + 1)
        rtp += rtp % 2
        h.settings = dataclasses.replace(h.settings, rtp_start=rtp, rtp_end=rtp + span - 1)
        h.pbx = pbx.Pbx(h.settings, self.desks)
        self.h = h
        self.database_url = database_url

    def __enter__(self):
        self.h.__enter__()
        self.env = None
        try:
            self.env = BridgeEnv(self.h, self.workdir, self.database_url)
            add_managers(self.env, self.desks)
            self.env.start()
            self.desk_port = free_port()
            started = time.monotonic()
            self.register_desks()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        print(f"registered {len(self.desks)} desk phones in {time.monotonic() - started:.0f} s",
              file=sys.stderr)
        return self

    def register_desks(self) -> None:
        """Every desk phone's contact is the one answering SIPp's port. SIPp
        cannot take per-call digest credentials from a CSV, so one register.xml
        run per desk, in parallel, each from its own port but naming the
        answering port in its Contact (the desk endpoints do not rewrite it)."""
        s = self.h.settings
        scenario = self.workdir / "register_to_desk_port.xml"
        scenario.write_text((SIPP_DIR / "register.xml").read_text().replace(
            "[local_ip]:[local_port]>", f"[local_ip]:{self.desk_port}>"))

        def register(ext: str) -> None:
            for _attempt in range(3):  # a port picked by two threads at once: try again
                reg = Sipp(str(scenario), self.workdir / "sipp", local_ip="127.0.0.1",
                           port=free_port(), remote=self.h.sip_target, service=ext,
                           auth=(ext, pbx.phone_password(s, ext)), keys={"expires": 3600})
                try:
                    if reg.start().wait(20) == 0:
                        return
                except RuntimeError:
                    pass
            raise RuntimeError(f"desk phone {ext} failed to register:\n{reg.trace_summary()}")
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(register, self.desks))

    def __exit__(self, *exc):
        if self.env is not None:
            self.env.stop()
        self.h.__exit__(*exc)

    def level(self, n: int, rate: float) -> Level:
        # every call must still be up when the last one is dialed: the dial
        # path rarely keeps up with --rate on SQLite, so assume --min-rate
        result = Level(n, talk_s=round(n / min(rate, self.min_rate) + 8, 1))
        skipped_before = SKIPPED.count
        # the tasks exist before anyone clicks: a dial is what the web UI does
        tasks = [self.env.task_for(ext, f"139{n % 1000:03d}{i:05d}")
                 for i, ext in enumerate(self.desks[:n])]
        tap = AmiTapThread(self.h.settings)
        desk = self.h.party("answer.xml", local_ip="127.0.0.1", port=self.desk_port,
                            calls=n).start()
        carrier = self.h.trunk("answer_hangup.xml", duration_ms=int(result.talk_s * 1000), calls=n)
        pids = {"asterisk": [self.h.pbx.pid()], "sipp": [desk.proc.pid, carrier.proc.pid]}
        call_ids: list[int] = []
        sampler = Sampler(self.env, pids, call_ids)
        sampler.start()
        t0 = time.monotonic()

        def dial(i: int) -> None:  # managers clicking independently, 16 at a time, paced
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            try:
                call_ids.append(self.dial(self.desks[i], tasks[i]))
            except Exception as exc:  # noqa: BLE001 - a refused dial is a result
                result.dial_errors.append(f"{self.desks[i]}: {str(exc).splitlines()[0]}")
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(dial, range(n)))
        result.dial_rate = n / (time.monotonic() - t0)
        for party in (carrier, desk):
            try:
                party.wait(result.talk_s + 90)
            except AssertionError as exc:
                result.problems.append(str(exc).split(";")[0])
        result.desk, result.carrier = sipp_counts(desk), sipp_counts(carrier)
        # rows final with their recordings filled in (the reconciler, every second)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.env.sessions() as s:
                pending = s.scalar(select(func.count()).select_from(Call).where(
                    Call.id.in_(call_ids),
                    Call.state.not_in(FINAL_STATES) | (
                        (Call.outcome == "answered") & Call.recording_sha256.is_(None))))
            if not pending:
                break
            time.sleep(0.25)
        result.cpu = sampler.stop()
        result.max_queue = sampler.max_queue
        sent = events_by_call(tap.stop())
        self.check(result, call_ids, sent, sampler.final_seen)
        result.reconcile_skipped = SKIPPED.count - skipped_before
        return result

    def dial(self, ext: str, task_id: int) -> int:
        """The web UI's dial: the dialing service writes the row, the bridge originates."""
        with db.unit_of_work(self.env.sessions) as s:
            user = s.scalar(select(User).where(User.username == f"m{ext}"))
            call_id = request_call(s, self.env.settings, user, task_id,
                                   live=bridge_client.live(self.env.settings)).id
        bridge_client.dial(self.env.settings, call_id)
        return call_id

    def check(self, result: Level, call_ids, sent, final_seen) -> None:
        bad: dict[str, list[str]] = {}
        recordings = []
        intervals = []
        with self.env.sessions() as s:
            calls = list(s.scalars(select(Call).where(Call.id.in_(call_ids))))
            stored: dict[int, set[str]] = {}
            for call_id, key in s.execute(select(CallEvent.call_id, CallEvent.dedup_key).where(
                    CallEvent.call_id.in_(call_ids), CallEvent.source == "ami")):
                stored.setdefault(call_id, set()).add(key)
        for call in calls:
            answer, end = utc_epoch(call.answer_at), utc_epoch(call.end_at)
            row = (call.state, call.outcome, call.hangup_by)
            if row != ("ended", "answered", "customer"):
                bad.setdefault("row", []).append(f"call {call.id}: {row}")
            elif call.talk_seconds is None or abs(call.talk_seconds - result.talk_s) > 1:
                bad.setdefault("talk", []).append(f"call {call.id}: {call.talk_seconds} s")
            else:
                result.rows_ok += 1
            if answer and end:
                intervals.append((answer, end))
                if call.id in final_seen:
                    result.lag.append(final_seen[call.id] - end)
            if call.recording_path and answer and end:
                recordings.append((call.id, str(self.env.settings.recordings_dir
                                                 / call.recording_path), end - answer))
            else:
                bad.setdefault("no recording", []).append(f"call {call.id}")
            ours = sent.get(call.linkedid, set())
            result.events_sent += len(ours)
            result.events_stored += len(ours & stored.get(call.id, set()))
            if not ours:
                bad.setdefault("tap", []).append(f"call {call.id}: no AMI events seen")
        with ProcessPoolExecutor(2) as pool:
            for call_id, problem in pool.map(recording_check, recordings, chunksize=8):
                if problem:
                    bad.setdefault("recording", []).append(f"call {call_id}: {problem}")
                else:
                    result.audio_ok += 1
        result.peak = peak_overlap(intervals)
        if result.dial_errors:
            bad["dial"] = result.dial_errors
        if result.events_stored < result.events_sent:
            bad["events"] = [f"{result.events_sent - result.events_stored} AMI events not stored"]
        if result.desk[1] or result.carrier[1]:
            bad["sipp"] = [f"failed calls: desk {result.desk[1]}, carrier {result.carrier[1]}"]
        for what, items in bad.items():
            result.problems.append(f"{what}: {len(items)} ({'; '.join(items[:3])})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.concurrency",
                                description=__doc__.split("\n")[0])
    p.add_argument("--levels", default="50,100,200,300,400")
    p.add_argument("--rate", type=float, default=40, help="new calls per second")
    p.add_argument("--budget", type=float, default=540, help="seconds; no new level after it")
    p.add_argument("--db", default="sqlite", choices=("sqlite", "postgresql"))
    p.add_argument("--pg-url", default=os.environ.get("KHHF_TEST_PG_URL"))
    p.add_argument("--min-rate", type=float, default=12,
                   help="dial rate assumed when choosing the talk time")
    args = p.parse_args(argv)
    for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
        logging.getLogger(name).addFilter(SKIPPED)
    levels = [int(x) for x in args.levels.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="khhf-bench-cc-"))
    started = time.monotonic()
    results: list[Level] = []
    with database(args.db, workdir, args.pg_url) as engine, \
            Bench(workdir, max(levels), db_url(engine), args.min_rate) as bench:
        for n in levels:
            elapsed = time.monotonic() - started
            expected = n / min(args.rate, args.min_rate) + 8 + 30
            if results and elapsed + expected > args.budget:
                print(f"stopping before {n} calls: time budget", file=sys.stderr)
                break
            print(f"level {n} ...", file=sys.stderr)
            result = bench.level(n, args.rate)
            results.append(result)
            print(f"level {n}: {'ok' if result.ok else result.problems}", file=sys.stderr)
            if not result.ok:
                break
    print(f"concurrency: recorded calls through SIPp desk + carrier (RTP both sides), Asterisk, "
          f"the bridge on {args.db}; dialed by 16 threads at up to {args.rate:g} calls/s; "
          f"work dir {workdir}")
    print("calls | talk s | dial/s | peak up | SIPp desk ok/fail | carrier ok/fail | rows ok | "
          "audio ok | AMI events stored/sent | Asterisk CPU % avg/peak | SIPp CPU % avg/peak | "
          "bridge+bench CPU % avg/peak | "
          "max queue | lag p50/max s | reconciler overruns | result")
    print(" | ".join(["---"] * 16))
    for r in results:
        lag = f"{statistics.median(r.lag):.2f}/{max(r.lag):.2f}" if r.lag else "-"
        cpu = {name: "{:.0f}/{:.0f}".format(*r.cpu.get(name, (0, 0)))
               for name in ("asterisk", "sipp", "bench")}
        print(f"{r.n} | {r.talk_s:g} | {r.dial_rate:.1f} | {r.peak} | {r.desk[0]}/{r.desk[1]} | "
              f"{r.carrier[0]}/{r.carrier[1]} | {r.rows_ok}/{r.n} | {r.audio_ok}/{r.n} | "
              f"{r.events_stored}/{r.events_sent} | {cpu['asterisk']} | {cpu['sipp']} | "
              f"{cpu['bench']} | {r.max_queue} | {lag} | {r.reconcile_skipped} | "
              f"{'ok' if r.ok else 'FAIL'}")
    for r in results:
        for problem in r.problems:
            print(f"{r.n} calls: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
