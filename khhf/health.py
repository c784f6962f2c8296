"""Is the running system healthy? One place that says, for `GET /healthz`
(webui/health.py) and `khhf status` (khhfcli/status.py).

Each check is a small function returning a `Check`: its name, whether it is
ok, a detail fit for anyone to read (no personal data: counts, times,
states) and, when not ok, what to do. What they look at:

- each daemon (agi, bridge, web, smsgw, jobs): its heartbeat file
  (khhf.daemon.Heartbeat), written every few seconds from the loop that
  does its work and removed when it stops. A heartbeat says more than an
  open port: a process whose loop hangs keeps its port but stops beating.
  No file, a dead pid or a beat older than STALE_BEATS intervals is "not
  running". The bridge and the web UI also must accept a connection on
  their port (the AGI service is left alone: a probe would be a junk
  FastAGI request in its log);
- the PBX: Asterisk's manager interface answers with its banner (a plain
  socket: independent of the bridge), and the bridge's heartbeat says how
  many desk phones are registered;
- the bridge's lag behind Asterisk: the age of the oldest AMI event it has
  received but not yet stored (from its heartbeat);
- the SMS outbox (queued and unknown messages: one indexed count) and the
  SMSC link (the gateway's heartbeat says bound or not);
- the jobs daemon's last run of each job (from its heartbeat): red when a
  job failed JOB_FAILURES_RED runs in a row;
- where and when each cluster-once job last ran, on whichever node (its
  lease, khhf.leases; the campaign rounds as their newest): shown, never
  red (a failure turns that node's job_runs red);
- the database: reachable, with KHHF's tables, at head (database_at_head),
  and (SQLite) its write lock not held by another process;
- free disk for recordings (recordings_min_free_mb);
- the carrier trunk (khhf.services.trunk): the PBX's qualify of it, from
  the bridge's heartbeat, and the last calls through it;
- behind the SIP edge, the PBX nodes (khhf.services.nodes): each one's
  last beat, its calls, and the nodes lost.

No check writes, and none reads more than a few rows: /healthz is public.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import socket
import sqlite3
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from khhf import db, leases, migrations
from khhf.config import Settings
from khhf.daemon import run_dir
from khhf.models import SmsMessage, SmsStatus, utcnow
from khhf.services import nodes, trunk

DAEMONS = ("agi", "bridge", "web", "smsgw", "jobs")
# a heartbeat this many intervals old is stale: the daemon is not working
STALE_BEATS = 3
# the bridge is "behind" when an event waits longer than this to be stored
BRIDGE_MAX_LAG_SECONDS = 30.0
PROBE_TIMEOUT = 2.0
# a job that failed this many runs in a row turns job_runs red
JOB_FAILURES_RED = 2
# what systemd calls each daemon (khhfcli/systemd/)
UNIT = {"agi": "khhf-agi", "bridge": "khhf-bridge", "web": "khhf-web", "smsgw": "khhf-smsgw",
        "jobs": "khhf-jobs", "pbx": "khhf-pbx"}


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    todo: str = ""   # what to do, when not ok

    def as_dict(self) -> dict:
        data = {"name": self.name, "ok": self.ok, "detail": self.detail}
        if not self.ok:
            data["todo"] = self.todo
        return data


def _start(name: str) -> str:
    return f"start it: `systemctl start {UNIT[name]}` (its log: `journalctl -u {UNIT[name]}`)"


def _parse(moment: str | None) -> dt.datetime | None:
    if moment is None:
        return None
    try:
        return dt.datetime.strptime(moment, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except (TypeError, ValueError):
        return None


def _local(settings: Settings, moment: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    parsed = _parse(moment)
    return "?" if parsed is None else f"{settings.local(parsed.replace(tzinfo=None)):{fmt}}"


def pid_alive(pid) -> bool:
    """True if process `pid` exists and is not a zombie."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True   # no /proc: signal 0 is all we can ask
    return stat.rpartition(")")[2].split()[0] != "Z"


