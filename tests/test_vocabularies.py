"""Every vocabulary has one home (a StrEnum beside its owner): the schema's
CHECK lists are its members, every member has a Chinese and an English label,
and no code spells the final call states out again."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from flask_babel import force_locale

from khhf.calls.states import FINAL_STATES, CallOutcome, CallState, RecordingStatus
from khhf.models import (
    DncChannel,
    FeedbackChannel,
    NumberState,
    SmsKind,
    SmsReplyOutcome,
    SmsStatus,
    TaskKind,
    TaskStatus,
    WebhookEventKind,
    WebhookStatus,
)
from simkit.web import make_app
from webui import i18n

ROOT = Path(__file__).resolve().parent.parent
CJK = re.compile(r"[\u4e00-\u9fff]")

# (table, column) -> its vocabulary
CHECKED = {("tasks", "status"): TaskStatus, ("calls", "state"): CallState,
           ("sms_messages", "status"): SmsStatus, ("sms_messages", "kind"): SmsKind,
           ("sms_messages", "reply_outcome"): SmsReplyOutcome,
           ("calls", "recording_status"): RecordingStatus,
           ("webhook_deliveries", "kind"): WebhookEventKind,
           ("webhook_deliveries", "status"): WebhookStatus,
           ("unified_numbers", "state"): NumberState,
           ("dnc_entries", "channel"): DncChannel, ("task_types", "kind"): TaskKind,
           ("feedback", "channel"): FeedbackChannel}
LABELLED = [(TaskStatus, "TASK_STATUS_LABELS"), (CallState, "CALL_OUTCOME_LABELS"),
            (CallOutcome, "CALL_OUTCOME_LABELS"), (SmsStatus, "SMS_STATUS_LABELS"),
            (SmsKind, "SMS_KIND_LABELS"), (SmsReplyOutcome, "SMS_REPLY_OUTCOME_LABELS"),
            (RecordingStatus, "RECORDING_STATUS_LABELS"), (WebhookStatus, "WEBHOOK_STATUS_LABELS"),
            (NumberState, "NUMBER_STATE_LABELS"),
            (DncChannel, "DNC_CHANNEL_LABELS"), (TaskKind, "TASK_KIND_LABELS"),
            (FeedbackChannel, "CHANNEL_LABELS")]


def schema_checks() -> dict[tuple[str, str], list[str]]:
    """(table, column) -> the values of each `column IN (...)` CHECK in schema.sql."""
    checks = {}
    for table, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\);", (ROOT / "schema.sql")
                                  .read_text(), re.S):
        for column, values in re.findall(r"CHECK \((\w+) IN \(([^)]*)\)\)", body):
            checks[(table, column)] = re.findall(r"'([^']*)'", values)
    return checks


@pytest.mark.parametrize("where", sorted(CHECKED), ids="{0[0]}.{0[1]}".format)
def test_the_schemas_check_lists_the_vocabulary(where):
    assert schema_checks()[where] == [str(m) for m in CHECKED[where]]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return make_app(tmp_path_factory.mktemp("labels"))[0]


@pytest.mark.parametrize("vocabulary,labels", LABELLED, ids=lambda v: getattr(v, "__name__", v))
def test_every_member_has_a_chinese_and_an_english_label(app, vocabulary, labels):
    table = getattr(i18n, labels)
    with app.test_request_context("/"):
        for member in vocabulary:
            assert member in table, f"{vocabulary.__name__}.{member.name} has no label in {labels}"
            with force_locale("en"):
                english = str(table[member])
            with force_locale("zh"):
                chinese = str(table[member])
            assert english and not CJK.search(english), (member, english)
            assert CJK.search(chinese) and chinese != english, (member, chinese)


def test_the_final_call_states_are_written_once():
    """No code lists ended and failed together again: it says FINAL_STATES
    (a tuple, set or SQL list holding both is a second home). A migration
    is exempt: it restates the vocabulary as it was at its revision."""
    assert FINAL_STATES == {CallState.ENDED, CallState.FAILED}
    found = []
    for package in ("khhf", "agi", "ami_bridge", "webui", "khhfcli", "smsgw", "jobs", "pbxctl",
                    "simkit", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                    words = {e.value for e in node.elts if isinstance(e, ast.Constant)}
                    if {"ended", "failed"} <= words:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and re.search(r"'ended',\s*'failed'|'failed',\s*'ended'", node.value):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        for path in (ROOT / package).rglob("*.html"):
            if re.search(r"'ended',\s*'failed'", path.read_text()):
                found.append(str(path.relative_to(ROOT)))
    assert not found, found
