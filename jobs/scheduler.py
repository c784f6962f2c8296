"""Campaign rounds on time, SMS result prompts and the recordings' retention:
APScheduler with a persistent job store for the rounds; the SMS result
prompts (khhf.services.sms_feedback) are an in-memory interval job whose
state is the database's, as is the retention job.

The job store is SQLAlchemyJobStore on the main database (table
apscheduler_jobs), so a job outlives the daemon: each round's job is
stored with its due moment (local midnight of the round's first day) and,
if the daemon was down then, it runs at the next start (misfire grace:
unlimited; coalesce: several missed runs run once). A small in-memory
"sync" job, at start and every minute, stores the job of each active
campaign's next round; nothing else (the web UI) needs to reach the
scheduler.

Several nodes, one database (docs/cluster.md): each node runs this
daemon, and every scheduled job is classified, here and only here, as
CLUSTER_ONCE or PER_NODE. A cluster-once job runs under a lease
(khhf.leases): of the nodes whose schedulers fire it, the one that takes
the lease runs it, once per period between them (the lease refuses a run
that starts within 0.9 periods of the last one), and the lease row says
where and when it last ran (`khhf status`). A node that finds the lease
held tries to take it over when it runs out: if the holder was killed
mid-run, it runs the job after the lease's expiry (the job's work is
idempotent, below); if the holder finished, it does nothing. A
frequent job (the SMS prompts, the webhooks) looks with a reader first and
takes its lease only when there is work, so an idle sweep writes nothing.
The nodes share APScheduler's job store, so each node's scheduler may
start a due round job; the round's lease makes it run on one (and a job
another node's scheduler removed first is no error here).

Killed (SIGKILL) at any moment, the daemon leaves nothing half done, and
started again it finishes the work once (drill 6, simkit/drills/jobs.py):
a round is one transaction (its row, its tasks, their assignment, the
audit entry), so a kill before the commit leaves no trace of it, and the
restarted sync stores its job again (APScheduler removed the stored job as
it started it) and runs it at once; the SMS prompts are queued in
transactions of PROMPT_BATCH, each prompt row unique per call, so a kill
mid-burst leaves whole batches queued and the next sweep queues the rest;
the gateway (smsgw), not this daemon, sends them, each once.

A round is never made twice: the job's id names the campaign and round
(`campaign-7-round-3`, one stored job per round), and the job itself is
idempotent (khhf.services.campaigns.create_round writes the round's
UNIQUE (campaign_id, seq) row first). Two daemons on one database, or one
restarted at the due moment, make the round once.

Recordings' retention: with `recording_retention_days` > 0, a job in the
memory store runs khhf.services.recordings.purge when the daemon starts
and every day at PURGE_AT (local time); a day missed while the daemon was
down is caught up by the next run, as the rule only looks at the calls'
ages.

Asterisk's log files (and, on the edge's machine, Kamailio's): every
hour, those over their size limit are rotated (khhf.log_files).

Webhooks: every WEBHOOK_SECONDS the due events of the outbox are sent
(khhf.webhooks.deliver_due: signed, retried with back-off); the outbox is
the database's, so a restarted daemon simply goes on.

Task distributions: every minute, a distribution run nobody has advanced
for distribution.STALE_AFTER (the web request or command writing it
stopped) is finished from where it stopped (khhf.services.distribution.
resume: each move written once).

Each job's last run (when, and whether it raised) is kept for the
daemon's heartbeat (khhf.health's job_runs check): `last_runs()`.

Backups: with `backup_dir` set, a job in the memory store writes an
archive there every day at `backup_time` (local; khhf.backup.timed), all
recordings included, and deletes all but the `backup_keep` newest of its
archives. A day missed while the daemon was down is not caught up: the
next day's backup holds everything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import threading

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from sqlalchemy import select
from sqlalchemy.engine import Engine

from khhf import backup, db, leases, local_time, log_files, webhooks
from khhf.config import Settings
from khhf.models import Campaign, utcnow
from khhf.services import campaigns, distribution, recordings, reports, sms_feedback

log = logging.getLogger("jobs")
# the scheduler looks at its job store again this soon after it could not
STORE_RETRY_SECONDS = 2.0
JOB_TABLE = "apscheduler_jobs"
# result prompts queued per write transaction
PROMPT_BATCH = 10
PURGE_JOB = "recordings-purge"
PURGE_AT = dt.time(3, 30)  # local: before the calling window opens
BACKUP_JOB = "backup"
PBX_LOGS_JOB = "pbx-logs"
WEBHOOK_JOB = "webhooks"
DISTRIBUTION_JOB = "distributions"
WEBHOOK_SECONDS = 2
SYNC_JOB = "sync"
REPORTS_JOB = "reports"
SMS_JOB = "sms_prompts"
# the campaign rounds' stored jobs, one per round (round_job_id), as one
ROUND_JOBS = "campaign-rounds"
# a node that found a lease held tries again, as this job, when it runs out
TAKEOVER = ":takeover"
# a cluster-once job runs at most once in this share of its period
PERIOD_SHARE = 0.9
DAY = 24 * 3600

# Every scheduled job, classified: run once across the cluster, under a
# lease (khhf.leases), or on every node. Jobs refuses a job not listed.
CLUSTER_ONCE = {
    ROUND_JOBS: "a round is made once; one lease per round, named by its job's id",
    SMS_JOB: "the prompts and the replies' leftovers are the database's; one node queues them",
    REPORTS_JOB: "the report sums are the database's; one rebuild per period",
    DISTRIBUTION_JOB: "a stopped distribution run is finished by one node",
    WEBHOOK_JOB: "two nodes would send the same due event twice",
    BACKUP_JOB: "one archive of the shared database a day",
}
PER_NODE = {
    SYNC_JOB: "each node's scheduler stores the rounds' jobs in the shared job store "
              "(a job's id makes it once there)",
    PBX_LOGS_JOB: "Asterisk's log files are on each node (and the edge's on the edge's machine)",
    PURGE_JOB: "a node's recordings are on its own disk: behind an edge, each node deletes "
               "the expired recordings of its own calls (khhf.services.recordings.purge)",
}

# the sessions the stored jobs use: a stored job names a function and its
# arguments only, so the process that runs it supplies the database (and
# the daemon, for the round's lease)
_sessions = None
_timezone = Settings.timezone  # the default; Jobs sets the site's
_daemon: Jobs | None = None


@dataclasses.dataclass(frozen=True)
class NotHere:
    """What a cluster-once job returns on a node that did not run it."""
    busy: leases.Busy


def job_name(job_id: str) -> str:
    """The classified name of a scheduled job (a round's job, a takeover)."""
    job_id = job_id.removesuffix(TAKEOVER)
    return ROUND_JOBS if job_id.startswith("campaign-") else job_id


def sms_sweep_seconds(settings: Settings) -> int:
    """How often the SMS prompt sweep runs: often enough that a prompt is
    at most half its delay late, never more than every second, at least
    every 15 seconds."""
    return max(1, min(15, settings.sms_prompt_delay_seconds // 2))


def round_job_id(campaign_id: int, seq: int) -> str:
    return f"campaign-{campaign_id}-round-{seq}"


def make_round(campaign_id: int, seq: int) -> int | NotHere:
    """The stored job: on the node that takes the round's lease,
    make_due_rounds."""
    assert _daemon is not None, "a stored job runs in the jobs daemon"
    # a round's job runs again (after a failure, a kill) when sync stores it again
    return _daemon.once(round_job_id(campaign_id, seq), make_due_rounds, campaign_id, seq,
                        min_gap=PERIOD_SHARE * _daemon.sync_seconds)


def make_due_rounds(campaign_id: int, seq: int) -> int:
    """Make every due round of the campaign (so round `seq` and any missed
    before it); returns the tasks made."""
    today = local_time.today(_timezone)
    # said before the work, so a log cut short by a kill shows what was in
    # hand: the round's transaction then never committed, and the restarted
    # daemon makes it whole (see the module doc)
    log.info("campaign %s: round %s due; making it", campaign_id, seq)
    with db.unit_of_work(_sessions) as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.status != "active":
            return 0
        made = campaigns.create_due_rounds(session, campaign, today)
    total = sum(n for _cycle, n in made)
    log.info("campaign %s: round %s due; %s tasks made (%s rounds checked)",
             campaign_id, seq, total, len(made))
    return total


class _Scheduler(BackgroundScheduler):
    def _process_jobs(self):
        # shutdown wakes the scheduler's thread after stopping the executors;
        # APScheduler 3 would then try to submit due jobs to them and crash
        if self.state == STATE_STOPPED:
            return None
        try:
            return super()._process_jobs()
        except Exception as exc:
            # APScheduler lets a job store's error end its thread, and with it
            # every job of the daemon (seen in the soak: SQLite's write lock
            # refused after its busy timeout): look again shortly instead
            if not db.is_unavailable(exc):
                raise
            log.warning("the job store cannot be read now (%s); trying again in %.0f s",
                        str(getattr(exc, "orig", exc)).splitlines()[0], STORE_RETRY_SECONDS)
            return STORE_RETRY_SECONDS

    def remove_job(self, job_id, jobstore=None):
        try:
            super().remove_job(job_id, jobstore)
        except JobLookupError:
            # the stored jobs are shared: another node's scheduler started this
            # round's job too and removed it first (APScheduler would end
            # this scheduler's thread on the error)
            if jobstore == "memory":
                raise


class Jobs:
    """The daemon's scheduler: `start()`, `shutdown()`; `sync()` stores the
    next round's job of every active campaign."""

    def __init__(self, engine: Engine, timezone: str, sync_seconds: int = 60,
                 settings: Settings | None = None, report_seconds: int = 300,
                 webhook_seconds: float = WEBHOOK_SECONDS,
                 lease_seconds: float = leases.LEASE_SECONDS):
        global _sessions, _timezone, _daemon
        _sessions, _timezone, _daemon = db.session_factory(engine), timezone, self
        self.timezone = timezone
        self.sessions = _sessions
        self.writer_sessions = db.session_factory(engine, writer=True)
        # the job store's writes take SQLite's write lock up front (see khhf.db)
        store_engine = engine.execution_options(**{db.WRITE_OPTION: True})
        self.scheduler = _Scheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=store_engine, tablename=JOB_TABLE),
                       "memory": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone=local_time.zone(timezone))
        self.sync_seconds = sync_seconds
        # khhf's settings (None: neither the SMS prompts nor the retention job):
        # the prompt delay, the recordings' directory and retention
        self.settings = settings
        self.report_seconds = report_seconds
        self.webhook_seconds = webhook_seconds
        # APScheduler's shutdown holds its job-store lock while it waits for
        # running jobs, and sync needs that lock: sync and shutdown take
        # turns on this one instead
        self._lock = threading.Lock()
        self._stopping = False
        self._synced = 0
        self._runs: dict[str, dict] = {}
        # where this daemon runs cluster-once jobs: its node and process
        self.leases = leases.Leases(
            engine, leases.Holder((settings or Settings()).pbx_name), lease_seconds)
        # lease -> the run held elsewhere that this node takes over if it stops
        # (said once in the log)
        self._waiting: dict[str, int] = {}

    def start(self, paused: bool = False) -> None:
        # a wrong backup_time stops the daemon before anything runs
        backup_at = backup.daily_time(self.settings) \
            if self.settings is not None and self.settings.backup_dir else None
        self.scheduler.start(paused=paused)
        self.scheduler.add_listener(self._after_round, EVENT_JOB_EXECUTED)
        self.scheduler.add_listener(self._note_run, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        now = local_time.now(self.timezone)
        self._add(SYNC_JOB, self.sync, seconds=self.sync_seconds, next_run_time=now)
        self._add(REPORTS_JOB, self.refresh_reports, seconds=self.report_seconds,
                  next_run_time=now)
        self._add(DISTRIBUTION_JOB, self.resume_distributions, seconds=60, next_run_time=now)
        self._add(WEBHOOK_JOB, self.send_webhooks, seconds=self.webhook_seconds,
                  next_run_time=now, idle=self._no_webhooks_due)
        if self.settings is not None:
            self._add(SMS_JOB, self.sms_sweep, seconds=sms_sweep_seconds(self.settings),
                      next_run_time=now, idle=self._no_prompts_due)
        if self.settings is not None and recordings.retention_days(self.settings):
            self._add(PURGE_JOB, self.purge_recordings, trigger="cron", hour=PURGE_AT.hour,
                      minute=PURGE_AT.minute, next_run_time=now)
        if self.settings is not None:
            self._add(PBX_LOGS_JOB, self.rotate_logs, hours=1, next_run_time=now)
        if backup_at is not None:
            self._add(BACKUP_JOB, self.backup, trigger="cron", hour=backup_at.hour,
                      minute=backup_at.minute)

    def _add(self, job_id: str, work, trigger: str = "interval", idle=None, **timing) -> None:
        """Schedule `work` in the memory store as classified: a cluster-once
        job through `once` (its lease refuses a second run within
        PERIOD_SHARE of its period), a per-node one as it is."""
        if job_id in CLUSTER_ONCE:
            period = DAY if trigger == "cron" else dt.timedelta(
                **{k: v for k, v in timing.items() if k in ("seconds", "hours")}).total_seconds()
            work = functools.partial(self.once, job_id, work,
                                     min_gap=PERIOD_SHARE * period, idle=idle)
        elif job_id not in PER_NODE:
            raise KeyError(f"the job {job_id} is not classified: add it to CLUSTER_ONCE or "
                           "PER_NODE in jobs/scheduler.py")
        self.scheduler.add_job(work, trigger, id=job_id, name=job_id, jobstore="memory",
                               **timing)

    def once(self, name: str, work, *args, min_gap: float = 0.0, idle=None,
             takeover: int | None = None):
        """Run `work(*args)` if this node takes lease `name` (khhf.leases),
        holding it while it runs; else return NotHere, and when the lease is
        held, try again to take it over once it runs out. `idle`: a reader's
        look that says there is nothing to do (then no lease is taken)."""
        if self._stopping:
            return None
        if idle is not None and takeover is None and idle():
            return None
        lease = self.leases.take(name, min_gap, takeover)
        if isinstance(lease, leases.Busy):
            if lease.held and lease.holder != self.leases.holder:
                self._take_over_later(name, work, args, min_gap, idle, lease)
            elif not lease.held:
                self._waiting.pop(name, None)
            return NotHere(lease)
        self._waiting.pop(name, None)
        if lease.took_over is not None:
            log.info("%s: taken over from %s, whose run stopped unfinished", name,
                     lease.took_over)
        with lease:
            return work(*args)

    def _take_over_later(self, name: str, work, args, min_gap: float, idle,
                         busy: leases.Busy) -> None:
        """Try lease `name` again when `busy`'s holder's lease runs out: then
        run the job here if that run stopped unfinished."""
        if self._waiting.get(name) != busy.run:
            log.info("%s: %s; this node runs it if that run stops", name, busy)
        self._waiting[name] = busy.run
        with self._lock:
            if self._stopping:
                return
            self.scheduler.add_job(
                self.once, "date", args=(name, work, *args),
                kwargs={"min_gap": min_gap, "idle": idle, "takeover": busy.run},
                run_date=local_time.now(self.timezone)
                + dt.timedelta(seconds=busy.wait_seconds() + 1),
                id=name + TAKEOVER, name=name + TAKEOVER, jobstore="memory",
                replace_existing=True)

    def backup(self):
        """Write the day's backup archive and apply the retention (see module doc)."""
        try:
            path, deleted = backup.timed(self.settings)
        except backup.BackupError as exc:
            log.error("backup failed: %s", exc)
            return None
        log.info("backup written to %s; %s older archives deleted (keeping %s)", path,
                 len(deleted), self.settings.backup_keep)
        return path

    def rotate_logs(self) -> list:
        """Rotate Asterisk's and the edge's log files over the size limit (khhf.log_files)."""
        rotated = log_files.rotate_logs(self.settings)
        if rotated:
            log.info("log files rotated: %s", ", ".join(p.name for p in rotated))
        return rotated

    def _note_run(self, event) -> None:
        """Keep each job's last run here for the heartbeat (campaign rounds as
        one; a cluster-once job that ran elsewhere is no run here)."""
        if isinstance(event.retval, NotHere):
            return
        job = job_name(event.job_id)
        ok = event.exception is None
        failures = 0 if ok else self._runs.get(job, {}).get("failures", 0) + 1
        self._runs[job] = {"at": f"{utcnow():%Y-%m-%dT%H:%M:%SZ}", "ok": ok,
                           "failures": failures}

    def last_runs(self) -> dict[str, dict]:
        """{job: {"at": UTC time, "ok": whether it ran without raising,
        "failures": how many runs in a row raised}}."""
        return dict(self._runs)

    def _no_prompts_due(self) -> bool:
        """Nothing for the SMS sweep to do (a reader's look)."""
        now = utcnow()
        with self.sessions() as session:
            return not (sms_feedback.due_calls(session, self.settings, now)
                        or sms_feedback.has_leftovers(session, now))

    def _no_webhooks_due(self) -> bool:
        """No webhook event is due (a reader's look)."""
        with self.sessions() as session:
            return not webhooks.any_due(session, utcnow())

    def sms_sweep(self) -> int:
        """Queue the due result prompts, and handle replies whose handling
        failed before; returns the prompts queued. Its state is the
        database's (prompt rows, results), so it is an in-memory job:
        a restarted daemon simply sweeps again."""
        if self._stopping:
            return 0
        made = 0
        try:
            now = utcnow()
            # look first with a reader: an idle sweep takes no write lock
            with self.sessions() as session:
                due = [c.id for c in sms_feedback.due_calls(session, self.settings, now)]
                leftovers = sms_feedback.has_leftovers(session, now)
            # then short write transactions, so a burst of prompts does not
            # hold SQLite's write lock against the AMI bridge for long
            for i in range(0, len(due), PROMPT_BATCH):
                with db.unit_of_work(self.writer_sessions) as session:
                    made += sms_feedback.send_prompts(session, self.settings, now,
                                                      call_ids=due[i:i + PROMPT_BATCH])
            if leftovers:
                with db.unit_of_work(self.writer_sessions) as session:
                    sms_feedback.handle_leftovers(session, self.settings, now)
        except Exception:
            # the next sweep tries again; the daemon keeps running
            log.exception("the SMS prompt sweep failed")
        return made

    def send_webhooks(self) -> webhooks.Sent:
        """Send the outbox's due webhook events (see module doc)."""
        if self._stopping:
            return webhooks.Sent()
        sent = webhooks.deliver_due(self.sessions, self.writer_sessions)
        if sent.delivered or sent.failed:
            log.info("webhooks: %s delivered, %s to retry, %s given up", sent.delivered,
                     sent.retried, sent.failed)
        return sent

    def purge_recordings(self) -> list:
        """Delete the recordings past the retention period (see module doc)."""
        done = recordings.purge(self.sessions, self.settings, dry_run=False)
        if done:
            outcomes = {o: sum(item.outcome == o for item in done)
                        for o in ("deleted", "missing", "refused")}
            log.info("recordings older than %s days: %s deleted, %s already gone, %s left "
                     "alone (outside the recordings directory)",
                     self.settings.recording_retention_days, outcomes["deleted"],
                     outcomes["missing"], outcomes["refused"])
        return done

    def resume_distributions(self):
        """Finish the task distributions whose writer stopped half-way."""
        with self.writer_sessions() as session:
            ids = distribution.resume(session)
        if ids:
            log.info("task distributions finished after their writer stopped: runs %s",
                     ", ".join(map(str, ids)))
        return ids

    def refresh_reports(self):
        """Bring the reports' daily sums up to date (khhf.services.reports.refresh_due)."""
        with db.unit_of_work(self.writer_sessions) as session:
            days = reports.refresh_due(session, self.timezone)
        if days:
            log.info("reports: daily sums rebuilt from %s to %s", *days)
        return days

    def _after_round(self, event) -> None:
        """A round was made: store the next round's job now, not a minute later."""
        if not event.job_id.startswith("campaign-") or isinstance(event.retval, NotHere):
            return
        with self._lock:
            if not self._stopping:
                self.scheduler.modify_job("sync", jobstore="memory",
                                          next_run_time=local_time.now(self.timezone))

    def shutdown(self) -> None:
        with self._lock:
            self._stopping = True
        self.scheduler.shutdown(wait=True)

    def sync(self) -> list[str]:
        """Store the job of each active campaign's next round (if not stored
        yet); drop stored jobs of campaigns no longer active. Returns the ids added."""
        with self._lock:
            if self._stopping:
                return []
            added = self._sync()
            self._synced += 1
            if self._synced == 1:
                log.info("campaigns checked; stored jobs: %s", ", ".join(
                    job.id for job in self.scheduler.get_jobs(jobstore="default")) or "none")
            return added

    def _sync(self) -> list[str]:
        added, wanted = [], set()
        with self.sessions() as session:
            for campaign in session.scalars(select(Campaign).where(Campaign.status == "active")):
                nxt = campaigns.next_round(session, campaign)
                if nxt is None:
                    continue
                seq, first_day = nxt
                job_id = round_job_id(campaign.id, seq)
                wanted.add(job_id)
                if self.scheduler.get_job(job_id, jobstore="default") is not None:
                    continue
                try:
                    self.scheduler.add_job(
                        make_round, "date", args=(campaign.id, seq), id=job_id,
                        run_date=campaigns.round_due_at(first_day, self.timezone),
                        jobstore="default", replace_existing=False)
                    added.append(job_id)
                except ConflictingIdError:
                    pass  # another daemon stored it first
        for job in self.scheduler.get_jobs(jobstore="default"):
            if job.id.startswith("campaign-") and job.id not in wanted:
                job.remove()
        if added:
            log.info("stored round jobs: %s", ", ".join(added))
        return added