def read_beat(settings: Settings, name: str) -> dict | None:
    """The daemon's last heartbeat record, or None if it has none."""
    try:
        beat = json.loads((run_dir(settings) / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return beat if isinstance(beat, dict) else None


def beat_problem(beat: dict | None, now: dt.datetime | None = None) -> str | None:
    """Why this heartbeat does not show a working daemon (None: it does)."""
    if beat is None:
        return "not running (no heartbeat)"
    if not pid_alive(beat.get("pid")):
        return f"not running (its process {beat.get('pid')} is gone)"
    at = _parse(beat.get("beat_at"))
    now = now or dt.datetime.now(dt.timezone.utc)
    interval = float(beat.get("interval") or 5)
    if at is None or (now - at).total_seconds() > STALE_BEATS * interval:
        age = "?" if at is None else f"{(now - at).total_seconds():.0f}"
        return f"not responding (last heartbeat {age} s ago)"
    return None


def live_state(settings: Settings, name: str) -> dict | None:
    """The state in the daemon's heartbeat if the daemon is working, else None."""
    beat = read_beat(settings, name)
    return None if beat is None or beat_problem(beat) else beat.get("state", {})


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), PROBE_TIMEOUT).close()
        return True
    except OSError:
        return False


# -- the daemons -------------------------------------------------------------------------
def check_daemon(settings: Settings, name: str, serving: bool = False) -> Check:
    """Daemon `name` up and since when. `serving`: this process is that
    daemon, answering now (the web UI asking about itself)."""
    beat = read_beat(settings, name)
    problem = None if serving else beat_problem(beat)
    if problem:
        return Check(name, False, problem, _start(name))
    beat = beat or {}
    detail = (f"up since {_local(settings, beat.get('started_at'))} "
              f"(pid {beat.get('pid', os.getpid())})")
    port = {"bridge": (settings.bridge_host, settings.bridge_port),
            "web": (settings.web_host, settings.web_port)}.get(name)
    if port and not serving and not _accepts(*port):
        return Check(name, False, f"{detail}, but not accepting connections on its port",
                     f"restart it: `systemctl restart {UNIT[name]}`; see "
                     f"`journalctl -u {UNIT[name]}`")
    if name == "bridge" and not (beat.get("state") or {}).get("ami"):
        return Check(name, False, f"{detail}, but not logged in to the PBX's manager "
                     f"interface", "see the pbx check; if the PBX runs, "
                     "`journalctl -u khhf-bridge` says why the bridge cannot log in")
    return Check(name, True, detail)


# -- the PBX and the bridge ----------------------------------------------------------------
def ami_banner(settings: Settings) -> str | None:
    """The first line Asterisk's manager interface sends ("Asterisk Call
    Manager/..."), or None when nothing answers like it."""
    try:
        with socket.create_connection((settings.ami_host, settings.ami_port),
                                      PROBE_TIMEOUT) as sock:
            sock.settimeout(PROBE_TIMEOUT)
            data = b""
            while b"\n" not in data and len(data) < 200:
                chunk = sock.recv(200)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    return line if line.startswith("Asterisk Call Manager") else None


def check_pbx(settings: Settings) -> Check:
    """The PBX reachable over AMI, not shutting down (as the bridge last
    heard it), and how many desk phones are registered."""
    if ami_banner(settings) is None:
        return Check("pbx", False, "the PBX's manager interface does not answer",
                     "start the PBX: `systemctl start khhf-pbx` (or `khhf pbx up`); its "
                     "log: `journalctl -u khhf-pbx`")
    bridge = live_state(settings, "bridge") or {}
    if bridge.get("pbx_shutting_down"):
        return Check("pbx", False, "Asterisk is shutting down gracefully: the calls in progress "
                                   "go on, new calls are refused until it is back",
                     "wait: it restarts (or stops) by itself when the last call in "
                     "progress ends (`khhf pbx status`)")
    phones = bridge.get("desk_phones") if bridge.get("ami") else None
    if phones is None:
        return Check("pbx", True, "Asterisk answers; desk phones registered: unknown "
                                  "(the bridge is not connected)")
    return Check("pbx", True, f"Asterisk answers; desk phones registered: {phones[0]} "
                              f"of {phones[1]}")


