"""Leases: a job that must run once across the cluster (docs/cluster.md).

Several nodes each run the jobs daemon against one PostgreSQL; a job such
as the campaign rounds or the report sums must run on one of them, once
per period, and say where it ran. Each such job has a row in job_leases
(khhf.models.JobLease). A run:

- takes the row with ONE conditional statement (INSERT ... ON CONFLICT DO
  UPDATE ... WHERE, on PostgreSQL and SQLite alike), so of several nodes
  asking at once exactly one gets it. It may take it when it is free (the
  last run finished, or its holder stopped: `expires_at` passed) and the
  last run started at least `min_gap` ago (the job's period, less a
  margin: so several nodes firing the same interval job at their own
  moments run it once per period between them), unless that run failed;
- renews `expires_at` every third of the lease from a thread while the job
  works, and releases it (expires_at NULL, finished_at, ok, error) at the
  end. Renewal and release name the run (`runs`), so a run that lost its
  lease cannot touch the next holder's;
- a node killed mid-run stops renewing: another takes over once
  `expires_at` has passed (`takeover`: only that very run, only if it
  died). The job's own work is idempotent, so the new holder finishes what
  the dead one left. A daemon restarted on the same node does not wait: a
  holder of this node whose process is gone has stopped.

The holder is the node's pbx_name and the daemon's process id, so
pbx_name must differ between nodes (it already names their call rows).
Time is the database's (PostgreSQL's clock, not each node's), so the
nodes' clocks need not agree. On SQLite there is one node; the lease still
records where and when each job ran.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading

from sqlalchemy import and_, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from khhf import db
from khhf.models import JobLease, utcnow

log = logging.getLogger("khhf.leases")
# how long a lease lasts without renewal: the longest a dead node's job
# waits before another node takes it over
LEASE_SECONDS = 30.0
_lease = JobLease.__table__.c


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who runs a job: the node (pbx_name) and the jobs daemon's process."""
    node: str
    pid: int = dataclasses.field(default_factory=os.getpid)

    def __str__(self) -> str:
        return f"{self.node} (pid {self.pid})"


@dataclasses.dataclass(frozen=True)
class Busy:
    """The lease was not taken: who has it or had it last, and why not."""
    name: str
    holder: Holder
    started_at: dt.datetime
    # the database's clock when asked, and until when the holder has it
    # (None: free, refused only because the last run started too recently)
    now: dt.datetime
    expires_at: dt.datetime | None
    run: int

    @property
    def held(self) -> bool:
        return self.expires_at is not None

    def wait_seconds(self) -> float:
        """Seconds until the holder's lease runs out, unless it renews it."""
        return max(0.0, (self.expires_at - self.now).total_seconds()) if self.expires_at else 0.0

    def __str__(self) -> str:
        if self.held:
            return f"held by {self.holder} since {self.started_at:%H:%M:%S} UTC"
        return f"ran on {self.holder} at {self.started_at:%H:%M:%S} UTC"


