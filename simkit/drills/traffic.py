"""The callers of the chaos drill and the soak, and the accounting after.

- `ManagerWorker`: one manager in the web UI, a thread: open the task
  list, click 呼叫 on the next task, watch the call, file its result (or
  leave it to the SMS prompt), next task. What every click got is kept.
- `HotlineCallers`: customers calling the unified number (one SIPp each),
  spread over the on-duty managers.
- `MobileReplies`: the managers' mobiles answering result prompts that
  reach the SMSC simulator, with code 1.
- `account`: after recovery, the rows against what the callers did.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import threading
import time
from collections import Counter

from sqlalchemy import func, select

from khhf.calls.states import FINAL_STATES, CallOutcome, colleague_extension
from khhf.models import Call, Feedback, SmsMessage, Task, TaskStatus

from .stack import ManagerClient, Stack, WebError

WATCH_SECONDS = 150   # a click's call is watched this long for its end


@dataclasses.dataclass
class Click:
    task_id: int
    number: str
    at: float
    http_status: int | None = None   # None: no answer (the web was down or died)
    call_id: int | None = None
    message: str = ""


class ManagerWorker(threading.Thread):
    """A manager working through their tasks in the web UI until `stop`.
    `results`: 'web' files code 1 on the task page once the call has
    ended; 'sms' leaves it to the SMS prompt."""

    def __init__(self, stack: Stack, ext: str, stop: threading.Event, results: str = "web",
                 pause: float = 0.5, poll: float = 0.5):
        super().__init__(name=f"manager-{ext}", daemon=True)
        self.stack, self.ext, self.stop_flag, self.mode = stack, ext, stop, results
        self.pause, self.poll = pause, poll
        self.tasks = stack.tasks_of(ext)
        self.clicks: list[Click] = []
        self.filed: dict[int, list[str]] = {}   # task id -> what each post got
        self.http_errors: Counter = Counter()   # what the web answered that it should not
        self.client = ManagerClient(stack.url, f"m{ext}")
        self.events: list[str] = []   # what this manager did, for the drill's work dir

    def note(self, what: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} m{self.ext} {what}")

    def run(self) -> None:
        queue = list(self.tasks)
        while queue and not self.stop_flag.is_set():
            task_id, number = queue[0]
            try:
                self.client.home()
            except WebError as error:
                self.note(f"task list: {error}")
                time.sleep(1)   # nothing clicked yet: the same task again
                continue
            queue.pop(0)
            click = Click(task_id, number, time.time())
            self.clicks.append(click)
            try:
                click.http_status, answer = self.client.dial(task_id)
            except WebError as error:
                click.message = str(error)
                self.note(f"dial task {task_id}: {error}")
                time.sleep(1)
                continue
            click.message = answer.get("message", "")
            click.call_id = answer.get("call_id")
            self.note(f"dial task {task_id}: {click.http_status} call {click.call_id} {click.message}")
            if click.http_status >= 500 and click.http_status != 503:
                self.http_errors[click.http_status] += 1
            if click.call_id is None:
                time.sleep(1)   # the manager reads the message and tries the next task
                continue
            outcome = self._watch(click.call_id)
            self.note(f"call {click.call_id}: {outcome}")
            if outcome == CallOutcome.ANSWERED and self.mode == "web":
                self._file(task_id, click.call_id)
            time.sleep(self.pause)

    def _watch(self, call_id: int) -> str | None:
        """Poll the call's state (the page's script does) until it is final."""
        deadline = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < deadline:
            try:
                state = self.client.call_status(call_id)
                if state.get("final"):
                    return state.get("outcome")
            except WebError:
                pass
            time.sleep(self.poll)
        return None

    def _file(self, task_id: int, call_id: int) -> None:
        """File code 1; after a lost answer, post again, as a manager would."""
        got = self.filed.setdefault(task_id, [])
        for _attempt in range(30):
            try:
                if not self.client.token:
                    self.client.home()
                got.append(self.client.file_result(task_id, self.stack.final_code, call_id))
                self.note(f"result of task {task_id}: {got[-1]}")
                if got[-1].startswith("refused"):
                    time.sleep(1)
                    self.client.home()   # maybe logged out with the session: look again
                    continue
                return
            except WebError as error:
                got.append(f"error: {error}")
                self.note(f"result of task {task_id}: {error}")
                time.sleep(1)


class HotlineCallers(threading.Thread):
    """Customers of the on-duty managers calling the unified number, one
    every `interval` seconds, each number once, until `stop`."""

    def __init__(self, stack: Stack, stop: threading.Event, interval: float):
        super().__init__(name="hotline-callers", daemon=True)
        self.stack, self.stop_flag, self.interval = stack, stop, interval
        per_desk = [stack.callers_of(ext) for ext in stack.plan.in_desks()]
        self.numbers = [n for group in zip(*per_desk) for n in group]
        self.calls: dict[str, object] = {}   # number -> its SIPp

    def run(self) -> None:
        for number in self.numbers:
            if self.stop_flag.wait(self.interval):
                return
            try:
                self.calls[number] = self.stack.hotline_call(number)
            except RuntimeError:
                continue   # SIPp did not start: no call placed

    def wait(self, timeout: float) -> dict[str, int | None]:
        """number -> SIPp's exit code (0: answered and hung up by the PBX)."""
        deadline = time.monotonic() + timeout
        codes = {}
        for number, sipp in self.calls.items():
            try:
                codes[number] = sipp.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:   # still on: counted as not answered
                codes[number] = None
            sipp.stop()
        return codes


