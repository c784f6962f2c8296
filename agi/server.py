"""A small asyncio FastAGI server: one connection, one route, one deadline.

Asterisk's AGI(agi://host:port/<key>/<route>,args...) connects, sends the
channel's agi_* environment and then waits for commands. Only the PBX may
drive a route: the first path segment is a key (khhf.config.agi_key) that
the PBX's rendered dialplan holds; a request without it is closed before
anything runs or touches the database. We look the route up in an explicit
table (agi/routes/__init__.py), run it under a deadline, and close the
connection. Every read has a timeout, EOF is an error, and a
route that raises or overruns simply sets nothing: the dialplan sees its
route variable empty and takes its one fallback path.

Database work runs in a thread pool (SQLAlchemy is synchronous), at most
once per request, inside one unit of work, so a slow database never
stalls the event loop and the other calls with it. A route that overruns
its deadline stops talking to Asterisk, but its unit of work still
completes: the call row is written late rather than lost. A unit the
database refuses for the moment (locked, away) is tried again for up to
UNIT_RETRY_SECONDS. A route may instead answer first and leave its unit
of work for after the connection is closed (AgiSession.after): Asterisk
goes on at once, the write follows. The hotline answers from its
in-memory directory (agi/directory.py) that way.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hmac
import itertools
import logging
import re
import time
from typing import Awaitable, Callable

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from khhf.config import Settings
from khhf.db import is_unavailable, unit_of_work

log = logging.getLogger(__name__)

# Asterisk holds the call while the route runs: give up well before the
# dialplan's 2 s budget, so the fallback still has time to ring.
ROUTE_DEADLINE = 1.5
# a unit of work the database refused for the moment (SQLite's write lock
# held past the busy timeout, PostgreSQL away) is tried again with a growing
# pause for this long: a hang-up's row is written late rather than left open
UNIT_RETRY_SECONDS = 120.0
UNIT_RETRY_PAUSES = (0.25, 0.5, 1.0, 2.0, 5.0)
HEADER_TIMEOUT = 1.0
COMMAND_TIMEOUT = 1.0
# a write deferred after the answer starts this long after it: by then
# Asterisk has sent the INVITEs, and the write's CPU does not compete with
# their set-up (tried again like any unit of work, UNIT_RETRY_SECONDS)
DEFERRED_DELAY = 0.2
# stopping the service waits this long for the deferred writes in flight;
# a row still unwritten then is written at the hang-up (hotline-end, or the
# AMI bridge from the hang-up's event)
DEFERRED_SHUTDOWN_WAIT = 10.0

_MSET_SAFE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MSET_SAFE_VALUE = re.compile(r"[A-Za-z0-9_&/.@+:-]*")

Route = Callable[["AgiSession", list[str]], Awaitable[None]]


class RateLimitedLog:
    """Log a warning at most once per `interval` seconds; the next line
    says how many were suppressed. Junk connections (port scans, forged
    requests) must not flood the log or fill the disk."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, clock=time.monotonic):
        self.logger, self.interval, self.clock = logger, interval, clock
        self._last: float | None = None
        self._suppressed = 0

    def warning(self, message: str, *args) -> bool:
        """Log `message` unless one was logged within the interval; True if logged."""
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self._suppressed += 1
            return False
        if self._suppressed:
            message += " (%d similar suppressed in the last %.0f s)"
            args += (self._suppressed, now - self._last)
        self.logger.warning(message, *args)
        self._last, self._suppressed = now, 0
        return True


class Profile:
    """Where a route's time goes, per completed request (the last 10,000):
    receiving the environment (accepted -> read), our own work, and waiting
    for Asterisk's replies; logged when the server closes (bench/hotline.py
    reads it)."""

    STAGES = ("environment", "work", "asterisk")

    def __init__(self, keep: int = 10_000):
        self.samples: dict[str, collections.deque] = {}
        self.keep = keep

    def add(self, route: str, **seconds: float) -> None:
        self.samples.setdefault(route, collections.deque(maxlen=self.keep)).append(
            tuple(seconds[s] for s in self.STAGES))

    def lines(self) -> list[str]:
        out = []
        for route, rows in sorted(self.samples.items()):
            parts = []
            for i, stage in enumerate(self.STAGES):
                values = sorted(r[i] * 1000 for r in rows)
                parts.append(f"{stage} p50 {values[len(values) // 2]:.2f} "
                             f"p95 {values[int(len(values) * 0.95)]:.2f}")
            out.append(f"AGI profile {route} ({len(rows)} requests, ms): " + "; ".join(parts))
        return out


