"""Keep a set of child processes running, as systemd would in production.

The demo (khhfcli/demo.py) runs the PBX, simulated phones and the three
services as children of one process. A child that exits is reported on the
console in one line and started again after a back-off (1 s, doubling up to
30 s; reset once it has run for a minute) while the others keep running.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_SECONDS = 60.0


class RunningPid:
    """poll() for a process this one did not start (an Asterisk already up)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                self.returncode = 0  # not our child: its exit status is unknown
        return self.returncode


@dataclass
class Child:
    """One supervised process. `start` starts it and returns its process
    (anything with poll() and pid) or raises; `stop` stops it and cleans up
    after it (idempotent, also called after it died by itself)."""
    name: str
    start: Callable[[], object]
    stop: Callable[[], None]
    log: Path | None = None
    detail: str = ""               # shown on the console, e.g. where it listens
    proc: object = None
    started_at: float = 0.0
    failures: int = 0
    due: float | None = None       # when to start it again; None while running
    renew_after: float | None = None   # restart it after this many seconds of running
    renew_why: str = "to renew it"
    # exit codes after which a restart cannot help (systemd's RestartPreventExitStatus)
    final_codes: tuple[int, ...] = ()
    on_restart: list[Callable[[], None]] = field(default_factory=list)


def describe_exit(code: int | None) -> str:
    """'exit code 3' or 'killed by signal 9' for a Popen return code."""
    if code is not None and code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    """Start children in order, restart those that exit, stop them in reverse."""

    def __init__(self, say: Callable[[str], None] | None = None, prefix: str = "khhf demo"):
        self.children: list[Child] = []
        self.prefix = prefix
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))

    def add(self, child: Child) -> Child:
        """Start `child` now (an error here is raised: the system cannot come up)."""
        child.proc = child.start()
        child.started_at = time.monotonic()
        self.children.append(child)
        return child

    def restart(self, child: Child, why: str) -> None:
        """Stop `child` and start it again at the next check (e.g. to register again)."""
        if child.due is None:
            child.stop()
            child.due = time.monotonic()
            self.say(f"{self.prefix}: restarting {child.name} {why}")

    def check(self) -> None:
        """Notice children that exited and start those whose back-off is over."""
        now = time.monotonic()
        for child in self.children:
            if child.due is None:
                code = child.proc.poll()
                if code is None:
                    if child.renew_after and now - child.started_at >= child.renew_after:
                        self.restart(child, child.renew_why)
                    continue
                child.stop()
                if code in child.final_codes:
                    child.due = float("inf")
                    log = f"; see {child.log}" if child.log else ""
                    self.say(f"{self.prefix}: {child.name} exited ({describe_exit(code)}: "
                             f"cannot start as configured); not restarting it{log}")
                    continue
                if now - child.started_at >= STABLE_SECONDS:
                    child.failures = 0
                self._schedule(child, now, f"{child.name} exited ({describe_exit(code)})")
            elif now >= child.due:
                try:
                    child.proc = child.start()
                except Exception as exc:  # noqa: BLE001 - reported, tried again later
                    child.stop()
                    self._schedule(child, now, f"{child.name} did not start again ({exc})")
                    continue
                child.started_at, child.due = now, None
                self.say(f"{self.prefix}: {child.name} restarted (pid {child.proc.pid})")
                for hook in child.on_restart:
                    hook()

    def _schedule(self, child: Child, now: float, what: str) -> None:
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** child.failures)
        child.failures += 1
        child.due = now + delay
        log = f"; log: {child.log}" if child.log else ""
        self.say(f"{self.prefix}: {what}; restarting in {delay:g} s{log}")

    def stop_all(self) -> None:
        """Stop every child, the last started first; report none of it as a death."""
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                self.say(f"{self.prefix}: stopping {child.name} failed: {exc}")
        self.children.clear()