class MobileReplies(threading.Thread):
    """The managers' mobiles: each result prompt the SMSC takes is answered
    '#<ref> 1' from the mobile it went to."""

    def __init__(self, stack: Stack, stop: threading.Event, delay: float = 1.0):
        super().__init__(name="mobiles", daemon=True)
        self.stack, self.stop_flag, self.delay = stack, stop, delay
        self.replied = 0
        self.seen = 0

    def run(self) -> None:
        while not self.stop_flag.wait(self.delay):
            submits = self.stack.smsc.received()
            for submit in submits[self.seen:]:
                # a prompt says '#<ref> <task type> <number>'; the other texts
                # naming a reference go on with the number (no reply to those)
                ref = re.search(r"#(\d+) [^\d\s]", sms_text(submit))
                if ref and submit["to"].startswith("138"):
                    try:
                        self.stack.smsc.deliver(submit["to"], f"#{ref.group(1)} 1")
                        self.replied += 1
                    except OSError:
                        pass
            self.seen = len(submits)


def sms_text(submit: dict) -> str:
    """The text of one submit_sm the SMSC logged (UCS-2 or GSM, with or
    without a concatenation header)."""
    data = bytes.fromhex(submit["sm"])
    if submit.get("esm_class", 0) & 0x40 and data:
        data = data[1 + data[0]:]
    if submit.get("data_coding") == 8:
        return data.decode("utf-16-be", errors="replace")
    return data.decode("latin-1")


def final_and_filled(stack: Stack, numbers: set[str]) -> tuple[int, int]:
    """(rows not yet final, answered rows whose recording is not yet measured)."""
    with stack.sessions() as s:
        open_rows = s.scalar(select(func.count()).select_from(Call).where(
            Call.customer_number.in_(numbers), Call.state.not_in(FINAL_STATES)))
        unmeasured = s.scalar(select(func.count()).select_from(Call).where(
            Call.customer_number.in_(numbers), Call.state.in_(FINAL_STATES),
            Call.answer_at.is_not(None), Call.recording_path.is_not(None),
            Call.recording_sha256.is_(None)))
    return open_rows, unmeasured


def settle(stack: Stack, numbers: set[str], timeout: float) -> tuple[int, int]:
    """Wait until every row of `numbers` is final with its recording measured
    (the reconciler's sweep closes a never-placed row after the manager's
    ring time and a grace); return what is still open."""
    deadline = time.monotonic() + timeout
    while True:
        left = final_and_filled(stack, numbers)
        if left == (0, 0) or time.monotonic() > deadline:
            return left
        time.sleep(1)


@dataclasses.dataclass
class Accounting:
    expected: dict[str, int]
    counts: dict[str, int]
    notes: list[str]