class AgiError(Exception):
    """The AGI conversation broke: EOF, a timeout, or a refused command."""


class AgiSession:
    """One FastAGI request: the channel's environment and its commands."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 env: dict[str, str], run_in_unit_of_work, settings: Settings | None = None,
                 directory=None):
        self._reader, self._writer = reader, writer
        self.env = env
        # this site's settings (time zone, PBX node) for the routes
        self.settings = settings or Settings()
        # the hotline's in-memory look-up (agi.directory.RoutingDirectory), or None
        self.directory = directory
        self._run_in_unit_of_work = run_in_unit_of_work
        self._used_database = False
        self.deferred: Callable[[Session], object] | None = None
        self.waited = 0.0  # seconds spent waiting for Asterisk's replies (the profile)

    @property
    def key(self) -> str:
        """'<key>' of agi://host:port/<key>/hotline: who may drive the route."""
        return self._script().partition("/")[0]

    @property
    def route_name(self) -> str:
        """'hotline' for agi://host:port/<key>/hotline (query string dropped)."""
        return self._script().partition("/")[2]

    def _script(self) -> str:
        return self.env.get("agi_network_script", "").split("?", 1)[0].strip("/")

    @property
    def args(self) -> list[str]:
        """agi_arg_1, agi_arg_2, ... in order."""
        out, i = [], 1
        while f"agi_arg_{i}" in self.env:
            out.append(self.env[f"agi_arg_{i}"])
            i += 1
        return out

    async def unit_of_work(self, fn: Callable[[Session], object]):
        """Run fn(db_session) in one unit of work, off the event loop; once per request."""
        if self._used_database:
            raise RuntimeError("one AGI request gets one unit of work")
        self._used_database = True
        return await self._run_in_unit_of_work(fn)

    def after(self, fn: Callable[[Session], object]) -> None:
        """Run fn(db_session) in this request's one unit of work once the
        connection to Asterisk is closed: the call goes on meanwhile."""
        if self._used_database:
            raise RuntimeError("one AGI request gets one unit of work")
        self._used_database = True
        self.deferred = fn

    async def command(self, line: str, last: bool = False) -> str:
        """Send one AGI command; return the result text after '200 result='.

        `last`: the request's last command. Our side of the connection is
        shut after it (the reply still arrives), so Asterisk reads the end
        of the script right after running the command, without waiting for
        us to read its reply and close: the dialplan goes on one round trip
        sooner.
        """
        if "\n" in line:
            raise AgiError("an AGI command is one line")
        sent = time.perf_counter()
        self._writer.write(line.encode() + b"\n")
        if last and self._writer.can_write_eof():
            self._writer.write_eof()
        await self._writer.drain()
        while True:
            raw = await _readline(self._reader, COMMAND_TIMEOUT, f"the reply to {line.split()[0:2]}")
            if raw != "HANGUP":  # the caller hung up: variables still work
                break
        self.waited += time.perf_counter() - sent
        code, _, rest = raw.partition(" ")
        if code.endswith("-"):  # a multi-line usage message: read to its end
            while not raw.startswith(code[:-1] + " "):
                raw = await _readline(self._reader, COMMAND_TIMEOUT, "the rest of a reply")
            raise AgiError(f"Asterisk refused {line!r}: {code[:-1]}")
        if code != "200":
            raise AgiError(f"Asterisk refused {line!r}: {raw}")
        return rest.removeprefix("result=")

    async def set_variable(self, name: str, value: object, last: bool = False) -> None:
        value = "" if value is None else str(value)
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        await self.command(f'SET VARIABLE {name} "{escaped}"', last=last)

    async def set_variables(self, values: dict[str, object], last: bool = False) -> None:
        """Set several variables in one round trip (MSet), in order; `last`:
        as command's (no command may follow).

        Asterisk's MSet splits on commas and strips quotes, so values that
        hold any of them are set one by one instead.
        """
        pairs = [(name, "" if value is None else str(value)) for name, value in values.items()]
        if all(_MSET_SAFE.fullmatch(name) and _MSET_SAFE_VALUE.fullmatch(value)
               for name, value in pairs):
            result = await self.command("EXEC MSet " + ",".join(f"{n}={v}" for n, v in pairs),
                                        last=last)
            if result.startswith("-2"):
                raise AgiError("Asterisk has no MSet application (pbx_builtins)")
            return
        for i, (name, value) in enumerate(pairs, 1):
            await self.set_variable(name, value, last=last and i == len(pairs))

    async def get_variable(self, name: str) -> str | None:
        """The variable's value, or None when it is not set."""
        result = await self.command(f"GET VARIABLE {name}")
        if not result.startswith("1"):
            return None
        value = result[1:].strip()
        return value[1:-1] if value.startswith("(") and value.endswith(")") else value


