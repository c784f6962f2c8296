"""The AMI client: a thin adapter over panoramisk (pinned at 1.4), used by
the AMI bridge (call events, originate) and by PBX control (is it booted?).
It knows sockets and AMI messages only: no database, no domain.

panoramisk 1.4 dispatches coroutine callbacks with ensure_future and never
awaits them, so handlers would run concurrently and out of order; here every
event is put, in arrival order, on one asyncio.Queue for a single consumer.
Login failure and connection failure become exceptions with a message that
says what to do.
"""

from __future__ import annotations

import asyncio
import logging

from panoramisk import Manager
from panoramisk.actions import Action

log = logging.getLogger(__name__)
# panoramisk warns on every failed (re)connect; our own errors say it better
_panoramisk_log = logging.getLogger(__name__ + ".panoramisk")
_panoramisk_log.setLevel(logging.ERROR)


class AmiError(Exception):
    """The AMI could not be reached or refused us; the message says why."""


class AmiAuthError(AmiError):
    pass


class AmiShuttingDown(AmiError):
    """Asterisk is shutting down (a graceful stop or restart waits for the
    last calls to end): it refuses every action, logins included."""


# what Asterisk answers every action with once a shutdown has begun
# (manager.c; `core stop|restart gracefully` waits for calls, then stops)
SHUTTING_DOWN = "Asterisk is shutting down"


def shutting_down(response) -> bool:
    """Whether an action's response says Asterisk is shutting down."""
    return (response is not None and not isinstance(response, list)
            and response.get("Response") == "Error" and response.get("Message") == SHUTTING_DOWN)


class _Manager(Manager):
    """panoramisk's Manager, with reconnection that can be switched off."""

    closed = False
    reconnect = True
    on_lost = None

    def connect(self, *args, **kwargs):
        if self.closed or (not self.reconnect and self.protocol is not None):
            return None
        return super().connect(*args, **kwargs)

    def connection_lost(self, exc):
        if self.on_lost is not None:
            self.on_lost(exc)
        if self.closed or not self.reconnect:
            self._connected = False
            return
        super().connection_lost(exc)


class _TrackedAction(Action):
    """An Action that also resolves `first` with its first response."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.first = asyncio.get_running_loop().create_future()

    def add_message(self, message):
        if not self.first.done():
            self.first.set_result(message)
        return super().add_message(message)


class AmiClient:
    """One AMI session. `events` receives every event, in order."""

    def __init__(self, host: str, port: int, username: str, secret: str,
                 event_mask: str = "on", reconnect: bool = False):
        self.host, self.port, self.username = host, port, username
        self.events: asyncio.Queue = asyncio.Queue()
        self._manager = _Manager(
            loop=asyncio.get_running_loop(), host=host, port=port,
            username=username, secret=secret, events=event_mask,
            ping_delay=10, ping_interval=10, reconnect_timeout=1,
            log=_panoramisk_log,
        )
        self._manager.reconnect = reconnect
        self.lost = asyncio.Event()
        self._manager.on_lost = lambda exc: self.lost.set()
        self._manager.register_event("*", self._on_event)

    def _on_event(self, _manager, message) -> None:
        # no I/O here: just queue it for the one consumer
        self.events.put_nowait(message)

    async def connect(self, timeout: float = 5.0) -> None:
        """Connect and log in; raise AmiError or AmiAuthError on failure."""
        where = f"{self.host}:{self.port}"
        try:
            await asyncio.wait_for(self._manager.connect(), timeout)
            while self._manager.protocol is None:  # connection_made runs next
                await asyncio.sleep(0)
        except (OSError, asyncio.TimeoutError) as exc:
            self.close()
            raise AmiError(f"cannot reach the Asterisk manager interface at {where} "
                           f"({exc.__class__.__name__}): is the PBX running? "
                           f"Try `khhf pbx status`.") from None
        fut = self._manager.authenticated_future
        try:
            response = await asyncio.wait_for(fut, timeout) if fut else None
        except asyncio.TimeoutError:
            self.close()
            raise AmiError(f"the manager interface at {where} did not answer the login "
                           f"within {timeout:.0f} s: check that it is Asterisk's AMI port.") from None
        if shutting_down(response):
            self.close()
            raise AmiShuttingDown(f"the Asterisk at {where} is shutting down (a graceful stop "
                                  f"or restart waits for the calls in progress to end): it "
                                  f"takes no login until it is back.")
        if response is None or not response.success:
            self.close()
            raise AmiAuthError(
                f"the manager interface at {where} refused user {self.username!r}: "
                f"its secret does not match the running Asterisk's manager.conf; "
                f"restart the PBX (`khhf pbx down; khhf pbx up`) so it renders the "
                f"secret from the current config, or fix ami_secret.")

    async def action(self, action: dict, timeout: float = 10.0):
        """Send one action and return its response (a list for event lists)."""
        return await asyncio.wait_for(self._manager.send_action(dict(action)), timeout)

    async def send_tracked(self, action: dict, timeout: float = 5.0):
        """Send an action that answers twice (an Async Originate): return its
        first response, and a future for the complete list of responses."""
        tracked = _TrackedAction(dict(action))
        future = self._manager.send_action(tracked)
        first = await asyncio.wait_for(asyncio.shield(tracked.first), timeout)
        return first, future

    async def wait_event(self, name: str, timeout: float, predicate=None):
        """Take events off the queue until one named `name` (and matching)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"no {name} event within {timeout} s")
            event = await asyncio.wait_for(self.events.get(), remaining)
            if event.event == name and (predicate is None or predicate(event)):
                return event

    def close(self) -> None:
        self._manager.closed = True
        self._manager.close()


async def wait_fully_booted(host, port, username, secret, timeout=30.0) -> None:
    """Log in (retrying while the port is closed) until Asterisk is FullyBooted."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Exception | None = None
    while loop.time() < deadline:
        client = AmiClient(host, port, username, secret, event_mask="system")
        try:
            await client.connect(timeout=min(5.0, max(0.5, deadline - loop.time())))
        except AmiAuthError:
            raise
        except AmiError as exc:
            last = exc
            await asyncio.sleep(0.2)
            continue
        try:
            # Asterisk sends FullyBooted right after login once it has booted
            await client.wait_event("FullyBooted", max(0.5, deadline - loop.time()))
            return
        except asyncio.TimeoutError as exc:
            last = exc
        finally:
            client.close()
    raise AmiError(f"Asterisk did not report FullyBooted within {timeout:.0f} s "
                   f"({last}); see its log for the reason.")
