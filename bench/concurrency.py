"""Concurrency: simultaneous recorded calls through the whole stack, against
bare Asterisk on the same host in the same run.

    python3 -m bench.concurrency [--quick] [--levels 100,150,200,250,300,360]
                                 [--bare-levels 100,150,...,420] [--rate 40]
                                 [--min-rate 12] [--budget 1500]
                                 [--db sqlite|postgresql|both] [--pg-url URL]

One real Asterisk (simkit/harness.py, RTP range widened to 4 ports per call)
with one desk extension per simultaneous call, all registered to one
answering SIPp (answer.xml: RTP audio until BYE); the carrier is one SIPp
answering as the customers (answer_hangup.xml: RTP audio, hangs up after
the talk time).

First, bare Asterisk: the same PBX started from the same shipped config
but with a two-context dialplan (Dial the customer, MixMonitor on answer,
the same `b` option and WAV), CEL and CDR off, and no AMI listener, no
bridge, no AGI, no database. The bench originates the calls itself over
AMI (events off), paced at --rate. Per call: the WAV exists, RMS > 500,
length = the carrier's talk time +-1 s; neither SIPp failed a call.

Then KHHF: the PBX restarted from the shipped config unchanged, the real
bridge and command channel in a thread (simkit/bridge_env.py) on a fresh
SQLite file or PostgreSQL database. Per level N: N click-to-dials (the
dialing service writes the row, the command channel originates), from 16
threads paced at up to --rate per second, each manager its own customer.
Per call:
- row: ended / answered / hung up by the customer, talk seconds = the
  carrier's talk time +-1 s;
- recording: the WAV exists, RMS > 500, length = the row's talk seconds
  +-1 s (MixMonitor records only while bridged: customer's answer to
  customer's hang-up; the manager's leg then hears the keypad result);
- events: every AMI event Asterisk sent about the call (counted by an own
  raw AMI session with the bridge's user, so the same eventfilter) is
  stored in call_events.

In both, the talk time (N / --min-rate + 8 s) is long enough that all N
calls are up at once. Also measured: peak simultaneous answered calls,
CPU (average over the level and its busiest second, in % of one core) of
Asterisk, of the two SIPp, of this process (bridge + dialers + checks)
and of the PostgreSQL backends serving the bench's database; the
bridge's largest queue and lag (hang-up -> row final, sampled every
0.25 s); reconciler overruns; the load average at the level's start.
Each mode raises the level until one fails (or the time budget is spent).
The last line is the ratio: KHHF's highest passing level over bare
Asterisk's, e.g. `concurrency khhf:bare sqlite=300/360 (0.83)`.

--quick: one level of 150 for bare and for KHHF (SQLite unless --db),
about 3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from amiclient import AmiClient
from bench.bridge_throughput import AmiTapThread, database, parse
from khhf import bridge_client, db
from khhf.calls import store
from khhf.calls.states import FINAL_STATES
from khhf.channel_vars import TRUNK_ENDPOINT
from khhf.models import Call, CallEvent, County, Manager, User
from khhf.services.dialing import request_call
from pbxctl import pbx
from simkit import factories
from simkit.bridge_env import BridgeEnv
from simkit.harness import PbxHarness
from simkit.sipp import SIPP_DIR, Sipp, free_port, wav_stats

TICK = os.sysconf("SC_CLK_TCK")
QUICK_LEVEL = 150

# bare Asterisk's whole dialplan: the desk leg (originated) dials the
# customer through the trunk, and the customer's leg records once answered,
# exactly as KHHF's khhf-dial-customer / khhf-record do (MixMonitor, `b`, WAV)
BARE_DIALPLAN = """\
; bench/concurrency.py: bare Asterisk, no KHHF dialplan
[general]
static = yes
writeprotect = yes

[bare-outbound]
exten => _X.,1,Dial(PJSIP/${{FILTER(0-9,${{EXTEN}})}}@{trunk},30,U(bare-record^${{BARE_REC}}))
 same => n,Hangup()

[bare-record]
exten => s,1,MixMonitor({rec_dir}/${{ARG1}},b)
 same => n,Return()