async def _readline(reader: asyncio.StreamReader, timeout: float, what: str) -> str:
    try:
        async with asyncio.timeout(timeout):  # in this task: no task of its own to start
            raw = await reader.readline()
    except asyncio.TimeoutError:
        raise AgiError(f"no {what} within {timeout} s") from None
    if not raw.endswith(b"\n"):
        raise AgiError(f"Asterisk closed the connection while we waited for {what}")
    return raw.decode("utf-8", "replace").rstrip("\r\n")


async def read_environment(reader: asyncio.StreamReader) -> dict[str, str]:
    """The agi_* lines Asterisk sends first, up to the blank line (one read)."""
    try:
        async with asyncio.timeout(HEADER_TIMEOUT):
            raw = await reader.readuntil(b"\n\n")
    except asyncio.TimeoutError:
        raise AgiError(f"no AGI environment within {HEADER_TIMEOUT} s") from None
    except asyncio.IncompleteReadError:
        raise AgiError("Asterisk closed the connection in the AGI environment") from None
    except asyncio.LimitOverrunError:
        raise AgiError("the AGI environment is too long") from None
    env: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise AgiError(f"not an AGI environment line: {line[:80]!r}")
        env[key.strip()] = value.strip()
    return env


class FastAgiServer:
    """Serves `routes` (path -> async route(session, args)) on one TCP port."""

    def __init__(self, routes: dict[str, Route], session_factory: sessionmaker[Session], *,
                 key: str, deadline: float = ROUTE_DEADLINE, db_threads: int = 8,
                 junk_log_interval: float = 10.0, settings: Settings | None = None,
                 directory=None):
        if len(key) < 16:
            raise ValueError("the FastAGI key must be a generated secret (khhf.config.agi_key)")
        self.routes = dict(routes)
        self.settings = settings or Settings()
        self._key = key.encode()
        self.junk_log = RateLimitedLog(log, junk_log_interval)
        self.session_factory = session_factory
        self.deadline = deadline
        self.unit_retry_seconds = UNIT_RETRY_SECONDS
        self.directory = directory if directory is not None else _directory_for(session_factory)
        self.pending: set[asyncio.Task] = set()  # deferred units of work in flight
        self.active: set[asyncio.Task] = set()   # requests in flight
        self.profile = Profile()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=db_threads, thread_name_prefix="agi-db")
        self.server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> asyncio.base_events.Server:
        self.server = await asyncio.start_server(self.handle, host, port, backlog=256)
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        """close(), and the directory's connection, once the deferred writes are done."""
        if self.active:
            await asyncio.wait(self.active, timeout=self.deadline + COMMAND_TIMEOUT)
        if self.pending:
            await asyncio.wait(self.pending,
                               timeout=DEFERRED_DELAY + DEFERRED_SHUTDOWN_WAIT)
        self.close()
        if self.directory is not None:
            await self.directory.close()
        for line in self.profile.lines():
            log.info("%s", line)

    async def _run_deferred(self, fn, what: str) -> None:
        """A route's deferred unit of work (tried again while the database
        refuses it, as any); if it still fails, the hang-up writes the row."""
        await asyncio.sleep(DEFERRED_DELAY)
        try:
            await self._run_in_unit_of_work(fn)
        except Exception:
            log.exception("AGI route %r: its write after the answer failed", what)

    async def _run_in_unit_of_work(self, fn):
        def work():
            give_up = time.monotonic() + self.unit_retry_seconds
            lost_race = False
            for attempt in itertools.count():
                try:
                    with unit_of_work(self.session_factory) as db:
                        return fn(db)
                except IntegrityError:
                    # a concurrent request for the same call (the routing AGI
                    # finishing late while the hang-up AGI runs) won the race;
                    # the routes are idempotent, so the same work again, afresh
                    if lost_race:
                        raise
                    lost_race = True
                    log.info("retrying a unit of work after IntegrityError")
                except OperationalError as exc:
                    if not is_unavailable(exc) or time.monotonic() >= give_up:
                        raise
                    pause = UNIT_RETRY_PAUSES[min(attempt, len(UNIT_RETRY_PAUSES) - 1)]
                    log.info("the database refused a unit of work (%s); trying again in %.2f s",
                             exc.__class__.__name__, pause)
                    time.sleep(min(pause, max(0.0, give_up - time.monotonic())))
            raise AssertionError("itertools.count() ended")
        # shielded: a route cut short by its deadline leaves its unit of work
        # to complete, even one still queued for a free thread
        return await asyncio.shield(
            asyncio.get_running_loop().run_in_executor(self._executor, work))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One AGI request, from environment to close; never raises."""
        name = "?"
        session: AgiSession | None = None
        accepted = time.perf_counter()
        this = asyncio.current_task()
        if this is not None:
            self.active.add(this)
        try:
            try:
                env = await read_environment(reader)
            except AgiError as exc:
                self.junk_log.warning("AGI connection without an AGI request: %s", exc)
                return
            session = AgiSession(reader, writer, env, self._run_in_unit_of_work, self.settings,
                                 self.directory)
            # the key first, in constant time: nothing runs for a stranger
            if not hmac.compare_digest(session.key.encode("utf-8", "replace"), self._key):
                self.junk_log.warning("AGI request without the PBX's key refused")
                return
            name = session.route_name
            route = self.routes.get(name)
            if route is None:
                log.error("AGI request for unknown route %r (known: %s)", name[:40],
                          ", ".join(sorted(self.routes)))
                return
            started = time.perf_counter()
            async with asyncio.timeout(self.deadline):
                await route(session, session.args)
            self.profile.add(name, environment=started - accepted,
                             work=time.perf_counter() - started - session.waited,
                             asterisk=session.waited)
        except asyncio.TimeoutError:
            log.warning("AGI route %r overran its %.1f s deadline; the dialplan falls back",
                        name, self.deadline)
        except AgiError as exc:
            log.warning("AGI route %r: %s", name, exc)
        except Exception:
            log.exception("AGI route %r failed; the dialplan falls back", name)
        finally:
            writer.close()
            deferred = session.deferred if session is not None else None
            if deferred is not None:  # after the answer, off Asterisk's path
                task = asyncio.create_task(self._run_deferred(deferred, name))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self.active.discard(this)  # type: ignore[arg-type]

    async def sweep(self) -> int:
        """Close inbound rows whose hang-up never arrived (hotline.close_stale_calls)."""
        from khhf.services import hotline

        def work():
            with unit_of_work(self.session_factory) as db:
                return hotline.close_stale_calls(db)
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)


def _directory_for(session_factory: sessionmaker[Session]):
    """A RoutingDirectory on the factory's database, or None (another engine)."""
    from agi.directory import RoutingDirectory
    from khhf.db import sqlite_file
    engine = session_factory.kw.get("bind")
    if engine is None or engine.dialect.name not in ("sqlite", "postgresql"):
        return None
    if engine.dialect.name == "sqlite" and sqlite_file(str(engine.url)) is None:
        return None  # in memory: no second connection can see it
    return RoutingDirectory(engine)


def make_server(settings, routes: dict[str, Route] | None = None, **kwargs) -> FastAgiServer:
    """A server for `settings.database_url` with the shipped route table."""
    from khhf import db
    if routes is None:
        from agi.routes import ROUTES as routes
    from khhf.config import agi_key
    engine = db.open_database(settings)
    return FastAgiServer(routes, db.session_factory(engine), key=agi_key(settings),
                         settings=settings, **kwargs)

