"""Fault drills 3 and 5 (issue 19): the recordings disk fills during calls,
and the PBX restarts gracefully under live calls. Real Asterisk, real SIPp
parties, the real bridge (simkit.bridge_env); each returns a `DrillRow`.

Drill 3, `recordings_disk_full`: the recordings directory is a tmpfs of a
few MB mounted for the drill (root only; unmounted in `finally`), which a
ballast file fills step by step between rounds of recorded calls: with
room, below the warning threshold (recordings_min_free_mb), nearly full
(recordings are cut off mid-call), full (nothing is recorded). The calls
must go on regardless; each row must say complete, partial or missing; the
disk check must be red before the first recording is damaged; the database
and the logs (elsewhere) must go on being written.

Drill 5, `pbx_graceful_restart`: calls are up when `core restart
gracefully` is given (Pbx.restart_gracefully). Dials from the web UI are
then refused before anything rings, with the restart's own message; the
calls in progress end normally and their rows complete; Asterisk restarts;
the bridge logs in again by itself, and a new call goes through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from khhf import bridge_client, health
from khhf.calls.states import FINAL_STATES, RecordingStatus
from khhf.daemon import Heartbeat
from khhf.models import Call
from simkit.bridge_env import BridgeEnv
from simkit.drills import DrillRow, account_calls
from simkit.harness import PbxHarness
from simkit.web import csrf_token, log_in

DESKS = ("8001", "8002", "8003")
DAMAGED = (RecordingStatus.PARTIAL, RecordingStatus.MISSING)
# MixMonitor's WAV: 8 kHz, 16-bit, mono
WAV_BYTES_PER_SECOND = 16000


def damaged(call: Call) -> bool:
    """The row itself says its recording is partial or missing (account_calls' hook)."""
    return call.recording_status in DAMAGED


def _wait(what: str, predicate: Callable[[], object], timeout: float = 60,
          step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)


def _calls(env: BridgeEnv, numbers) -> list[Call]:
    with env.sessions() as s:
        rows = list(s.scalars(select(Call).where(Call.customer_number.in_(list(numbers)))))
        s.expunge_all()
    return rows


def _settled(env: BridgeEnv, numbers) -> bool:
    """Every call to `numbers` is final and its recording judged (or none was made)."""
    rows = _calls(env, numbers)
    return len(rows) == len(numbers) and all(
        c.state in FINAL_STATES and (c.recording_path is None or c.recording_status is not None)
        for c in rows)


class _Numbers:
    """A fresh customer number for every call a drill places: one row per number."""

    def __init__(self, prefix: str):
        self.prefix, self.n, self.all = prefix, 0, {}

    def next(self) -> str:
        self.n += 1
        number = f"{self.prefix}{self.n:04d}"
        self.all[number] = 1
        return number


# -- drill 3: the recordings disk fills ---------------------------------------------------
def recordings_disk_full(short: bool, workdir: Path | None = None,
                         database_url: str | None = None) -> DrillRow:
    """Rounds of three recorded calls while a tmpfs recordings disk fills up."""
    started = time.monotonic()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="drill-disk-"))
    talk_s = 4 if short else 8
    rounds_per_phase = 1 if short else 3
    disk_mb = 2 if short else 8
    threshold_mb = 1 if short else 4
    row = DrillRow("recordings disk full", "postgresql" if database_url else "sqlite")
    harness = PbxHarness(workdir / "pbx", name=f"dfull{os.getpid()}")
    recordings = harness.settings.recordings_dir
    recordings.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={disk_mb}m,mode=0755",
                    "khhf-drill-recordings", str(recordings)], check=True)
    try:
        with harness:
            env = BridgeEnv(harness, workdir, database_url=database_url)
            settings = dataclasses.replace(env.settings, recordings_min_free_mb=threshold_mb)
            env.start()
            try:
                _disk_full_rounds(harness, env, settings, row, talk_s, rounds_per_phase)
            except AssertionError as exc:  # a step that never came: the row says which
                row.notes.append(str(exc))
            finally:
                env.stop()
                env.engine.dispose()
    finally:
        if subprocess.run(["umount", str(recordings)], capture_output=True).returncode:
            subprocess.run(["umount", "--lazy", str(recordings)], capture_output=True)
    row.seconds = round(time.monotonic() - started, 1)
    return row


