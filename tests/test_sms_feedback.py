"""The SMS result prompt and the reply's rules (khhf.services.sms_feedback),
on SQLite and PostgreSQL made from schema.sql: when a prompt is due and
when not, the menu, and what each kind of reply does."""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import inspect
import json
import re

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select

from khhf import config, db, i18n
from khhf.models import AuditLog, Call, Feedback, ResultCode, SmsMessage, Task
from khhf.services import Problem, hotline, results, sms, sms_feedback, tasks
from simkit import factories

# 11:00 in Beijing: inside the default calling window 08:00-21:00
NOW = dt.datetime(2026, 11, 27, 3, 0)
SETTINGS = dataclasses.replace(config.Settings(), sms_prompt_delay_seconds=120)
MOBILE = "13700000001"
# what no SMS to a manager may contain: an English word (digits, #refs and
# masked numbers are fine)
ENGLISH_WORD = re.compile(r"[A-Za-z]{2,}")


@pytest.fixture(params=["sqlite", "postgresql"])
def s(request, tmp_path):
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'f.db'}")
    else:
        engine = request.getfixturevalue("pg_database")("smsfb")
    db.create_schema(engine)
    with db.session_factory(engine)() as session:
        yield session
    engine.dispose()


@pytest.fixture
def w(s):
    county = factories.county(s, "demo", "示范县", unified="13900000000")
    m1 = factories.manager(s, county, "m1", desk="8001", mobile=MOBILE)
    m2 = factories.manager(s, county, "m2", desk="8002")  # no mobile
    revisit = factories.task_type(s)
    codes = {c.code: c for c in s.scalars(select(ResultCode).where(
        ResultCode.task_type_id == revisit.id))}
    return dict(county=county, m1=m1, m2=m2, codes=codes)


def answered_call(s, w, phone, manager="m1", *, ended=NOW - dt.timedelta(minutes=5),
                  answered=True, task_type=None) -> Call:
    """A task and its finished outbound call, as the AMI bridge leaves them."""
    manager = w[manager]
    customer = factories.customer(s, w["county"], phone, manager, name="客户")
    task = factories.task(s, customer, manager, task_type)
    tasks.dial(task, ended - dt.timedelta(minutes=2))
    call = Call(direction="outbound", task_id=task.id, customer_id=customer.id,
                manager_id=manager.id, county_id=w["county"].id, customer_number=phone,
                state="ended", requested_at=ended - dt.timedelta(minutes=2),
                answer_at=ended - dt.timedelta(minutes=1) if answered else None,
                end_at=ended, outcome="answered" if answered else "no_answer")
    s.add(call)
    s.flush()
    tasks.follow_call(s, task, call, ended)
    s.flush()
    return call


def outbox(s, kind=None):
    query = select(SmsMessage).where(SmsMessage.direction == "out").order_by(SmsMessage.id)
    if kind:
        query = query.where(SmsMessage.kind == kind)
    return list(s.scalars(query))


def reply(s, text, mobile=MOBILE, now=NOW):
    row = sms_feedback.receive(s, mobile, text, settings=SETTINGS, via="cli", now=now)
    s.flush()
    answers = list(s.scalars(select(SmsMessage).where(SmsMessage.reply_to_id == row.id,
                                                      SmsMessage.direction == "out")))
    for answer in answers:
        assert not ENGLISH_WORD.search(answer.body), answer.body
    return row, answers


# -- the prompt -----------------------------------------------------------------------

def test_an_answered_call_gets_one_prompt_with_the_menu_after_the_delay(s, w):
    call = answered_call(s, w, "13800000001", ended=NOW - dt.timedelta(seconds=60))
    assert sms_feedback.send_prompts(s, SETTINGS, NOW) == 0  # the delay is not over
    later = NOW + dt.timedelta(seconds=61)
    assert sms_feedback.send_prompts(s, SETTINGS, later) == 1
    assert sms_feedback.send_prompts(s, SETTINGS, later + dt.timedelta(minutes=5)) == 0
    [prompt] = outbox(s)
    assert (prompt.kind, prompt.call_id, prompt.task_id, prompt.peer_number, prompt.ref) == \
        ("prompt", call.id, call.task_id, MOBILE, "1")
    assert "#1" in prompt.body and "138****0001" in prompt.body and "13800000001" not in \
        prompt.body
    assert "1回访成功 4客户拒绝 5无人接听 6+时间 预约再拨（如 6 1201 1430）" in prompt.body
    entry = s.scalar(select(AuditLog).where(AuditLog.object_type == "sms",
                                            AuditLog.object_id == str(prompt.id)))
    assert json.loads(entry.detail)["fields"] == {"to": "137****0001", "sms_kind": "prompt"}


