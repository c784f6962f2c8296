"""Drill 6 (issue 19): the jobs daemon killed (SIGKILL) in the middle of a
campaign round and in the middle of an SMS result-prompt burst.

The real parts: `python -m jobs` and `python -m smsgw` as processes on one
database (SQLite or PostgreSQL), the SMSC simulator (simkit/smsc.py) the
gateway binds to.

1. A weekly campaign whose round 1 is due, over thousands of customers
   (enough that the round's transaction takes seconds). The daemon starts;
   the drill waits until the round is in flight, seen from outside: the
   daemon said "making it" and holds the round's transaction open (SQLite:
   the write lock is taken; PostgreSQL: a backend holds a row lock on
   campaign_cycles), and nothing of the round is committed. SIGKILL. Then:
   nothing of the round may be there (no half round); restarted, the daemon
   makes it once: one campaign_cycles row, one task per customer, none
   twice, and round 2's job stored.
2. A hundred or more answered calls of ten managers, ended and waiting for
   their result prompt. The daemon starts, queues prompts in batches; the
   drill kills it when some but not all are queued. Restarted, it queues
   the rest; the gateway sends them; at the SMSC each manager's mobile got
   exactly one prompt per call, no text twice.

Every broken promise is a note on the row (so `violations()` lists it).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, insert, select, text

from khhf import config, db, health, local_time
from khhf.models import (
    Call,
    CampaignCycle,
    Customer,
    Manager,
    SmsKind,
    SmsMessage,
    SmsStatus,
    Task,
    TaskType,
    utcnow,
)
from khhf.services import campaigns
from simkit import factories
from simkit.drills import DrillRow
from simkit.smsc import SmscProcess

ROOT = Path(__file__).resolve().parents[2]
MANAGERS = 10


class _Daemon:
    """One `python -m <module>` process with its log."""

    def __init__(self, module: str, settings, workdir: Path, n: int):
        self.log = workdir / f"{module}-{n}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("KHHF_")}
        with self.log.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", module, "--config",
                                          str(settings.config_path)], cwd=ROOT, env=environ,
                                         stdout=subprocess.DEVNULL, stderr=err)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(60)
        return self.proc.returncode


def _wait(predicate, what: str, timeout: float = 120, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)
    return found


class _Drill:
    def __init__(self, short: bool, workdir: Path, database_url: str | None):
        self.workdir = workdir
        self.round_customers = 3000 if short else 50000
        self.prompt_calls = 100 if short else 2000
        url = database_url or f"sqlite:///{workdir / 'khhf.db'}"
        self.smsc = SmscProcess(workdir).start()
        self.settings = config.write_new(
            workdir / "khhf.conf", home=workdir, database_url=url, smsc_host="127.0.0.1",
            smsc_port=self.smsc.port, sms_prompt_delay_seconds=1, sms_rate_per_second=500,
            timezone="Asia/Shanghai")
        self.engine = db.make_engine(url)
        db.create_schema(self.engine)
        self.sessions = db.session_factory(self.engine)
        self.runs = 0
        self.notes: list[str] = []
        self.seen: list[str] = []

    def start(self, module: str = "jobs") -> _Daemon:
        self.runs += 1
        return _Daemon(module, self.settings, self.workdir, self.runs)

    def close(self) -> None:
        self.smsc.stop()
        self.engine.dispose()

    # -- 1. the round ------------------------------------------------------------------
    def seed_round(self) -> int:
        """A weekly campaign, active, whose round 1 is due today and not made."""
        today = local_time.today(self.settings.timezone)
        with db.unit_of_work(self.sessions) as s:
            campaigns.ensure_standard_types(s)
            county = factories.county(s, "drill6", "演练县")
            self.managers = [factories.manager(s, county, f"d6m{i}", mobile=f"1370006{i:04d}")
                             for i in range(MANAGERS)]
            s.execute(insert(Customer), [
                {"phone": f"1390{i:07d}", "name": f"客户{i}", "county_id": county.id,
                 "manager_id": self.managers[i % MANAGERS].id}
                for i in range(self.round_customers)])
            campaign = campaigns.create_campaign(
                s, None, "", county_id=county.id,
                task_type_id=s.scalar(select(TaskType.id).where(TaskType.code == "revisit")),
                name="演练周回访", cycle="weekly", starts_on=today)
            # activated yesterday, for a campaign starting today: no round yet
            campaigns.activate(s, None, "", campaign, today - dt.timedelta(days=1))
            self.county_id = county.id
            return campaign.id

    def round_rows(self, campaign_id: int) -> tuple[int, int, int]:
        """(rounds, tasks, customers with more than one task) of the campaign."""
        with self.sessions() as s:
            rounds = s.scalar(select(func.count()).select_from(CampaignCycle)
                              .where(CampaignCycle.campaign_id == campaign_id))
            made = s.scalar(select(func.count()).select_from(Task)
                            .where(Task.campaign_id == campaign_id))
            twice = s.scalar(select(func.count()).select_from(
                select(Task.customer_id).where(Task.campaign_id == campaign_id)
                .group_by(Task.customer_id).having(func.count() > 1).subquery()))
        return rounds, made, twice

    def round_in_flight(self) -> bool:
        """The round's transaction is open and not committed, seen from outside."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite":
            probe = sqlite3.connect(url.database, timeout=0, isolation_level=None)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                return False
            except sqlite3.OperationalError:  # "database is locked": a writer is at work
                return True
            finally:
                probe.close()
        with self.engine.connect() as conn:
            return bool(conn.scalar(text(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'campaign_cycles' AND l.mode = 'RowExclusiveLock' "
                "AND l.pid <> pg_backend_pid()")))

    def kill_mid_round(self) -> None:
        campaign_id = self.seed_round()
        daemon = self.start()
        try:
            _wait(lambda: "making it" in daemon.text() or daemon.proc.poll() is not None,
                  "the daemon to start the round")
            # held a moment: the round's long transaction, not a short write beside it
            _wait(lambda: self.round_rows(campaign_id)[0] or (
                self.round_in_flight() and time.sleep(0.3) is None and self.round_in_flight()),
                "the round's transaction", every=0.01)
        finally:
            daemon.kill()
        left = self.round_rows(campaign_id)
        if left[0]:
            self.notes.append(f"the kill came after round 1 committed ({left[1]} tasks): "
                              f"not a kill mid-round; make the round bigger")
        elif left[1]:
            self.notes.append(f"killed mid-round, {left[1]} tasks of it were left")
        else:
            self.seen.append(f"killed mid-round ({self.round_customers} tasks in hand): "
                             "nothing of it left")
        self.seen.append(_jobs_check(self.settings))
        daemon = self.start()
        try:
            _wait(lambda: self.round_rows(campaign_id)[0], "the restarted daemon's round")
            _wait(lambda: "stored round jobs: campaign-" in daemon.text(),
                  "round 2's job stored")
        finally:
            if daemon.stop() != 0:
                self.notes.append(f"the restarted daemon exited badly: {daemon.text()[-2000:]}")
        rounds, made, twice = self.round_rows(campaign_id)
        if (rounds, made, twice) != (1, self.round_customers, 0):
            self.notes.append(f"after the restart: {rounds} rounds, {made} tasks for "
                              f"{self.round_customers} customers, {twice} customers twice")
        else:
            self.seen.append(f"restarted: round 1 made once, {made} tasks, none twice")

    # -- 2. the prompt burst ------------------------------------------------------------------
    def seed_prompts(self) -> dict[str, int]:
        """Answered calls, ended, each of its own open task: {mobile: the
        prompts that manager's mobile must get}."""
        now = utcnow()
        due: Counter[str] = Counter()
        with db.unit_of_work(self.sessions) as s:
            revisit = s.scalar(select(TaskType).where(TaskType.code == "revisit"))
            managers = s.scalars(select(Manager).where(Manager.county_id == self.county_id)
                                 .order_by(Manager.id)).all()
            customers = s.scalars(select(Customer).where(Customer.county_id == self.county_id)
                                  .order_by(Customer.id).limit(self.prompt_calls)).all()
            for n, customer in enumerate(customers):
                manager = managers[n % len(managers)]
                task = factories.task(s, customer, manager, revisit)
                s.add(Call(direction="outbound", task_id=task.id, customer_id=customer.id,
                           manager_id=manager.id, county_id=self.county_id,
                           customer_number=customer.phone, state="ended", outcome="answered",
                           requested_at=now - dt.timedelta(seconds=40),
                           answer_at=now - dt.timedelta(seconds=30),
                           end_at=now - dt.timedelta(seconds=10), talk_seconds=20))
                due[manager.mobile] += 1
        return dict(due)

    def prompts(self) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(SmsMessage)
                            .where(SmsMessage.kind == SmsKind.PROMPT)) or 0

    def unsent(self) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(SmsMessage).where(
                SmsMessage.direction == "out",
                SmsMessage.status.not_in((SmsStatus.SENT, SmsStatus.FAILED)))) or 0

    def kill_mid_burst(self) -> tuple[int, bool]:
        due = self.seed_prompts()
        total = sum(due.values())
        gateway = self.start("smsgw")
        try:
            daemon = self.start()
            try:
                queued = _wait(lambda: self.prompts() or daemon.proc.poll() is not None,
                               "the first prompts queued", every=0.005)
            finally:
                daemon.kill()
            queued = self.prompts()
            if not 0 < queued < total:
                self.notes.append(f"the kill came with {queued} of {total} prompts queued: "
                                  "not a kill mid-burst")
            else:
                self.seen.append(f"killed mid-burst: {queued} of {total} prompts queued")
            daemon = self.start()
            try:
                _wait(lambda: self.prompts() >= total, "every prompt queued")
                _wait(lambda: not self.unsent(), "every prompt sent", timeout=300)
            finally:
                daemon.stop()
        finally:
            gateway.stop()
        got = self.smsc.texts()
        wrong = {mobile: len(got.get(mobile, ())) for mobile, n in due.items()
                 if len(got.get(mobile, ())) != n or len(set(got.get(mobile, ()))) != n}
        if self.prompts() != total:
            self.notes.append(f"{self.prompts()} prompt rows for {total} calls")
        if wrong:
            self.notes.append(f"prompts at the SMSC per mobile not one per call: {wrong}")
        else:
            self.seen.append(f"restarted: {total} prompts, each once at the SMSC")
        return total, not wrong


def _jobs_check(settings) -> str:
    """What `khhf status` and /healthz say of the jobs daemon right after the kill."""
    check = health.check_daemon(settings, "jobs")
    return f"khhf status: jobs {'ok' if check.ok else 'red'} ({check.detail})"


def jobs_killed(short: bool, workdir: Path | None = None,
                database_url: str | None = None) -> DrillRow:
    """Run drill 6; `short`: the test's sizes (a 3,000-task round, 100
    prompts), else the bench's (50,000 and 2,000)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="khhf-drill6-"))
    engine_name = "postgresql" if (database_url or "").startswith("postgresql") else "sqlite"
    row = DrillRow("6 jobs daemon killed", engine_name)
    began = time.monotonic()
    drill = _Drill(short, workdir, database_url)
    try:
        drill.kill_mid_round()
        row.sms_sent, row.sms_once = drill.kill_mid_burst()
    finally:
        drill.close()
    row.notes += drill.notes
    row.operator_saw = "; ".join(drill.seen)
    row.seconds = round(time.monotonic() - began, 1)
    return row