def check_bridge_lag(settings: Settings) -> Check:
    """How far the bridge's stored call events are behind Asterisk."""
    state = live_state(settings, "bridge")
    if state is None:
        return Check("bridge_lag", False, "unknown: the bridge is not running",
                     "see the bridge check")
    lag, queued = float(state.get("lag_seconds") or 0), int(state.get("queued") or 0)
    last = state.get("last_event_at")
    detail = (f"{lag:.1f} s behind Asterisk, {queued} events waiting; last event stored "
              f"{_local(settings, last) if last else 'none yet'}")
    if lag > BRIDGE_MAX_LAG_SECONDS:
        return Check("bridge_lag", False, detail,
                     "the database is slow or locked: see `journalctl -u khhf-bridge` and "
                     "the database check")
    return Check("bridge_lag", True, detail)


def trunk_contact_status(settings: Settings) -> str | None:
    """The trunk's contact status (qualify) as the working bridge last heard it (None: unknown)."""
    state = live_state(settings, "bridge") or {}
    return state.get("trunk") if state.get("ami") else None


def check_trunk(settings: Settings, engine: Engine) -> Check:
    """The carrier trunk up, as the PBX's qualify and the last calls say."""
    pbx_state = trunk_contact_status(settings)
    with db.session_factory(engine)() as session:
        found = trunk.status(session, settings, pbx_state)
    asked = "not asked (trunk_qualify_seconds = 0)" if settings.trunk_qualify_seconds <= 0 \
        else "unknown" if pbx_state is None else \
        "no answer" if found.pbx_says_down else "answers"
    detail = f"OPTIONS: {asked}; last calls failed by the carrier in a row: {found.failures}"
    if found.sip_code:
        detail += f" (last SIP {found.sip_code})"
    if not found.down:
        return Check("trunk", True, f"up; {detail}")
    since = f" since {settings.local(found.since):%H:%M:%S}" if found.since else ""
    what = "the carrier does not answer" if found.state == trunk.TrunkState.UNREACHABLE \
        else "the carrier refuses calls"
    return Check("trunk", False, f"down{since}: {what}; {detail}",
                 "calls to customers fail and progressive dial is paused: call the carrier; "
                 "check trunk_host and trunk_port in the config and the network; it clears "
                 "by itself when the carrier answers again")


# -- the cluster's nodes --------------------------------------------------------------------
def check_nodes(engine: Engine) -> Check:
    """Behind the SIP edge: every PBX node beating (khhf.services.nodes)."""
    with db.session_factory(engine)() as session:
        lines = nodes.describe(session, addresses=False)
        lost = [node.name for node in nodes.lost_nodes(session)]
    if not lines:
        return Check("pbx_nodes", False, "no PBX node has beaten yet",
                     "start a node: `khhf pbx up` and its bridge (`systemctl start khhf-bridge`)")
    detail = "; ".join(lines)
    if lost:
        return Check("pbx_nodes", False, detail,
                     f"start {', '.join(lost)} again (`khhf pbx up` and `systemctl start "
                     "khhf-bridge` there): its calls were closed as lost, and its bridge "
                     "completes them from its CEL record when it is back")
    return Check("pbx_nodes", True, detail)


# -- SMS ------------------------------------------------------------------------------------
def check_sms_outbox(engine: Engine) -> Check:
    """Outbound messages waiting (queued) and those whose fate is unknown."""
    with engine.connect() as conn:
        counts = dict(conn.execute(
            select(SmsMessage.status, func.count()).where(
                SmsMessage.direction == "out",
                SmsMessage.status.in_((SmsStatus.QUEUED, SmsStatus.UNKNOWN)))
            .group_by(SmsMessage.status)).all())
    queued, unknown = counts.get(SmsStatus.QUEUED, 0), counts.get(SmsStatus.UNKNOWN, 0)
    detail = f"{queued} queued, {unknown} unknown"
    if unknown:
        return Check("sms_outbox", False, detail,
                     "messages whose submit was not answered are never resent by themselves: "
                     "check with the SMSC, then `khhf sms requeue ID` (`khhf sms outbox` "
                     "lists them)")
    return Check("sms_outbox", True, detail)