def test_a_result_filed_first_means_no_prompt(s, w):
    for channel, phone in (("keypad", "13800000002"), ("web", "13800000003")):
        call = answered_call(s, w, phone)
        task = s.get(Task, call.task_id)
        results.file_result(s, w["m1"].user, task.id, w["codes"]["1"].id, channel=channel,
                            settings=SETTINGS, now=NOW - dt.timedelta(minutes=4))
    assert sms_feedback.send_prompts(s, SETTINGS, NOW) == 0
    assert outbox(s) == []


def test_no_prompt_without_mobile_answer_or_for_an_old_call(s, w):
    answered_call(s, w, "13800000004", manager="m2")              # no mobile
    answered_call(s, w, "13800000005", answered=False)            # customer did not answer
    answered_call(s, w, "13800000006", ended=NOW - dt.timedelta(days=2))  # too old
    assert sms_feedback.send_prompts(s, SETTINGS, NOW) == 0


def test_a_prompt_is_never_queued_twice_for_one_call(s, w):
    call = answered_call(s, w, "13800000007")
    assert sms_feedback.send_prompts(s, SETTINGS, NOW) == 1
    # a second sweeper that read the call as due before the first committed
    with pytest.raises(sa_exc.IntegrityError):
        with s.begin_nested():
            s.add(SmsMessage(direction="out", peer_number=MOBILE, body="x", kind="prompt",
                             call_id=call.id))
            s.flush()
    assert len(outbox(s, "prompt")) == 1


def test_references_differ_between_open_prompts(s, w):
    for phone in ("13800000011", "13800000012", "13800000013"):
        answered_call(s, w, phone)
    assert sms_feedback.send_prompts(s, SETTINGS, NOW) == 3
    assert [p.ref for p in outbox(s, "prompt")] == ["1", "2", "3"]


# -- the reply ------------------------------------------------------------------------

def prompted(s, w, *phones):
    calls = [answered_call(s, w, phone) for phone in phones]
    sms_feedback.send_prompts(s, SETTINGS, NOW)
    return calls


def test_a_digit_files_the_result_by_sms_and_confirms(s, w):
    [call] = prompted(s, w, "13800000021")
    row, [answer] = reply(s, "１")
    task = s.get(Task, call.task_id)
    feedback = s.get(Feedback, row.feedback_id)
    assert (row.status, row.reply_outcome, feedback.channel, feedback.call_id) == \
        ("processed", "filed", "sms", call.id)
    assert (task.status, task.result_code_id) == ("done", w["codes"]["1"].id)
    assert answer.body == "【客户回访】已记录 #1 138****0021：回访成功。"
    assert (answer.kind, answer.peer_number) == ("answer", MOBILE)


def test_a_code_of_a_type_an_administrator_made_is_filed_by_sms(s, w):
    """The menu is the type's own, booking code included; a two-digit code
    files."""
    care = factories.custom_task_type(s)
    call = answered_call(s, w, "13800000041", task_type=care)
    sms_feedback.send_prompts(s, SETTINGS, NOW)
    [prompt] = outbox(s, "prompt")
    assert ("1关怀成功 2客户拒绝 3无人接听 7+时间 预约再拨（如 7 1201 1430） 12号码有误"
            in prompt.body)
    row, [answer] = reply(s, "12")
    task = s.get(Task, call.task_id)
    assert (row.reply_outcome, s.get(Feedback, row.feedback_id).channel) == ("filed", "sms")
    assert (task.status, task.result_code.code, task.task_type_id) == ("done", "12", care.id)
    assert answer.body == "【客户回访】已记录 #1 138****0041：号码有误。"


def test_a_call_back_time_books_the_task(s, w):
    [call] = prompted(s, w, "13800000022")
    row, [answer] = reply(s, "6 1201 1430")
    task = s.get(Task, call.task_id)
    # 1 December 14:30 in Beijing is 06:30 UTC
    assert (task.status, task.appointment_at) == ("pending", dt.datetime(2026, 12, 1, 6, 30))
    assert "已预约 12月01日 14:30 再拨" in answer.body