"""
# what bare Asterisk does not load: KHHF's records of truth and its AGI
BARE_NOLOAD = ("cel_custom.so", "cdr_custom.so", "res_cdrel_custom.so", "res_agi.so",
               "res_speech.so", "app_celgenuserevent.so")


class BarePbx(pbx.Pbx):
    """The shipped configuration, rendered as usual, with KHHF's parts taken
    out: the dialplan replaced by BARE_DIALPLAN, CEL and CDR off."""

    def render(self, layout: pbx.Layout) -> None:
        super().render(layout)
        etc = self.run_dir / "etc"
        # no #include: extensions.d/ (KHHF's contexts) is not read
        (etc / "extensions.conf").write_text(BARE_DIALPLAN.format(
            trunk=TRUNK_ENDPOINT, rec_dir=f"{layout.inner_dir}/recordings"))
        for name in ("cel.conf", "cdr.conf"):
            (etc / name).write_text("[general]\nenable = no\n")
        modules = etc / "modules.conf"
        modules.write_text("".join(
            line for line in modules.read_text().splitlines(keepends=True)
            if not line.startswith("load") or line.split()[-1] not in BARE_NOLOAD))
        self._set_permissions(layout)


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
    """Every 0.25 s: CPU counters of the process groups in `pids` (a list
    may grow while it runs), and `tick()` for what a mode watches besides."""

    def __init__(self, pids: dict[str, list[int | None]]):
        super().__init__(daemon=True)
        self.pids = pids
        self.last: dict[int | None, float] = {}
        self.peak: dict[str, float] = {}
        self.stopped = threading.Event()

    def cpu(self) -> dict[str, float]:
        for pids in self.pids.values():  # a process that exited keeps its last reading
            for pid in list(pids):
                self.last[pid] = max(self.last.get(pid, 0.0), cpu_seconds(pid))
        out = {name: sum(self.last[p] for p in list(pids)) for name, pids in self.pids.items()}
        out["bench"] = sum(os.times()[:2])
        return out

    def tick(self) -> None:
        """Called every sample; nothing for bare Asterisk."""

    def run(self):
        self.started, self.cpu0 = time.monotonic(), self.cpu()
        history = [(self.started, self.cpu0)]
        while not self.stopped.wait(0.25):
            now, cpu = time.monotonic(), self.cpu()
            history.append((now, cpu))
            # the busiest second: CPU over the last four samples
            then, before = history[max(0, len(history) - 5)]
            for name, seconds in cpu.items():
                self.peak[name] = max(self.peak.get(name, 0.0),
                                      100 * (seconds - before.get(name, 0.0)) / (now - then))
            self.tick()

    def stop(self) -> dict[str, tuple[float, float]]:
        """CPU % (of one core) per process group since start: (average, busiest second)."""
        self.stopped.set()
        self.join(5)
        wall = time.monotonic() - self.started
        return {k: (100 * (v - self.cpu0.get(k, 0.0)) / wall, self.peak.get(k, 0.0))
                for k, v in self.cpu().items()}


class KhhfSampler(Sampler):
    """... plus the bridge's queue, which rows are final, and the PostgreSQL
    backends of the bench's database (their CPU is KHHF's too)."""

    def __init__(self, env: BridgeEnv, pids: dict[str, list[int | None]], call_ids: list[int]):
        super().__init__(pids)
        self.env, self.call_ids = env, call_ids
        self.final_seen: dict[int, float] = {}
        self.max_queue = 0
        self.postgres = env.engine.dialect.name == "postgresql"
        self.pids.setdefault("database", [])
        self.ticks = 0

    def tick(self) -> None:
        if self.env.thread is not None:  # the bridge in this process: its queue
            self.max_queue = max(self.max_queue, self.env.bridge.queue.qsize())
        self.ticks += 1
        with self.env.sessions() as s:
            if self.postgres and self.ticks % 4 == 1:
                known = set(self.pids["database"])
                self.pids["database"].extend(set(s.scalars(text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")))
                    - known)
            ids = [c for c in self.call_ids if c not in self.final_seen]
            if not ids:
                return
            done = s.scalars(select(Call.id).where(Call.id.in_(ids),
                                                   Call.state.in_(FINAL_STATES)))
            now = time.time()
            for call_id in done:
                self.final_seen[call_id] = now


class Profiler:
    """With --profile DIR: `perf record` of Asterisk and `py-spy record` of
    this process (the dialers) and of the bridge's, from the level's start,
    for at most `seconds`; files named <mode>-<calls>.* in DIR."""

    def __init__(self, directory: Path | None, name: str, asterisk_pid: int | None,
                 seconds: float, bridge_pid: int | None = None):
        self.procs: list[subprocess.Popen] = []
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        seconds = int(min(seconds, 30))
        perf, spy = shutil.which("perf"), os.environ.get("PY_SPY") or shutil.which("py-spy")
        if perf and asterisk_pid:
            self.procs.append(subprocess.Popen(
                [perf, "record", "-q", "-F", "99", "-g", "-p", str(asterisk_pid),
                 "-o", str(directory / f"{name}.perf.data"), "--", "sleep", str(seconds)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        targets = {"bench": os.getpid(), "bridge": bridge_pid}
        for who, pid in targets.items():
            if spy and pid and not name.startswith("bare"):
                self.procs.append(subprocess.Popen(
                    [spy, "record", "--nonblocking", "--threads", "--format", "raw", "-r", "50",
                     "-d", str(seconds), "-p", str(pid),
                     "-o", str(directory / f"{name}.{who}.pyspy.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def wait(self) -> None:
        for proc in self.procs:
            proc.wait()


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


def recording_check(args) -> tuple[int, str, float, float]:
    """(call, problem or "", the WAV's length, its mtime) for one recording
    expected to last `seconds`."""
    call_id, path, seconds = args
    try:
        duration, rms = wav_stats(Path(path))
        mtime = Path(path).stat().st_mtime
    except Exception as exc:  # noqa: BLE001 - report, do not stop the bench
        return call_id, f"unreadable ({exc.__class__.__name__})", 0.0, 0.0
    if rms <= 500:
        return call_id, f"silent (RMS {rms:.0f})", duration, mtime
    if abs(duration - seconds) > 1.0:
        return call_id, f"{duration:.1f} s recorded for {seconds:.1f} s talk", duration, mtime
    return call_id, "", duration, mtime


@dataclasses.dataclass
class Level:
    mode: str           # "bare" or the database KHHF ran on
    n: int
    talk_s: float
    load: float = 0.0   # the 1-minute load average at the level's start
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
    placed: int = 0          # calls dialed without an error
    calls_ok: int = 0        # ... that passed every per-call check
    events_missing: set = dataclasses.field(default_factory=set)  # calls with an event not stored

    @property
    def ok(self) -> bool:
        return not self.problems

    def collect(self, bad: dict[str, list[str]]) -> None:
        failed = set(self.events_missing)
        for items in bad.values():
            failed |= {int(m) for item in items for m in re.findall(r"^call (\d+)", item)}
        self.placed = self.n - len(self.dial_errors)
        self.calls_ok = max(0, self.placed - len(failed))
        if self.dial_errors:
            bad["dial"] = self.dial_errors
        if self.desk[1] or self.carrier[1]:
            bad["sipp"] = [f"failed calls: desk {self.desk[1]}, carrier {self.carrier[1]}"]
        for what, items in bad.items():
            self.problems.append(f"{what}: {len(items)} ({'; '.join(items[:3])})")


def check_recordings(recordings, bad: dict[str, list[str]]) -> tuple[int, list]:
    """Check (call, path, seconds) recordings in two processes: (how many
    passed, (start, end) of each readable one from its length and mtime)."""
    passed, intervals = 0, []
    with ProcessPoolExecutor(2) as pool:
        for call_id, problem, duration, mtime in pool.map(recording_check, recordings,
                                                          chunksize=8):
            if mtime:
                intervals.append((mtime - duration, mtime))
            if problem:
                bad.setdefault("recording", []).append(f"call {call_id}: {problem}")
            else:
                passed += 1
    return passed, intervals


class Bench:
    def __init__(self, workdir: Path, max_calls: int, min_rate: float = 12,
                 profile_dir: Path | None = None):
        self.min_rate = min_rate
        self.profile_dir = profile_dir
        self.workdir = workdir
        self.desks = [str(8001 + i) for i in range(max_calls)]
        h = PbxHarness(workdir, name=f"bench-cc{os.getpid()}", desk_extensions=self.desks)
        # 2 legs x (RTP + RTCP) per call, and some room
        span = 4 * max_calls + 100
        rtp = free_port(span=span + 1)
        rtp += rtp % 2
        h.settings = dataclasses.replace(h.settings, rtp_start=rtp, rtp_end=rtp + span - 1)
        self.h = h
        self.desk_port = free_port()
        self.env: BridgeEnv | None = None

    # -- the PBX, bare or KHHF's -------------------------------------------------
    @contextlib.contextmanager
    def pbx(self, bare: bool):
        """The PBX up (bare: BarePbx) with every desk phone registered."""
        self.h.pbx = (BarePbx if bare else pbx.Pbx)(self.h.settings, self.desks)
        self.h.parties = []
        with self.h:
            started = time.monotonic()
            self.register_desks()
            print(f"{'bare' if bare else 'KHHF'} Asterisk: registered {len(self.desks)} desk "
                  f"phones in {time.monotonic() - started:.0f} s", file=sys.stderr)
            yield

    @contextlib.contextmanager
    def khhf(self, database_url: str, in_process: bool = False):
        """The bridge and command channel on a fresh database (inside
        pbx(False)): its own process, `python -m ami_bridge` as deployed, or
        (in_process) a thread of this one, sharing its GIL with the dialers."""
        self.env = env = BridgeEnv(self.h, self.workdir, database_url)
        self.bridge_proc = None
        try:
            add_managers(env, self.desks)
            if in_process:
                env.start()
            else:
                self.bridge_proc = self.start_bridge_process(env.settings)
            yield
        finally:
            if self.bridge_proc is not None:
                self.bridge_proc.terminate()
                self.bridge_proc.wait(30)
            else:
                env.stop()
            self.env = None

    def start_bridge_process(self, settings) -> subprocess.Popen:
        """`python -m ami_bridge` with BridgeEnv's settings (the config file
        plus KHHF_* overrides); its log in bridge-<database>.log."""
        overrides = {name: getattr(settings, name) for name in (
            "database_url", "bridge_port", "calling_window", "manager_ring_seconds",
            "customer_ring_seconds", "reconcile_seconds")}
        environ = {**os.environ, **{f"KHHF_{k.upper()}": str(v) for k, v in overrides.items()}}
        self.bridge_log = self.workdir / f"bridge-{settings.database_url.split(':')[0]}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "ami_bridge", "--config", str(settings.config_path)],
            env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.bridge_log, "ab"))  # noqa: SIM115 - the child holds it
        deadline = time.monotonic() + 30
        while True:
            try:
                bridge_client.live(settings, timeout=2)
                return proc
            except Exception:  # noqa: BLE001 - not up yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the bridge did not start: see {self.bridge_log}") from None
                time.sleep(0.2)

    def bridge_overruns(self) -> int:
        """Reconciler passes skipped so far (the bridge process's log)."""
        if self.bridge_proc is None:
            return SKIPPED.count
        try:
            return self.bridge_log.read_text(errors="replace").count("skipped: maximum")
        except OSError:
            return 0

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

    def parties(self, result: Level):
        """The answering desk SIPp and the carrier SIPp for one level."""
        # SIPp gives up on calls still open a minute after the last should end
        limit = f"{int(result.n / self.min_rate + result.talk_s + 60)}s"
        desk = self.h.party("answer.xml", local_ip="127.0.0.1", port=self.desk_port,
                            calls=result.n, run_limit=limit).start()
        carrier = self.h.trunk("answer_hangup.xml", duration_ms=int(result.talk_s * 1000),
                               calls=result.n, run_limit=limit)
        return desk, carrier

    def new_level(self, mode: str, n: int, rate: float) -> Level:
        # every call must still be up when the last one is dialed: the dial
        # path rarely keeps up with --rate on SQLite, so assume --min-rate
        return Level(mode, n, talk_s=round(n / min(rate, self.min_rate) + 8, 1),
                     load=os.getloadavg()[0])

    def wait_parties(self, result: Level, desk, carrier) -> None:
        for party in (carrier, desk):
            try:
                party.wait(result.talk_s + 90)
            except AssertionError as exc:
                result.problems.append(str(exc).split(";")[0])
        result.desk, result.carrier = sipp_counts(desk), sipp_counts(carrier)

    # -- bare Asterisk -------------------------------------------------------------
    def bare_level(self, n: int, rate: float) -> Level:
        """N calls originated straight over AMI into BARE_DIALPLAN."""
        result = self.new_level("bare", n, rate)
        desk, carrier = self.parties(result)
        profiler = Profiler(self.profile_dir, f"bare-{n}", self.h.pbx.pid(), result.talk_s)
        sampler = Sampler({"asterisk": [self.h.pbx.pid()],
                           "sipp": [desk.proc.pid, carrier.proc.pid]})
        sampler.start()
        files = [f"bare/{n}/{i}.wav" for i in range(n)]
        t0 = time.monotonic()
        asyncio.run(self.originate_bare(files, rate, result))
        result.dial_rate = n / (time.monotonic() - t0)
        self.wait_parties(result, desk, carrier)
        result.cpu = sampler.stop()
        profiler.wait()
        bad: dict[str, list[str]] = {}
        recordings = [(i, str(self.h.settings.recordings_dir / f), result.talk_s)
                      for i, f in enumerate(files)]
        result.audio_ok, intervals = check_recordings(recordings, bad)
        result.rows_ok = result.audio_ok  # bare Asterisk has no rows: its calls are its WAVs
        result.peak = peak_overlap(intervals)
        result.collect(bad)
        return result

    async def originate_bare(self, files: list[str], rate: float, result: Level) -> None:
        s = self.h.settings
        ami = AmiClient(s.ami_host, s.ami_port, s.ami_user, s.require("ami_secret"),
                        event_mask="off")
        await ami.connect()
        t0 = time.monotonic()

        async def originate(i: int) -> None:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            ext = self.desks[i]
            try:
                first, _rest = await ami.send_tracked({
                    "Action": "Originate", "Channel": f"PJSIP/{ext}",
                    "Context": "bare-outbound", "Exten": f"139{len(files) % 1000:03d}{i:05d}",
                    "Priority": "1", "Timeout": "30000", "Async": "true",
                    "Variable": f"BARE_REC={files[i]}"}, timeout=30)
                if not first.success:
                    result.dial_errors.append(f"{ext}: {first.get('Message')}")
            except Exception as exc:  # noqa: BLE001 - a refused dial is a result
                result.dial_errors.append(f"{ext}: {exc.__class__.__name__} {exc}")
        try:
            await asyncio.gather(*(originate(i) for i in range(len(files))))
        finally:
            ami.close()

    # -- KHHF ----------------------------------------------------------------------
    def level(self, n: int, rate: float) -> Level:
        env = self.env
        assert env is not None, "level() runs inside khhf()"
        result = self.new_level(env.engine.dialect.name, n, rate)
        skipped_before = self.bridge_overruns()
        # the tasks exist before anyone clicks: a dial is what the web UI does
        tasks = [env.task_for(ext, f"139{n % 1000:03d}{i:05d}")
                 for i, ext in enumerate(self.desks[:n])]
        tap = AmiTapThread(self.h.settings)
        desk, carrier = self.parties(result)
        call_ids: list[int] = []
        pids: dict[str, list[int | None]] = {"asterisk": [self.h.pbx.pid()],
                                             "sipp": [desk.proc.pid, carrier.proc.pid]}
        if self.bridge_proc is not None:
            pids["bridge"] = [self.bridge_proc.pid]
        sampler = KhhfSampler(env, pids, call_ids)
        sampler.start()
        profiler = Profiler(self.profile_dir, f"{result.mode}-{n}", self.h.pbx.pid(),
                            result.talk_s, self.bridge_proc.pid if self.bridge_proc else None)
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
        self.wait_parties(result, desk, carrier)
        # rows final with their recordings filled in (the reconciler, every second)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with env.sessions() as s:
                pending = s.scalar(select(func.count()).select_from(Call).where(
                    Call.id.in_(call_ids),
                    Call.state.not_in(FINAL_STATES) | (
                        (Call.outcome == "answered") & Call.recording_sha256.is_(None))))
            if not pending:
                break
            time.sleep(0.25)
        result.cpu = sampler.stop()
        profiler.wait()
        result.max_queue = sampler.max_queue
        sent = events_by_call(tap.stop())
        self.check(result, call_ids, sent, sampler.final_seen)
        result.reconcile_skipped = self.bridge_overruns() - skipped_before
        return result

    def dial(self, ext: str, task_id: int) -> int:
        """The web UI's dial (webui/calls.py): ask the bridge whether the
        manager is busy, then the dialing service writes the row in one
        short unit of work, then the bridge originates. (Until issue 21's
        pool fix this asked the bridge inside the unit of work, holding
        SQLite's write lock for the round trip.) A database busy past its
        bounded wait is what the web answers 503."""
        env = self.env
        assert env is not None
        live = bridge_client.live(env.settings)
        try:
            with db.unit_of_work(env.sessions) as s:
                user = s.scalar(select(User).where(User.username == f"m{ext}"))
                call_id = request_call(s, env.settings, user, task_id, live=live).id
        except DBAPIError as exc:
            if db.is_busy(exc):
                raise RuntimeError("503 busy: the database stayed locked past the "
                                   "bounded wait") from None
            raise
        bridge_client.dial(env.settings, call_id)
        return call_id

    def check(self, result: Level, call_ids, sent, final_seen) -> None:
        env = self.env
        assert env is not None
        bad: dict[str, list[str]] = {}
        recordings = []
        intervals = []
        with env.sessions() as s:
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
            # the talk: customer's answer -> customer's hang-up; the manager's leg
            # goes on after it (the keypad result) until end_at
            talk = call.talk_seconds if call.talk_seconds is not None else (
                end - answer if answer and end else None)
            if answer and talk is not None:
                intervals.append((answer, answer + talk))
            if end and call.id in final_seen:
                result.lag.append(final_seen[call.id] - end)
            if call.recording_path and talk is not None:
                recordings.append((call.id, str(env.settings.recordings_dir
                                                 / call.recording_path), talk))
            else:
                bad.setdefault("no recording", []).append(f"call {call.id}")
            ours = sent.get(call.linkedid, set())
            result.events_sent += len(ours)
            result.events_stored += len(ours & stored.get(call.id, set()))
            if ours - stored.get(call.id, set()):
                result.events_missing.add(call.id)
            if not ours:
                bad.setdefault("tap", []).append(f"call {call.id}: no AMI events seen")
        result.audio_ok, _ = check_recordings(recordings, bad)
        result.peak = peak_overlap(intervals)
        if result.events_stored < result.events_sent:
            bad["events"] = [f"{result.events_sent - result.events_stored} AMI events not stored"]
        result.collect(bad)


def run_levels(label: str, levels: list[int], run, results: list[Level], deadline: float,
               min_rate: float, rate: float) -> None:
    """Run `run(n)` level by level until one fails or the budget is spent."""
    for n in levels:
        expected = n / min(rate, min_rate) + 8 + 30
        if time.monotonic() + expected > deadline:
            print(f"{label}: stopping before {n} calls: time budget", file=sys.stderr)
            return
        print(f"{label} level {n} (load {os.getloadavg()[0]:.1f}) ...", file=sys.stderr)
        result = run(n)
        results.append(result)
        print(f"{label} level {n}: {'ok' if result.ok else result.problems}", file=sys.stderr)
        if not result.ok:
            return


def highest(results: list[Level], mode: str) -> int:
    return max((r.n for r in results if r.mode == mode and r.ok), default=0)


def print_table(results: list[Level]) -> None:
    print("mode | calls | load | talk s | dial/s | peak up | SIPp desk ok/fail | "
          "carrier ok/fail | rows ok | audio ok | AMI events stored/sent | "
          "Asterisk CPU % avg/peak | SIPp CPU % avg/peak | bridge CPU % avg/peak | "
          "bench CPU % avg/peak | PostgreSQL CPU % avg/peak | max queue | lag p50/max s | "
          "reconciler overruns | calls passing every check | result")
    print(" | ".join(["---"] * 21))
    for r in results:
        lag = f"{statistics.median(r.lag):.2f}/{max(r.lag):.2f}" if r.lag else "-"
        cpu = {name: "{:.0f}/{:.0f}".format(*r.cpu[name]) if name in r.cpu else "-"
               for name in ("asterisk", "sipp", "bridge", "bench", "database")}
        if r.mode != "postgresql":
            cpu["database"] = "-"
        khhf = r.mode != "bare"
        print(f"{r.mode} | {r.n} | {r.load:.1f} | {r.talk_s:g} | {r.dial_rate:.1f} | {r.peak} | "
              f"{r.desk[0]}/{r.desk[1]} | {r.carrier[0]}/{r.carrier[1]} | "
              f"{f'{r.rows_ok}/{r.n}' if khhf else '-'} | {r.audio_ok}/{r.n} | "
              f"{f'{r.events_stored}/{r.events_sent}' if khhf else '-'} | {cpu['asterisk']} | "
              f"{cpu['sipp']} | {cpu['bridge']} | {cpu['bench']} | {cpu['database']} | "
              f"{r.max_queue if khhf and r.max_queue else '-'} | {lag} | "
              f"{r.reconcile_skipped if khhf else '-'} | {r.calls_ok}/{r.n} | "
              f"{'ok' if r.ok else 'FAIL'}")
    for r in results:
        for problem in r.problems:
            print(f"{r.mode} {r.n} calls: {problem}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.concurrency",
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"one level of {QUICK_LEVEL} calls, bare and KHHF (under 5 minutes)")
    p.add_argument("--levels", default="100,150,200,250,300,360", help="KHHF's levels, raised until one fails")
    p.add_argument("--bare-levels", default="100,150,200,250,300,360,420",
                   help="bare Asterisk's levels, raised until one fails")
    p.add_argument("--rate", type=float, default=40, help="new calls per second")
    p.add_argument("--budget", type=float, default=1500,
                   help="seconds; no new level after it")
    p.add_argument("--db", default=None, choices=("sqlite", "postgresql", "both"),
                   help="KHHF's database (default: both; sqlite with --quick)")
    p.add_argument("--pg-url", default=os.environ.get("KHHF_TEST_PG_URL"))
    p.add_argument("--min-rate", type=float, default=12,
                   help="dial rate assumed when choosing the talk time")
    p.add_argument("--in-process", action="store_true",
                   help="the bridge in a thread of the bench (before issue 21), not its own process")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="perf record Asterisk and py-spy this process at each level, into DIR")
    args = p.parse_args(argv)
    # a SIGTERM unwinds the context managers: Asterisk, the bridge, SIPp stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.levels = args.bare_levels = str(QUICK_LEVEL)
    db_choice = args.db or ("sqlite" if args.quick else "both")
    engines = ["sqlite", "postgresql"] if db_choice == "both" else [db_choice]
    for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
        logging.getLogger(name).addFilter(SKIPPED)
    levels = [int(x) for x in args.levels.split(",")]
    bare_levels = [int(x) for x in args.bare_levels.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="khhf-bench-cc-"))
    deadline = time.monotonic() + args.budget
    results: list[Level] = []
    bench = Bench(workdir, max(levels + bare_levels), args.min_rate, args.profile)
    with bench.pbx(bare=True):
        run_levels("bare", bare_levels, lambda n: bench.bare_level(n, args.rate), results,
                   deadline, args.min_rate, args.rate)
    with bench.pbx(bare=False):
        for label in engines:
            with database(label, workdir, args.pg_url) as engine, bench.khhf(db_url(engine), args.in_process):
                run_levels(label, levels, lambda n: bench.level(n, args.rate), results,
                           deadline, args.min_rate, args.rate)
    print(f"concurrency: recorded calls through SIPp desk + carrier (RTP both sides) and "
          f"Asterisk; bare (minimal dialplan, no CEL/CDR/AMI listener) vs KHHF (shipped "
          f"config, the bridge on {'/'.join(engines)}); dialed at up to {args.rate:g} calls/s; "
          f"{os.cpu_count()} cores; work dir {workdir}")
    print_table(results)
    bare = highest(results, "bare")
    def ratio(a: int, b: int) -> str:
        return f"{a}/{b} ({a / b:.2f})" if b else f"{a}/{b} (-)"
    ratios = [f"{label}={ratio(highest(results, label), bare)}" for label in engines]
    # and, less coarse on a busy host: calls passing every check at the
    # highest level both ran, KHHF's over bare Asterisk's
    for label in engines:
        both = {r.n: r for r in results if r.mode == "bare"}
        common = [r for r in results if r.mode == label and r.n in both]
        if common:
            r = common[-1]
            ok = both[r.n].calls_ok
            ratios.append(f"passing@{r.n} {label}={ratio(r.calls_ok, ok)}")
    print(f"concurrency khhf:bare {' '.join(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