def check_smsc(settings: Settings) -> Check:
    """The SMS gateway's link to the SMSC."""
    if not settings.smsc_host:
        return Check("smsc", True, "no SMSC configured: SMS stay in the database "
                                   "(web UI: SMS; `khhf sms outbox`)")
    state = live_state(settings, "smsgw")
    if state is None:
        return Check("smsc", False, "unknown: the SMS gateway is not running",
                     "see the smsgw check")
    since = _local(settings, state.get("smsc_since"))
    if state.get("smsc") == "bound":
        return Check("smsc", True, f"bound since {since}")
    return Check("smsc", False, f"not bound since {since}",
                 "check that the SMSC is up and smsc_host, smsc_port, smsc_system_id and "
                 "smsc_password are right; the gateway retries by itself "
                 "(`journalctl -u khhf-smsgw`)")


# -- timed jobs -----------------------------------------------------------------------------
def check_job_runs(settings: Settings) -> Check:
    """The jobs daemon's last run of each job, and whether it failed."""
    state = live_state(settings, "jobs")
    if state is None:
        return Check("job_runs", False, "unknown: the jobs daemon is not running",
                     "see the jobs check")
    runs = state.get("runs") or {}
    if not runs:
        return Check("job_runs", True, "no job has run yet")
    detail = ", ".join(f"{job} {_local(settings, run.get('at'), '%m-%d %H:%M:%S')}"
                       + ("" if run.get("ok") else " FAILED") for job, run in sorted(runs.items()))
    # one failed run is often the database restarting; the job runs again by
    # itself. Failing again and again needs someone.
    failed = sorted(job for job, run in runs.items()
                    if int(run.get("failures") or 0) >= JOB_FAILURES_RED)
    if failed:
        return Check("job_runs", False, detail,
                     f"{', '.join(failed)} failed {JOB_FAILURES_RED} or more times in a "
                     "row: see `journalctl -u khhf-jobs`")
    return Check("job_runs", True, detail)


def check_cluster_jobs(settings: Settings, engine: Engine) -> Check:
    """Where and when each cluster-once job last ran (khhf.leases)."""
    rows = leases.last_runs(engine)
    if not rows:
        return Check("cluster_jobs", True, "none has run yet")
    now, parts = utcnow(), []
    for row in rows:
        when = _local(settings, f"{row.started_at:%Y-%m-%dT%H:%M:%SZ}", "%m-%d %H:%M:%S")
        if row.finished_at is not None:
            how = "ok" if row.ok else "FAILED"
        elif row.expires_at is not None and row.expires_at > now:
            how = "running"
        else:
            how = "stopped unfinished"
        name = f"campaign-rounds ({row.name})" if row.name.startswith("campaign-") else row.name
        parts.append(f"{name} on {row.node} {when} {how}")
    return Check("cluster_jobs", True, ", ".join(parts))


# -- the database ---------------------------------------------------------------------------
def database_at_head(engine: Engine) -> tuple[bool, str]:
    """Whether the database is at the newest revision (khhf.migrations),
    with the revision or, when not, what is wrong."""
    message = migrations.problem(engine)
    if message:
        return False, message
    return True, f"revision {migrations.head()}"


def health_engine(settings: Settings) -> Engine:
    """An engine for the checks: a short connect timeout (a database host
    that does not answer must not hang /healthz), a connection tested
    before use."""
    # no pool: a connection per pass (every few seconds at most), none left open
    kwargs: dict[str, object] = {"poolclass": NullPool}
    if settings.database_url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": int(PROBE_TIMEOUT) + 1}
    return db.make_engine(settings.database_url, **kwargs)


