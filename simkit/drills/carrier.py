"""Drill 4 (issue 19): the carrier trunk fails, and comes back.

A real Asterisk of its own (qualifying the trunk every 2 s), the AMI
bridge with its heartbeat, the web UI (Flask's test client, logged in as
the manager) and SIPp playing the desk phone and the carrier. The manager
dials through the web's dial route, as the page does; the carrier:

1. answers 503 Service Unavailable to every INVITE (and 200 to OPTIONS);
2. swallows every INVITE without a word (and still answers OPTIONS): the
   PBX gives up at SIP timer B (khhf.config trunk_response_seconds);
3. is gone (no SIPp): OPTIONS go unanswered, the PBX marks the trunk
   unreachable and the dial route refuses calls before the desk rings;
4. is back, answering.

What must hold (each broken promise is a note on the row): every dial
ends with carrier_rejected (SIP 503) or carrier_unreachable (SIP 408), as
state failed, the task not charged an attempt; /healthz's trunk check is
red from the streak on and green again once a call gets through;
progressive dial's /next pauses (reason "trunk") while the line is down
and offers a task again after; the manager's desk and phone pages say
中继线路故障 while it is down and not after; the carrier gets one INVITE
per dial (nothing is retried into it); and calls are answered and
recorded again at the end. The call accounting is the shared one
(simkit.drills.account_calls): one final row per dial the web accepted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

from sqlalchemy import select

from khhf import bridge_client, daemon, health
from khhf.calls.states import FINAL_STATES
from khhf.models import Call, Task
from khhf.services import trunk
from simkit.bridge_env import BridgeEnv
from simkit.drills import DrillRow, account_calls
from simkit.harness import PbxHarness
from simkit.web import log_in_as

DESK = "8001"
QUALIFY_SECONDS = 2
QUALIFY_TIMEOUT_SECONDS = 3  # asterisk/pjsip.d/10-trunk.conf qualify_timeout
NOTICE = "中继线路故障"
NOTICE_ID = 'id="trunk-down"'  # templates/manager/_trunk.html


class _Stack:
    """The PBX, the bridge (beating), the web client logged in as the manager."""

    def __init__(self, workdir: Path, database_url: str | None):
        self.harness = PbxHarness(workdir / "pbx", name=f"drill4{os.getpid()}",
                                  trunk_qualify_seconds=QUALIFY_SECONDS).__enter__()
        self.env = BridgeEnv(self.harness, workdir, database_url)
        # the customer's phone may ring longer than the carrier may stay
        # silent (trunk_response_seconds), as in production (45 s and 8 s)
        self.env.settings = dataclasses.replace(
            self.env.settings, customer_ring_seconds=self.env.settings.trunk_response_seconds + 7)
        self.env.start()
        self.settings = self.env.settings
        beat = daemon.Heartbeat(self.settings, "bridge", interval=1.0)
        self.beat = beat
        self.beating = asyncio.run_coroutine_threadsafe(
            beat.keep_async(self.env.bridge.health_state), self.env.loop)
        app, _ = self.env.web_app(f"m{DESK}")
        app.config["WTF_CSRF_ENABLED"] = False
        self.app, self.client = app, app.test_client()
        log_in_as(self.client, app, f"m{DESK}")
        self.harness.desk_phone(DESK, calls=None, run_limit=None)
        self.carrier = None
        self.numbers: dict[str, int] = {}   # every dial the web accepted
        self.invites: set[str] = set()       # the INVITEs' Call-IDs the carriers got

    def close(self) -> None:
        self.beating.cancel()
        self.beat.clear()
        self.env.stop()
        self.harness.__exit__(None, None, None)
        self.env.engine.dispose()

    # -- the carrier -----------------------------------------------------------------
    def carrier_plays(self, scenario: str | None, **kwargs) -> None:
        """Replace the carrier by SIPp playing `scenario` (None: no carrier at
        all), and wait for the PBX's qualify to see it: an OPTIONS sent in
        the moment between the two SIPps goes unanswered, and the trunk is
        unreachable until a later one is answered."""
        self.count_invites()
        if self.carrier is not None:
            self.carrier.stop()
        if scenario is None:
            self.carrier = None
            self.wait_pbx_trunk(down=True)
            return
        self.carrier = self.harness.trunk(scenario, calls=None, run_limit=None, **kwargs)
        time.sleep(QUALIFY_SECONDS + QUALIFY_TIMEOUT_SECONDS + 1)
        self.wait_pbx_trunk(down=False)

    def count_invites(self) -> None:
        """Add the current carrier's INVITEs (by Call-ID: a retransmission is
        the same INVITE, even when the next carrier gets it)."""
        if self.carrier is not None:
            self.invites |= {m.header("Call-ID") for m in self.carrier.received("INVITE")}

    def pbx_trunk_state(self) -> str | None:
        return health.trunk_contact_status(self.settings)

    def wait_pbx_trunk(self, down: bool, timeout: float = 60) -> None:
        """Wait until the PBX's qualify (through the bridge's heartbeat) says so."""
        deadline = time.monotonic() + timeout
        while (self.pbx_trunk_state() == trunk.PBX_UNAVAILABLE) != down or \
                self.pbx_trunk_state() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the PBX's view of the trunk is {self.pbx_trunk_state()}, "
                                     f"not {'down' if down else 'up'}, after {timeout} s")
            time.sleep(0.2)

    # -- the manager ---------------------------------------------------------------------
    def dial(self, number: str, wait: float = 90) -> tuple[int | None, str, float]:
        """Dial `number` as the page does: (call id or None, the web's answer, seconds
        from the click to the call's final row)."""
        self.wait_desk_free()
        task_id = self.env.task_for(DESK, number)
        started = time.monotonic()
        answer = self.client.post(f"/calls/dial/{task_id}",
                                  headers={"Accept": "application/json"}).get_json()
        if not answer.get("ok"):
            return None, answer.get("message", ""), 0.0
        self.numbers[number] = self.numbers.get(number, 0) + 1
        call = self.env.wait_final(answer["call_id"], timeout=wait)
        return call.id, answer.get("message", ""), time.monotonic() - started

    def wait_desk_free(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while DESK in bridge_client.live(self.settings).endpoints:
            if time.monotonic() > deadline:
                raise AssertionError(f"desk phone {DESK} still on a call after {timeout} s")
            time.sleep(0.1)

    def trunk_check(self) -> dict:
        """/healthz's trunk check (what `khhf status` and the staff banner show)."""
        body = self.client.get("/healthz").get_json()
        return next(c for c in body["checks"] if c["name"] == "trunk")

    def next_reason(self) -> str | None:
        return self.client.get("/manager/next").get_json().get("reason")

    def pages_say_down(self) -> list[bool]:
        """Whether the manager's desk and phone home pages carry the notice."""
        return [NOTICE_ID in page and NOTICE in page.split(NOTICE_ID, 1)[1][:80]
                for page in (self.client.get(p).get_data(as_text=True)
                             for p in ("/manager/", "/m/"))]

    def call(self, call_id: int) -> tuple[Call, Task]:
        with self.env.sessions() as s:
            call = s.get(Call, call_id)
            task = s.get(Task, call.task_id)
            s.expunge_all()
        return call, task


def carrier_failure(short: bool, workdir: Path | None = None,
                    database_url: str | None = None) -> DrillRow:
    """Run drill 4; `short`: a few calls per phase (the test), else ten (bench)."""
    import tempfile
    workdir = Path(workdir or tempfile.mkdtemp(prefix="khhf-drill4-"))
    per_phase = 3 if short else 10
    engine_name = "postgresql" if (database_url or "").startswith("postgresql") else "sqlite"
    row = DrillRow("4 carrier trunk fails", engine_name)
    began = time.monotonic()
    stack = _Stack(workdir, database_url)
    seen: list[str] = []
    notes = row.notes
    number = iter(f"1381000{i:04d}" for i in range(10000))
    try:
        stack.wait_pbx_trunk(down=True)  # no carrier yet: qualify finds nobody

        # 1. 503 to every INVITE -----------------------------------------------------------
        stack.carrier_plays("reject.xml", fill={"CODE": 503, "REASON": "Service Unavailable"})
        slowest = 0.0
        for i in range(max(per_phase, trunk.FAILURE_STREAK)):
            call_id, message, seconds = stack.dial(next(number))
            if call_id is None:
                notes.append(f"503 phase: dial {i + 1} refused: {message}")
                continue
            slowest = max(slowest, seconds)
            call, task = stack.call(call_id)
            if (call.state, call.outcome, call.sip_code) != ("failed", "carrier_rejected", 503):
                notes.append(f"503 phase: call {call_id} ended {call.state}/{call.outcome}/"
                             f"SIP {call.sip_code}, not failed/carrier_rejected/503")
            if (task.status, task.attempts) != ("pending", 0):
                notes.append(f"503 phase: the task was charged ({task.status}, "
                             f"{task.attempts} attempts)")
        seen.append(f"503: dials end in ≤{slowest:.1f} s as carrier_rejected (SIP 503)")
        _expect_down(stack, "503 phase", notes, seen)

        # 2. INVITEs swallowed, OPTIONS answered -----------------------------------------------
        stack.carrier_plays("silent.xml")
        slowest = 0.0
        for i in range(1 if short else per_phase):
            call_id, message, seconds = stack.dial(next(number))
            if call_id is None:
                notes.append(f"silent phase: dial {i + 1} refused: {message}")
                continue
            slowest = max(slowest, seconds)
            call, _task = stack.call(call_id)
            if (call.state, call.outcome, call.sip_code) != ("failed", "carrier_unreachable",
                                                             408):
                notes.append(f"silent phase: call {call_id} ended {call.state}/{call.outcome}/"
                             f"SIP {call.sip_code}, not failed/carrier_unreachable/408")
        seen.append(f"silent: carrier_unreachable (SIP 408) in ≤{slowest:.1f} s")
        _expect_down(stack, "silent phase", notes, seen)

        # 3. no carrier at all: the PBX's qualify says so; dials are refused at once ----
        stack.carrier_plays(None)
        for i in range(per_phase):
            call_id, message, _ = stack.dial(next(number))
            if call_id is not None:
                call, _task = stack.call(call_id)
                notes.append(f"gone phase: dial {i + 1} was placed ({call.outcome}), "
                             f"not refused")
            elif NOTICE not in message:
                notes.append(f"gone phase: the refusal does not say {NOTICE}: {message}")
        seen.append(f"gone: dials refused at once ({NOTICE})")
        _expect_down(stack, "gone phase", notes, seen)

        # 4. the carrier is back -----------------------------------------------------------
        stack.carrier_plays("answer_hangup.xml", duration_ms=1000)
        for i in range(per_phase):
            call_id, message, _ = stack.dial(next(number))
            if call_id is None:
                notes.append(f"back: dial {i + 1} refused: {message}")
                continue
            call = stack.env.wait_final(call_id, recording=True)
            if call.outcome != "answered":
                notes.append(f"back: call {call_id} ended {call.outcome}, not answered")
        check = stack.trunk_check()
        if not check["ok"]:
            notes.append(f"back: /healthz trunk still red: {check['detail']}")
        if stack.next_reason() == "trunk":
            notes.append("back: progressive dial still paused")
        if any(stack.pages_say_down()):
            notes.append(f"back: the manager's pages still say {NOTICE}")
        seen.append(f"back: calls answered; trunk check green ({check['detail']})")

        stack.count_invites()
        placed = sum(stack.numbers.values())
        if len(stack.invites) > placed:
            notes.append(f"the carrier got {len(stack.invites)} INVITEs for {placed} calls: "
                         f"something retried")
        with stack.env.sessions() as s:
            calls = list(s.scalars(select(Call).where(
                Call.customer_number.in_(list(stack.numbers)))))
            s.expunge_all()
        open_rows = [c.id for c in calls if c.state not in FINAL_STATES]
        if open_rows:
            notes.append(f"calls left open: {open_rows}")
        row.add(account_calls(calls, stack.numbers, stack.settings.recordings_dir))
    finally:
        stack.close()
    row.operator_saw = "; ".join(seen)
    row.seconds = round(time.monotonic() - began, 1)
    return row


def _expect_down(stack: _Stack, phase: str, notes: list[str], seen: list[str]) -> None:
    """The operator and the manager are told the line is down; progressive dial waits."""
    check = stack.trunk_check()
    if check["ok"]:
        notes.append(f"{phase}: /healthz trunk check green: {check['detail']}")
    else:
        seen.append(f"/healthz trunk: {check['detail']}")
    if stack.next_reason() != "trunk":
        notes.append(f"{phase}: progressive dial not paused")
    if not all(stack.pages_say_down()):
        notes.append(f"{phase}: the manager's pages do not say {NOTICE}")