def test_a_time_outside_the_calling_window_is_refused_with_the_reason(s, w):
    [call] = prompted(s, w, "13800000023")
    row, [answer] = reply(s, "6 1201 2230")
    assert row.reply_outcome == "refused" and s.get(Task, call.task_id).status == "connected"
    assert "只在 08:00-21:00（北京时间）之间呼叫" in answer.body and "6+时间" in answer.body


def test_an_unclear_reply_gets_one_help_sms(s, w):
    prompted(s, w, "13800000024")
    row, [answer] = reply(s, "好的")
    assert row.reply_outcome == "unclear"
    assert "未能识别" in answer.body and "#1 138****0024" in answer.body \
        and "1回访成功" in answer.body
    again, answers = reply(s, "好的")
    assert (again.reply_outcome, answers) == ("duplicate", [])


def test_several_open_prompts_and_no_reference_asks_for_it(s, w):
    first, second = prompted(s, w, "13800000025", "13800000026")
    row, [answer] = reply(s, "1")
    assert row.reply_outcome == "ambiguous"
    assert "2条待反馈" in answer.body and "#1 138****0025、#2 138****0026" in answer.body
    row, [answer] = reply(s, "1 #2")
    assert row.reply_outcome == "filed" and s.get(Task, second.task_id).status == "done"
    assert s.get(Task, first.task_id).status == "connected"
    # one prompt open now: a bare digit answers it
    row, _ = reply(s, "4")
    assert row.reply_outcome == "filed" and s.get(Task, first.task_id).status == "done"


def test_a_duplicate_reply_changes_nothing_and_sends_nothing(s, w):
    prompted(s, w, "13800000027")
    reply(s, "1")
    before = s.scalar(select(func.count()).select_from(Feedback))
    row, answers = reply(s, " 1 ")
    assert (row.reply_outcome, answers) == ("duplicate", [])
    assert s.scalar(select(func.count()).select_from(Feedback)) == before


def test_a_reply_for_a_task_filed_on_the_web_says_so(s, w):
    [call] = prompted(s, w, "13800000028")
    results.file_result(s, w["m1"].user, call.task_id, w["codes"]["4"].id, channel="web",
                        settings=SETTINGS, now=NOW)
    row, [answer] = reply(s, "1", now=NOW + dt.timedelta(seconds=1))
    assert row.reply_outcome == "already_filed"
    assert answer.body == "【客户回访】#1 138****0028 已反馈过结果：客户拒绝（网页），无需再回复。"
    assert s.get(Task, call.task_id).result_code_id == w["codes"]["4"].id


def test_a_code_not_in_the_menu_gets_the_menu(s, w):
    prompted(s, w, "13800000029")
    row, [answer] = reply(s, "9")
    assert row.reply_outcome == "refused" and "没有结果代码 9" in answer.body and "1回访成功" in answer.body


def test_an_unknown_reference_and_no_prompt_at_all(s, w):
    row, [answer] = reply(s, "1")
    assert row.reply_outcome == "no_prompt" and "没有待反馈" in answer.body
    prompted(s, w, "13800000030")
    row, [answer] = reply(s, "1 #77")
    assert row.reply_outcome == "unknown_ref" and "#77" in answer.body and "#1 138****0030" in answer.body


def test_a_reply_about_a_task_handed_to_another_manager_is_refused_in_chinese(s, w):
    [call] = prompted(s, w, "13800000034")
    s.get(Task, call.task_id).manager_id = w["m2"].id   # the hand-over moved it meanwhile
    row, [answer] = reply(s, "1")
    assert row.reply_outcome == "refused" and s.get(Task, call.task_id).status == "connected"
    why = i18n.gettext("This task is not yours: only the task's own manager can file its "
                       "result.", "zh")
    assert answer.body.startswith("【客户回访】#1 138****0034：未记录。" + why + "请回复：1回访成功")


def _refusals(module) -> list[str]:
    """Every msgid `module` refuses with (problems.add or .refuse(field, N_(...)))."""
    found = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("add", "refuse") \
                and len(node.args) == 2 and isinstance(node.args[1], ast.Call):
            found.append(ast.literal_eval(node.args[1].args[0]))
    return found