def sqlite_write_locked(engine: Engine) -> bool:
    """True if another connection has held SQLite's write lock for over
    PROBE_TIMEOUT: every write waits, and after the busy timeout fails. Takes
    the lock (BEGIN IMMEDIATE) and gives it back at once; writes nothing."""
    raw = engine.raw_connection()
    try:
        driver = raw.driver_connection
        assert driver is not None  # a live checkout always has one
        cur = driver.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(PROBE_TIMEOUT * 1000)}")
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # "database is locked" after the timeout
            return True
        cur.execute("ROLLBACK")
        return False
    finally:
        raw.close()


def check_database(engine: Engine) -> Check:
    """The database reachable, with KHHF's tables, at head."""
    todo = ("start the database server (PostgreSQL: `systemctl start postgresql`) or fix "
            "database_url in the config")
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if path and path != ":memory:" and not Path(path).is_file():
            # connecting would create an empty file where the database should be
            return Check("database", False, "the SQLite database file is missing",
                         "put the database file back (or restore a backup: "
                         "`khhf backup restore`)")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        if not db.has_schema(engine):
            return Check("database", False, "reachable, but it has no KHHF tables",
                         "run `khhf init`")
        at_head, why = database_at_head(engine)
        locked = engine.dialect.name == "sqlite" and sqlite_write_locked(engine)
    except SQLAlchemyError as exc:
        return Check("database", False, f"not reachable ({type(getattr(exc, 'orig', exc)).__name__})",
                     todo)
    if not at_head:
        return Check("database", False, f"reachable, not at head: {why}",
                     "run `khhf db upgrade`")
    if locked:
        return Check("database", False, f"locked: another process has held its write lock "
                     f"for over {PROBE_TIMEOUT:.0f} s, so nothing can be saved",
                     f"find the process that holds it (`fuser -v {engine.url.database}`) "
                     "and end its transaction")
    return Check("database", True, f"reachable ({engine.dialect.name}), at head: {why}")


# -- disk -----------------------------------------------------------------------------------
def check_disk(settings: Settings) -> Check:
    """Free space where the recordings go, against recordings_min_free_mb."""
    path = Path(settings.recordings_dir)
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    percent = 100 * usage.free // usage.total if usage.total else 0
    detail = f"{_mb(usage.free)} ({percent}%) free of {_mb(usage.total)} for recordings"
    if usage.free < settings.recordings_min_free_mb * 2**20:
        return Check("disk", False, f"{detail}, below {settings.recordings_min_free_mb} MB",
                     "free space on that disk, or set recording_retention_days so the jobs "
                     "daemon deletes old recordings")
    return Check("disk", True, detail)


def _mb(size: int) -> str:
    """Bytes as MB: whole above 10 MB, else with a tenth (a nearly full disk)."""
    mb = size / 2**20
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.1f} MB"


# -- all of them ----------------------------------------------------------------------------
def gather(settings: Settings, engine: Engine, serving: str | None = None) -> list[Check]:
    """Every check, in a fixed order. `serving`: the daemon this process is."""
    checks = [check_daemon(settings, name, serving=name == serving) for name in DAEMONS]
    checks += [check_pbx(settings), check_bridge_lag(settings)]
    database = check_database(engine)
    checks.append(_reading(database, "sms_outbox", lambda: check_sms_outbox(engine)))
    checks.append(_reading(database, "trunk", lambda: check_trunk(settings, engine)))
    if nodes.in_cluster(settings):
        checks.append(_reading(database, "pbx_nodes", lambda: check_nodes(engine)))
    checks += [check_smsc(settings), check_job_runs(settings),
               _reading(database, "cluster_jobs", lambda: check_cluster_jobs(settings, engine)),
               database, check_disk(settings)]
    return checks


def _reading(database: Check, name: str, check) -> Check:
    """Check `name`, which reads the database, unless the database check failed."""
    if not database.ok:
        return Check(name, False, "unknown: the database is not reachable",
                     "see the database check")
    try:
        return check()
    except SQLAlchemyError as exc:
        return Check(name, False, f"not read ({type(exc).__name__})", "see the database check")


def report(checks: list[Check]) -> dict[str, object]:
    """The JSON /healthz answers with."""
    return {"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]}