def account(stack: Stack, workers: list[ManagerWorker], hotline: dict[str, int | None],
            damaged=lambda call: False) -> Accounting:
    """Rows against what the callers did.

    Outbound: a click counts as a placed call when it was answered with a
    call id, or the carrier got an INVITE for its number, or a row exists
    for it (a click whose answer was lost: the web died after writing the
    row); a click refused before any row was written placed nothing. A
    placed call must have one final row; if the carrier got its INVITE the
    outcome is 'answered' (the carrier answers every call), else 'not
    placed'. Inbound: every call SIPp placed has one final row, 'answered'
    when SIPp saw the call through. Results: at most one per task, and one
    where the manager was told it was saved."""
    from simkit.drills import account_calls
    invited = stack.invited_numbers()
    clicks = [c for w in workers for c in w.clicks]
    clicked = {c.number for c in clicks}
    with stack.sessions() as s:
        calls = list(s.scalars(select(Call).where(
            Call.customer_number.in_(clicked | set(hotline)))))
        feedback = Counter(s.scalars(select(Feedback.task_id).where(
            Feedback.task_id.in_({c.task_id for c in clicks}))))
        # an answered call leaves its task waiting for the result (or done)
        stale_tasks = Counter(s.scalars(select(Task.status).join(Call, Call.task_id == Task.id)
                                        .where(Call.customer_number.in_(clicked),
                                               Call.outcome == CallOutcome.ANSWERED,
                                               Task.status.not_in((TaskStatus.CONNECTED,
                                                                   TaskStatus.DONE)))))
    with_row = {c.customer_number for c in calls}
    expected = {c.number: 1 for c in clicks
                if c.call_id is not None or c.number in invited or c.number in with_row}
    expected.update({number: 1 for number in hotline})
    counts = account_calls(calls, expected, stack.settings.recordings_dir, damaged)
    notes = []
    if counts["rec_silent"]:
        notes += recording_problems(calls, expected, stack.settings.recordings_dir)
    wrong = Counter()
    for call in calls:
        if call.state not in FINAL_STATES:
            continue
        if call.direction == "outbound":
            want = CallOutcome.ANSWERED if call.customer_number in invited else CallOutcome.NOT_PLACED
            right = call.outcome == want
        else:   # the caller was answered: by the desk, the mobile or a colleague
            want = "answered by someone"
            right = hotline.get(call.customer_number) != 0 or call.outcome in (
                CallOutcome.DESK, CallOutcome.MOBILE) or colleague_extension(call.outcome)
        if not right:
            wrong[f"{call.direction} {call.outcome} (expected {want})"] += 1
    notes += [f"{n} {what}" for what, n in sorted(wrong.items())]
    notes += [f"{n} answered calls left their task {status}" for status, n in stale_tasks.items()]
    doubled = sum(1 for n in feedback.values() if n > 1)
    if doubled:
        notes.append(f"{doubled} tasks with their result filed twice")
    told_saved = {t for w in workers for t, got in w.filed.items()
                  if "saved" in got or "closed" in got}
    missing = sorted(t for t in told_saved if feedback[t] == 0)
    if missing:
        notes.append(f"{len(missing)} results the manager was told were saved are missing")
    raw = sum((w.http_errors for w in workers), Counter())
    if raw:
        notes.append("the web answered " + ", ".join(f"{n} x HTTP {c}" for c, n in raw.items()))
    return Accounting(expected, counts, notes)


def recording_problems(calls, expected, recordings_dir, limit: int = 5) -> list[str]:
    """What is wrong with the recordings account_calls counted as silent, in words."""
    from simkit.drills import RECORDING_TOLERANCE_S, wav_seconds
    out = []
    for call in calls:
        if call.customer_number not in expected or not call.answer_at or not call.talk_seconds:
            continue
        seconds = wav_seconds(recordings_dir / call.recording_path) if call.recording_path else None
        if seconds is None or abs(seconds - call.talk_seconds) > RECORDING_TOLERANCE_S:
            out.append(f"call {call.id} ({call.direction}, {call.outcome}): talk "
                       f"{call.talk_seconds} s, recording {call.recording_path or 'none'} "
                       f"{'unreadable' if seconds is None else f'{seconds:.1f} s'}")
    return out[:limit]


def sms_once(stack: Stack) -> tuple[int, bool]:
    """(SMS the gateway sent, whether the SMSC took each part exactly once)."""
    with stack.sessions() as s:
        sent = s.execute(select(SmsMessage.parts).where(
            SmsMessage.direction == "out", SmsMessage.smpp_message_id.is_not(None))).all()
    submits = stack.smsc.received()
    parts = Counter((m["to"], m["sm"]) for m in submits)
    return len(sent), (sum(p for (p,) in sent) == len(submits)
                       and all(n == 1 for n in parts.values()))
