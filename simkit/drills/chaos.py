"""Drill 7: the AMI bridge and the web UI killed at random moments.

Managers click 呼叫 in the web UI (real processes: web, bridge, AGI, jobs,
SMS gateway, Asterisk) and file their results, customers call the hotline
(SIPp), while a seeded random loop SIGKILLs the bridge (40 %), the web
(40 %) or both (20 %) every 1.5-6 s, leaves them down 0.2-3 s and starts
them again, as systemd would.
Bounded in time (short: ~60 s, long: ~10 min of faults). After recovery:
every call placed has exactly one final row with the right outcome, every
recording is complete (or its row says it is not), no result is doubled;
and during each fault `khhf status` (khhf.health) named the dead daemon.

The same seed gives the same kill schedule (the moments and victims; what
each kill interrupts depends on the host's timing).
"""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from khhf import health

from . import DrillRow
from .stack import Plan, Stack, fresh_database, wait_listening
from .traffic import HotlineCallers, ManagerWorker, account, settle

VICTIMS = ("ami_bridge", "webui")
CHECK = {"ami_bridge": "bridge", "webui": "web"}


class Chaos(threading.Thread):
    """Kill and restart the victims on a seeded schedule until `until`."""

    def __init__(self, stack: Stack, seed: int, until: float, gap=(1.5, 6.0), down=(0.2, 3.0)):
        super().__init__(name="chaos", daemon=True)
        self.stack, self.rng, self.until = stack, random.Random(seed), until
        self.gap, self.down = gap, down
        self.kills: list[tuple[float, tuple[str, ...]]] = []
        self.seen: Counter = Counter()     # victim -> kills during which khhf status named it
        self.killed: Counter = Counter()
        self.surprises: list[str] = []     # other daemons found dead

    def run(self) -> None:
        engine = health.health_engine(self.stack.settings)
        try:
            while True:
                wait = self.rng.uniform(*self.gap)
                if time.monotonic() + wait > self.until:
                    return
                time.sleep(wait)
                roll = self.rng.random()
                victims = VICTIMS if roll < 0.2 else (VICTIMS[0],) if roll < 0.6 else (VICTIMS[1],)
                self.kills.append((time.monotonic(), victims))
                for name in victims:
                    self.stack.daemons[name].kill()
                    self.killed[name] += 1
                down = self.rng.uniform(*self.down)
                time.sleep(min(down, 0.3))
                failing = {c.name for c in health.gather(self.stack.settings, engine) if not c.ok}
                for name in victims:
                    if CHECK[name] in failing:
                        self.seen[name] += 1
                time.sleep(max(0.0, down - 0.3))
                self.restart(victims)
                self.check_others()
        finally:
            engine.dispose()

    def restart(self, victims) -> None:
        s = self.stack.settings
        for name in victims:
            self.stack.daemons[name].start()
        for name in victims:
            host, port = {"ami_bridge": (s.bridge_host, s.bridge_port),
                          "webui": (s.web_host, s.web_port)}[name]
            wait_listening(host, port, 30)

    def check_others(self) -> None:
        """A daemon nobody killed that died is a finding (and is restarted)."""
        for name, daemon in self.stack.daemons.items():
            if name not in VICTIMS and daemon.proc.poll() is not None:
                self.surprises.append(f"{name} exited ({daemon.proc.returncode})")
                daemon.start()

    def operator_saw(self) -> str:
        said = ", ".join(f"{CHECK[n]} down in {self.seen[n]}/{self.killed[n]} kills"
                         for n in VICTIMS if self.killed[n])
        return f"khhf status: {said}" if said else ""


def chaos(short: bool, seed: int = 7, engine: str = "sqlite", pg_url: str | None = None,
          workdir: Path | None = None, seconds: float | None = None) -> DrillRow:
    """Run drill 7; `seconds` overrides the length of the fault window."""
    started = time.monotonic()
    seconds = seconds or (60 if short else 600)
    talk = 3.0 if short else 4.0
    # enough tasks and callers for the window: a manager's call takes talk + ~4 s
    plan = Plan(outbound=4 if short else 6, tasks=int(seconds / (talk + 3)) + 5,
                inbound=2, callers=int(seconds / (talk + 6)) + 5)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="khhf-drill-chaos-"))
    row = DrillRow("7 bridge+web killed at random", engine)
    with fresh_database(engine, workdir, pg_url) as url, \
            Stack(workdir, plan, talk_s=talk, database_url=url) as stack:
        stop = threading.Event()
        workers = [ManagerWorker(stack, ext, stop) for ext in plan.out_desks()]
        # each on-duty manager takes about one hotline call at a time
        callers = HotlineCallers(stack, stop, interval=(talk + 6) / plan.inbound)
        killer = Chaos(stack, seed, time.monotonic() + seconds)
        for thread in (*workers, callers, killer):
            thread.start()
        killer.join()
        stop.set()
        for worker in workers:
            worker.join(200)
        hotline = callers.wait(60 + talk)
        (workdir / "managers.log").write_text(
            "\n".join(sorted(e for w in workers for e in w.events)) + "\n")
        killer.check_others()
        numbers = {c.number for w in workers for c in w.clicks} | set(hotline)
        # a row the web wrote before it died, never dialed, is closed by the
        # bridge's sweep after the manager's ring time and a grace (~40 s)
        left = settle(stack, numbers, timeout=120)
        result = account(stack, workers, hotline)
        row.add(result.counts)
        row.notes += result.notes + [f"unexpected: {s}" for s in killer.surprises]
        if left != (0, 0):
            row.notes.append(f"after 120 s still open: {left[0]} rows, "
                             f"{left[1]} recordings unmeasured")
        refused = sum(1 for w in workers for c in w.clicks if c.http_status == 503)
        kills = Counter(v for _, victims in killer.kills for v in victims)
        saw = killer.operator_saw()
        row.operator_saw = f"{saw}; {refused} dials refused with 503 and a message" if saw else ""
        print(f"drill 7: seed {seed}, {len(killer.kills)} kills ({kills['ami_bridge']} bridge, "
              f"{kills['webui']} web) in {seconds:g} s; {len(hotline)} hotline calls; "
              f"work dir {workdir}", file=sys.stderr)
    row.seconds = time.monotonic() - started
    return row