def database_now(conn: Connection) -> dt.datetime:
    """Naive UTC now by the database's clock (PostgreSQL: one clock for all
    nodes); SQLite is on this machine."""
    if conn.dialect.name == "postgresql":
        return conn.scalar(text("SELECT timezone('UTC', clock_timestamp())"))
    return utcnow()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class Leases:
    """The leases of one jobs daemon: `take(name)` gives a Lease (a context
    manager that renews it while the job runs and releases it) or Busy."""

    def __init__(self, engine: Engine, holder: Holder, seconds: float = LEASE_SECONDS):
        self.engine = engine.execution_options(**{db.WRITE_OPTION: True})
        self.holder, self.seconds = holder, seconds

    def take(self, name: str, min_gap: float = 0.0, takeover: int | None = None
             ) -> Lease | Busy:
        """Take lease `name` if it is free and its last run started at least
        `min_gap` seconds ago; with `takeover`, only if run number `takeover`
        is still the last and its holder died (the lease ran out unfinished)."""
        with self.engine.begin() as conn:
            now = database_now(conn)
            row = conn.execute(select(JobLease.__table__).where(_lease.name == name)).first()
            if row is not None and self._stopped_here(row, now):
                # our own node's earlier daemon, killed: no need to wait for expiry
                conn.execute(update(JobLease.__table__).where(
                    _lease.name == name, _lease.runs == row.runs).values(expires_at=now))
            expired = or_(_lease.expires_at.is_(None), _lease.expires_at <= now)
            if takeover is not None:
                may = and_(_lease.runs == takeover, _lease.finished_at.is_(None), expired)
            else:
                may = and_(expired, or_(_lease.finished_at.is_(None), _lease.ok.is_(False),
                                        _lease.started_at <= now - dt.timedelta(seconds=min_gap)))
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
                JobLease.__table__)
            values = dict(node=self.holder.node, pid=self.holder.pid, started_at=now,
                          expires_at=now + dt.timedelta(seconds=self.seconds), finished_at=None,
                          ok=None, error="")
            taken = conn.execute(
                insert.values(name=name, runs=1, **values)
                .on_conflict_do_update(index_elements=[_lease.name], where=may,
                                       set_=dict(values, runs=_lease.runs + 1))
                .returning(_lease.runs)).scalar()
            if taken is not None:
                stopped = None if row is None or row.finished_at is not None else \
                    Holder(row.node, row.pid)
                return Lease(self, name, taken, took_over=stopped)
            row = conn.execute(select(JobLease.__table__).where(_lease.name == name)).one()
        free = row.expires_at is None or row.expires_at <= now
        return Busy(name, Holder(row.node, row.pid), row.started_at, now,
                    None if free else row.expires_at, row.runs)

    def _stopped_here(self, row, now: dt.datetime) -> bool:
        """The lease is held by an earlier jobs daemon of this node that is gone."""
        return (row.node == self.holder.node and row.pid != self.holder.pid
                and row.finished_at is None and row.expires_at is not None
                and row.expires_at > now and not _alive(row.pid))

    def _update(self, name: str, run: int, **values) -> bool:
        """Change our run `run` of lease `name`; False when it is no longer ours."""
        with self.engine.begin() as conn:
            now = database_now(conn)
            values = {k: (v(now) if callable(v) else v) for k, v in values.items()}
            done = conn.execute(update(JobLease.__table__).where(
                _lease.name == name, _lease.runs == run, _lease.node == self.holder.node,
                _lease.pid == self.holder.pid, _lease.finished_at.is_(None)).values(**values))
            return done.rowcount == 1


class Lease:
    """A lease taken: `with lease:` renews it every third of its length
    while the block runs and releases it after, with the block's outcome."""

    def __init__(self, leases: Leases, name: str, run: int, took_over: Holder | None = None):
        self.leases, self.name, self.run = leases, name, run
        # the holder whose run stopped unfinished, when this run takes over from it
        self.took_over = took_over
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def renew(self) -> bool:
        """Push the expiry a lease length on; False when it was lost."""
        seconds = self.leases.seconds
        if not self.leases._update(self.name, self.run,
                                   expires_at=lambda now: now + dt.timedelta(seconds=seconds)):
            self.lost = True
        return not self.lost

    def release(self, error: str = "") -> None:
        """The run is over: free the lease and say how it went."""
        self._stop.set()
        if not self.leases._update(self.name, self.run, expires_at=None,
                                   finished_at=lambda now: now, ok=not error, error=error[:500]):
            self.lost = True
        if self.lost:
            log.warning("the lease of %s ran out while it ran here (renewals late): another "
                        "node may have run it too; the job's work is idempotent", self.name)

    def _keep(self) -> None:
        while not self._stop.wait(self.leases.seconds / 3):
            try:
                if not self.renew():
                    return
            except Exception:  # the database away a moment: the next renewal tries again
                log.warning("lease %s not renewed", self.name, exc_info=True)

    def __enter__(self) -> Lease:
        self._renewer = threading.Thread(target=self._keep, name=f"lease-{self.name}",
                                         daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, kind, exc, _tb) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        self.release("" if exc is None else f"{kind.__name__}: {exc}")


def last_runs(engine: Engine, round_prefix: str = "campaign-") -> list[JobLease]:
    """Each lease's row, the campaign rounds' (one lease per round) as their
    newest only: where and when each cluster-once job last ran."""
    with engine.connect() as conn:
        others = conn.execute(select(JobLease.__table__).where(
            ~_lease.name.startswith(round_prefix)).order_by(_lease.name)).all()
        newest_round = conn.execute(select(JobLease.__table__).where(
            _lease.name.startswith(round_prefix))
            .order_by(_lease.started_at.desc()).limit(1)).all()
    return [JobLease(**row._asdict()) for row in [*newest_round, *others]]
