"""Where the bridge's call events are written: the unit of work of a batch
(`Applier`), run either in the bridge's own process or in a writer process
of its own (`WriterProcess`) that the bridge feeds over a socket.

Why a process: the bridge's event loop parses the AMI stream (panoramisk)
and the batch is written by Python code of about the same cost per event
(raw events, the fold, the call and task rows). In one interpreter the two
share one GIL, so they take turns on one core, and under a starved CPU each
SQL statement that releases the GIL waits for it again behind the parser.
In a process of their own the writes run beside the parsing (the reader
parses batch n+1 while the writer stores batch n), on the second core.

Nothing is decided differently: the writer runs the same `Applier` (the
pure fold decides each row, LiveFacts is only a shortcut it checks against
the database), one batch at a time, in the order the one consumer sends
them. The consumer drops a batch from its backlog only once the writer has
answered that it is committed; a writer that died (or a bridge that died
around it) leaves the batch held, and writing it again is harmless (events
are stored once, keyed). The writer's facts die with it: the next one reads
the calls' stored events again. It exits when the bridge closes its end of
the socket, so it never outlives the bridge by more than the batch it is
writing; SIGINT and SIGTERM are the bridge's to act on (it drains through
the writer before it stops).
"""

from __future__ import annotations

import logging
import marshal
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from sqlalchemy.orm import configure_mappers

from khhf import db
from khhf.calls import inbound, store
from khhf.calls.facts import CallFacts
from khhf.calls.states import FINAL_STATES
from khhf.config import Settings
from khhf.services import dialing, hotline

log = logging.getLogger(__name__)
# how long a starting writer may take to import and connect, and a stopping
# one to finish the batch it writes
START_SECONDS = 60.0
STOP_SECONDS = 15.0


class Applier:
    """One batch of AMI events into the database: the bridge's unit of work."""

    def __init__(self, settings: Settings, sessions):
        self.settings = settings
        self.sessions = sessions
        # the folded facts of calls in progress: touched by apply_ami only
        self.live = store.LiveFacts()

    def apply_ami(self, events: list[dict]) -> set[int]:
        """Store a batch of AMI events and recompute the calls they touch,
        folding the new events into the facts kept of calls in progress."""
        raws = [r for r in map(store.raw_from_ami, events) if r is not None]
        ends = [e for e in map(inbound.from_ami, events) if e is not None]
        if not raws and not ends:
            # a hotline call's channels, or events of no call leg:
            # nothing to store, so no transaction (it was a BEGIN and a
            # COMMIT for nothing)
            return set()
        with db.unit_of_work(self.sessions) as session:
            new = store.insert_events(session, raws)
            # the calls' rows and their stored events' counts: one query
            rows = store.load_calls(session, {e.call_id for e in new})
            folded = self.live.fold(session, new, {cid: n for cid, (_, n) in rows.items()})
            calls = self.recompute(session, {cid: f.facts for cid, f in folded.items()},
                                   {cid: row for cid, (row, _) in rows.items()})
            final = {c.id for c in calls if c.state in FINAL_STATES}
            self.complete_inbound(session, ends)
        self.live.keep(folded, final)  # committed: what was folded is stored
        return set(folded)

    def complete_inbound(self, session, ends: list[inbound.HotlineEnd]) -> None:
        """The rows of hotline calls that hung up, written and closed unless
        the AGI service did (hotline.complete_call). One that cannot be (bad
        data) is logged and skipped, never costing the batch its other
        events; the database's absence is raised (the events are held).
        Rows already closed (the hang-up AGI, or the AMI event before the
        CEL record) are found in one query and left alone: no savepoint,
        no row lock."""
        closed = hotline.closed_calls(session, (end.uniqueid for end in ends))
        for end in ends:
            if end.uniqueid in closed:
                continue
            try:
                with session.begin_nested():
                    call = hotline.complete_call(session, end, self.settings)
            except Exception as exc:
                if db.is_unavailable(exc):
                    raise
                log.exception("hotline call %s: its row could not be completed", end.uniqueid)
                continue
            log.debug("hotline call %s: row %s %s", end.uniqueid, call.id, call.outcome)

    def recompute(self, session, facts: dict[int, CallFacts | None],
                  rows: dict[int, store.CallRow] | None = None) -> list[store.CallRow]:
        """Each call row in line with its events (store.recompute_batch; None
        for a call: folded from its stored events). A call given up as not
        placed lost its recording's path (nobody talked, it seemed); when
        its events show an answer after all, the path Asterisk was given
        comes back."""
        if not facts:
            return []
        return store.recompute_batch(
            session, facts, lambda call: dialing.recording_file(self.settings, call), rows)