def _disk_full_rounds(harness: PbxHarness, env: BridgeEnv, settings, row: DrillRow,
                      talk_s: int, rounds_per_phase: int) -> None:
    recordings = settings.recordings_dir
    ballast = recordings / "ballast"
    cel = settings.pbx_dir / "log" / "cel-custom" / "khhf-cel.csv"
    phases = ("room", "warned", "nearly full", "full")
    rounds = len(phases) * rounds_per_phase
    phones = [harness.desk_phone(ext, calls=rounds, run_limit="900s") for ext in DESKS]
    trunk = harness.trunk("answer_hangup.xml", duration_ms=talk_s * 1000,
                          calls=rounds * len(DESKS), run_limit="900s")
    numbers = _Numbers("1391500")
    round_bytes = len(DESKS) * talk_s * WAV_BYTES_PER_SECOND
    checks: dict[str, health.Check] = {}
    first_damage_phase = None
    cel_before_full = 0
    for phase in phases:
        free = shutil.disk_usage(recordings).free
        # the ballast leaves what the phase is about
        leave = {"room": free,
                 "warned": min(free, settings.recordings_min_free_mb * 2**20 - 64 * 1024),
                 "nearly full": round_bytes // 2,
                 "full": 0}[phase]
        _grow(ballast, free - leave)
        checks[phase] = health.check_disk(settings)
        if phase == "full":
            cel_before_full = cel.stat().st_size
        for _ in range(rounds_per_phase):
            placed = [numbers.next() for _ in DESKS]
            for ext, number in zip(DESKS, placed):
                env.dial(ext, number)
            _wait(f"the {phase} round's calls final and judged",
                  lambda: _settled(env, placed), timeout=talk_s + 60)
        if first_damage_phase is None and any(
                damaged(c) for c in _calls(env, numbers.all)):
            first_damage_phase = phase
    # the parties saw every call through: nothing was cut
    for party, name in [(trunk, "the carrier")] + [(p, f"desk {e}") for p, e in zip(phones, DESKS)]:
        if party.wait(talk_s + 60) != 0:
            row.notes.append(f"{name}'s SIPp did not complete its calls normally: "
                             f"{party.trace_summary()[-300:]}")
    calls = _calls(env, numbers.all)
    row.add(account_calls(calls, numbers.all, recordings, damaged=damaged))
    # nothing else starved: the CEL log (another disk) grew through the full phase, and
    # the database took every row's end and judgement after the disk was full
    if cel.stat().st_size <= cel_before_full:
        row.notes.append("Asterisk's CEL log stopped growing while the recordings disk was full")
    if not any(c.recording_status == RecordingStatus.MISSING for c in calls):
        row.notes.append("no call was made on the full disk (no recording marked missing)")
    warned = checks["warned"]
    if not checks["room"].ok:
        row.notes.append(f"the disk check was red with room to spare: {checks['room'].detail}")
    if warned.ok:
        row.notes.append(f"the disk check did not turn red below the threshold: {warned.detail}")
    if first_damage_phase in ("room", "warned"):
        row.notes.append(f"a recording was damaged in the {first_damage_phase!r} phase, "
                         f"before the disk was nearly full")
    elif not warned.ok:
        row.operator_saw = (f"disk check red before any recording was damaged "
                            f"({warned.detail}); damaged recordings marked partial/missing "
                            f"on the call rows and the recordings page")


def _grow(path: Path, size: int) -> None:
    """Add `size` bytes (written, not sparse: tmpfs counts what is written) to `path`."""
    if size <= 0:
        return
    chunk = b"\0" * (1 << 16)
    with open(path, "ab") as fh:
        try:
            while size > 0:
                size -= fh.write(chunk[:min(size, len(chunk))])
            fh.flush()
        except OSError:
            pass  # full: that is what "full" means


# -- drill 5: the PBX restarts gracefully under live calls -------------------------------
def pbx_graceful_restart(short: bool, workdir: Path | None = None,
                         database_url: str | None = None) -> DrillRow:
    """Live calls, `core restart gracefully`, dials refused, the calls finish,
    Asterisk restarts, the bridge reconnects, a new call goes through."""
    started = time.monotonic()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="drill-restart-"))
    talk_s = 8 if short else 20
    tries = 2 if short else 10   # dials tried while the PBX is shutting down
    row = DrillRow("graceful PBX restart", "postgresql" if database_url else "sqlite")
    with PbxHarness(workdir / "pbx", name=f"grest{os.getpid()}") as harness:
        env = BridgeEnv(harness, workdir, database_url=database_url).start()
        try:
            _graceful_restart(harness, env, row, talk_s, tries)
        except AssertionError as exc:  # a step that never came: the row says which
            row.notes.append(str(exc))
        finally:
            env.stop()
            env.engine.dispose()
    row.seconds = round(time.monotonic() - started, 1)
    return row


def _startup_time(harness: PbxHarness) -> str:
    async def ask():
        client = harness.ami(event_mask="off")
        await client.connect()
        try:
            answer = await client.action({"Action": "CoreStatus"})
        finally:
            client.close()
        return f"{answer.get('CoreStartupDate')} {answer.get('CoreStartupTime')}"
    return asyncio.run(ask())