def test_every_refusal_an_sms_reply_can_get_is_the_catalogs_chinese():
    samples = {"label": "回访成功", "max": 1000, "days": 30, "window": "08:00-21:00",
               "zone": "Asia/Shanghai"}   # a zone parameter is the site's zone, named as people say it
    refusals = _refusals(results)
    assert len(refusals) >= 8, refusals   # the scan finds them
    for msgid in refusals:
        params = {k: v for k, v in samples.items() if f"%({k})" in msgid}
        problem = Problem("field", msgid, params)
        said = sms_feedback.refusal([problem])
        shown = {**params, "zone": "北京时间"} if "zone" in params else params
        assert said == i18n.gettext(msgid, i18n.DEFAULT_LOCALE, **shown) != msgid % params
        assert not ENGLISH_WORD.search(said), said


def test_every_sms_text_is_the_catalogs_chinese():
    # the module's texts: its upper-case strings with parameters, and the two without
    texts = [v for k, v in vars(sms_feedback).items()
             if k.isupper() and isinstance(v, str) and "%(" in v]
    texts += [sms_feedback.HELP_NONE, sms.HEAD, hotline.SMS_MISSED_CALL]
    assert len(texts) >= 15
    for msgid in texts:
        params = {name: "1" for name in re.findall(r"%\((\w+)\)s", msgid)}
        params.update({name: 1 for name in re.findall(r"%\((\w+)\)0?\d*d", msgid)})
        said = sms.say(msgid, **params)
        assert said == i18n.gettext(msgid, "zh", **params) and said != msgid % params
        assert not ENGLISH_WORD.search(said), said


def test_a_stranger_is_stored_and_ignored(s, w):
    prompted(s, w, "13800000031")
    row, answers = reply(s, "1", mobile="13600000000")
    assert (row.status, row.reply_outcome, answers) == ("processed", "stranger", [])
    assert s.scalar(select(func.count()).select_from(Feedback)) == 0


def test_every_message_is_audited(s, w):
    prompted(s, w, "13800000032")
    reply(s, "1")
    ids = {str(r.id) for r in s.scalars(select(SmsMessage))}
    audited = set(s.scalars(select(AuditLog.object_id).where(AuditLog.object_type == "sms")))
    assert ids <= audited
    assert s.scalar(select(func.count()).select_from(AuditLog).where(
        AuditLog.object_type == "feedback")) == 1


def test_a_reply_whose_handling_was_interrupted_is_handled_by_the_sweep(s, w):
    [call] = prompted(s, w, "13800000033")
    from khhf.services import sms
    row = sms.receive(s, MOBILE, "1")  # stored; the handling never ran (a crash)
    s.flush()
    assert sms_feedback.handle_leftovers(s, SETTINGS, NOW) == 0  # too fresh: being handled
    later = row.created_at + sms_feedback.RETRY_AFTER
    assert sms_feedback.handle_leftovers(s, SETTINGS, later) == 1
    assert (row.status, row.reply_outcome) == ("processed", "filed")
    assert s.get(Task, call.task_id).status == "done"
    assert sms_feedback.handle_leftovers(s, SETTINGS, later) == 0


def test_the_jobs_daemon_sweep_queues_once_across_restarts(tmp_path):
    from jobs.scheduler import Jobs
    from khhf.models import utcnow
    engine = db.make_engine(f"sqlite:///{tmp_path / 'j.db'}")
    db.create_schema(engine)
    with db.unit_of_work(db.session_factory(engine)) as s:
        county = factories.county(s, "demo", "示范县", unified="13900000000")
        w = dict(county=county, m1=factories.manager(s, county, "m1", desk="8001",
                                                     mobile=MOBILE))
        factories.task_type(s)
        answered_call(s, w, "13800000041", ended=utcnow() - dt.timedelta(minutes=3))
    assert Jobs(engine, "Asia/Shanghai", settings=SETTINGS).sms_sweep() == 1
    # a restarted daemon finds the prompt in the database: nothing again
    assert Jobs(engine, "Asia/Shanghai", settings=SETTINGS).sms_sweep() == 0
    with db.session_factory(engine)() as s:
        assert len(outbox(s, "prompt")) == 1
    engine.dispose()