class WriterUnavailable(Exception):
    """The writer's database cannot take the batch now (db.is_unavailable
    said so in the writer): hold the events and try again later."""


class WriterFailed(Exception):
    """The writer could not store the batch for another reason, or is gone."""


class WriterProcess:
    """A writer process running an Applier on the bridge's database. `apply`
    is called by one thread at a time (the bridge's one consumer)."""

    def __init__(self, settings: Settings, database_url: str):
        self.settings = settings
        self.database_url = database_url
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.starts = 0
        self.cpu_seconds = 0.0  # the writer's CPU time spent on batches, all told

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the writer (unless it runs) and wait until it is ready."""
        with self._lock:
            if not self.alive:
                self._start()

    def _start(self) -> None:
        self._close()
        ours, theirs = socket.socketpair()
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "ami_bridge.writer", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send((self.settings, self.database_url, logging.getLogger().level))
        if not self._conn.poll(START_SECONDS):
            self._close()
            raise WriterFailed(f"the bridge's writer process did not start within "
                               f"{START_SECONDS:.0f} s")
        self._answer()  # ("ready", None), or why it could not connect
        self.starts += 1

    def apply(self, events: list[dict]) -> None:
        """Have the writer store `events` (one unit of work); return once it
        is committed. Raises WriterUnavailable or WriterFailed."""
        with self._lock:
            if not self.alive or self._conn is None:
                self._start()
            assert self._conn is not None
            try:
                # marshal: a batch is lists and dicts of str, and marshal
                # writes them in a quarter of pickle's time (the bridge's
                # event loop pays it, beside panoramisk's parse)
                self._conn.send_bytes(marshal.dumps(events))
            except OSError as exc:
                self._close()
                raise WriterFailed(f"the bridge's writer process is gone ({exc})") from None
            self._answer()

    def _answer(self) -> None:
        assert self._conn is not None
        try:
            kind, detail = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._process.poll() if self._process else None
            self._close()
            raise WriterFailed(f"the bridge's writer process is gone (exit code {code}, "
                               f"{exc.__class__.__name__})") from None
        if kind == "unavailable":
            raise WriterUnavailable(detail)
        if kind == "error":
            raise WriterFailed(detail)
        if kind == "ok":
            self.cpu_seconds += detail  # the writer's CPU time for the batch

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Let the writer finish its batch and exit (killed after `timeout`)."""
        if not self._lock.acquire(timeout=timeout):
            log.warning("the bridge's writer is still busy after %.0f s: killed", timeout)
            self._kill()
            return
        try:
            if self._conn is not None:
                try:
                    self._conn.send_bytes(marshal.dumps(None))
                except OSError:
                    pass
            self._close(timeout)
        finally:
            self._lock.release()

    def _close(self, timeout: float = 0.0) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            try:
                self._process.wait(timeout)  # our end is closed: it exits on EOF
            except subprocess.TimeoutExpired:
                self._kill()
            self._process = None

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def serve(conn: Connection) -> None:
    """The writer process: apply each batch the bridge sends, answer
    ("ok" | "unavailable" | "error", detail), until None or EOF."""
    settings, database_url, level = conn.recv()
    from khhf import daemon
    daemon.setup_logging(level or logging.INFO)
    try:
        engine = db.make_engine(database_url)
        # the call events' batches go first at SQLite's write lock: the
        # bridge's lag is every page's and the health check's
        applier = Applier(settings, db.session_factory(engine, urgent=True))
        configure_mappers()  # before "ready": the models' set-up is not the first batch's
    except Exception as exc:
        conn.send(("error", f"the writer could not open the database: {exc}"))
        return
    try:
        conn.send(("ready", None))
    except OSError:
        return  # the bridge went away while we started
    while True:
        try:
            events = marshal.loads(conn.recv_bytes())
        except (EOFError, OSError):
            break  # the bridge is gone
        if events is None:
            break
        started = time.thread_time()
        try:
            applier.apply_ami(events)
            answer: tuple[str, object] = ("ok", time.thread_time() - started)
        except Exception as exc:
            if db.is_unavailable(exc):
                reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0:1]
                answer = ("unavailable", reason[0] if reason else exc.__class__.__name__)
            else:
                log.exception("applying %d AMI events failed", len(events))
                answer = ("error", f"{exc.__class__.__name__}: {exc}")
        try:
            conn.send(answer)
        except OSError:
            break
    engine.dispose()


def main(argv: list[str]) -> int:
    # the bridge decides when to stop (it drains its held events through us
    # first): a Ctrl-C or SIGTERM sent to its whole process group is its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(int(argv[0]))
    try:
        serve(conn)
    except (EOFError, pickle.UnpicklingError):
        return 1
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