def _graceful_restart(harness: PbxHarness, env: BridgeEnv, row: DrillRow, talk_s: int,
                      tries: int) -> None:
    settings = env.settings
    numbers = _Numbers("1391600")
    live_desks, spare = DESKS[:2], DESKS[2]
    phones = [harness.desk_phone(ext, run_limit="600s") for ext in live_desks]
    spare_phone = harness.desk_phone(spare, run_limit="600s")
    trunk = harness.trunk("answer_hangup.xml", duration_ms=talk_s * 1000,
                          calls=len(live_desks) + 1, run_limit="600s")
    app, password = env.web_app(f"m{spare}")
    client = app.test_client()
    login = log_in(client, f"m{spare}", password)
    assert login.status_code in (302, 303), f"log-in as m{spare} failed: {login.status_code}"
    token = csrf_token(client, "/manager/")
    booted = _startup_time(harness)

    live = [env.dial(ext, numbers.next()) for ext in live_desks]
    for call_id in live:
        env.wait_state(call_id, "connected", timeout=30)
    restart = harness.pbx.restart_gracefully()
    _wait("the bridge seeing the PBX shut down", lambda: _refused_as_restarting(settings))
    beat = Heartbeat(settings, "bridge")
    beat.beat(asyncio.run_coroutine_threadsafe(env.bridge.health_state(), env.loop).result(10))
    pbx_check = health.check_pbx(settings)

    refused = 0
    refused_numbers = []
    for _ in range(tries):
        number = numbers.next()
        refused_numbers.append(number)
        task_id = env.task_for(spare, number)
        answer = _dial(client, task_id, token)
        message = (answer.get_json() or {}).get("message", "")
        if answer.status_code == 503 and "正在重启" in message:
            refused += 1
        else:
            row.notes.append(f"a dial during the restart got {answer.status_code}: {message}")
        time.sleep(0.5)
    for number in refused_numbers:  # refused before the row: the task stays to be called
        numbers.all.pop(number)
    # the calls in progress finish normally, and their rows complete
    for call_id in live:
        call = env.wait_final(call_id, timeout=talk_s + 60)
        if (call.outcome, call.hangup_by) != ("answered", "customer") or \
                abs((call.talk_seconds or 0) - talk_s) > 1:
            row.notes.append(f"call {call_id} ended {call.outcome} by {call.hangup_by} after "
                             f"{call.talk_seconds} s, not answered and hung up by the "
                             f"customer after {talk_s} s")
    for phone, ext in zip(phones, live_desks):
        if phone.wait(60) != 0:
            row.notes.append(f"desk {ext}'s call did not complete normally")
    # Asterisk restarts by itself; the bridge logs in again
    try:
        restart.wait(120)
    except subprocess.TimeoutExpired:
        restart.kill()
        row.notes.append("Asterisk did not restart within 120 s of the last call's end")
    _wait("the bridge logged in to the restarted PBX",
          lambda: env.bridge.client is not None and not env.bridge.pbx_shutting_down
          and _dial_allowed(settings), timeout=60)
    if _startup_time(harness) == booted:
        row.notes.append("Asterisk did not restart (its start time is unchanged)")
    beat.beat(asyncio.run_coroutine_threadsafe(env.bridge.health_state(), env.loop).result(10))
    after_check = health.check_pbx(settings)
    beat.clear()
    # a new call works
    number = numbers.next()
    task_id = env.task_for(spare, number)
    answer = _dial(client, task_id, token)
    if answer.status_code != 200:
        row.notes.append(f"the first dial after the restart got {answer.status_code}: "
                         f"{(answer.get_json() or {}).get('message')}")
    else:
        call = env.wait_final(answer.get_json()["call_id"], timeout=talk_s + 60)
        if call.outcome != "answered":
            row.notes.append(f"the first call after the restart ended {call.outcome}")
    if trunk.wait(talk_s + 60) != 0:
        row.notes.append("the carrier's SIPp did not complete its calls normally")
    invites = len(spare_phone.received("INVITE"))
    if invites != 1:
        row.notes.append(f"desk {spare} was rung {invites} times; once (after the restart) "
                         f"was right")
    row.add(account_calls(_calls(env, numbers.all), numbers.all, settings.recordings_dir,
                          damaged=damaged))
    if refused == tries and not pbx_check.ok:
        row.operator_saw = (f"{refused} dials refused before ringing (503 “电话系统正在重启…”); "
                            f"pbx check red: {pbx_check.detail}; green after the restart: "
                            f"{after_check.ok}")
    elif pbx_check.ok:
        row.notes.append(f"the pbx check stayed green while Asterisk shut down: "
                         f"{pbx_check.detail}")


def _dial(client, task_id: int, token: str):
    """呼叫 on the manager's page, as its script sends it."""
    return client.post(f"/calls/dial/{task_id}", data={"csrf_token": token},
                       headers={"Accept": "application/json"})


def _refused_as_restarting(settings) -> bool:
    try:
        bridge_client.live(settings)
    except bridge_client.PbxRestarting:
        return True
    except bridge_client.BridgeUnavailable:
        pass
    return False


def _dial_allowed(settings) -> bool:
    try:
        bridge_client.live(settings)
    except bridge_client.BridgeUnavailable:
        return False
    return True

