"""The keypad result's rules (khhf.services.keypad), turn by turn as the
dialplan drives them, on SQLite and PostgreSQL: ask, read back, confirm,
file with channel keypad; a wrong key, no key, a change of mind, and a
result filed on the web meanwhile. The route's wiring through a real
Asterisk is in tests/test_keypad_e2e.py."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from khhf import config, db
from khhf.models import Call, Feedback, ResultCode, Task
from khhf.services import keypad, results, tasks
from simkit import factories

NOW = dt.datetime(2026, 11, 27, 3, 0)
SETTINGS = config.Settings()


@pytest.fixture(params=["sqlite", "postgresql"])
def s(request, tmp_path):
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'k.db'}")
    else:
        engine = request.getfixturevalue("pg_database")("keypad")
    db.create_schema(engine)
    with db.session_factory(engine)() as session:
        yield session
    engine.dispose()


@pytest.fixture
def call(s):
    """An answered outbound call of manager m1's revisit task."""
    county = factories.county(s, "demo", "示范县", unified="13900000000")
    m1 = factories.manager(s, county, "m1", desk="8001")
    task = factories.task(s, factories.customer(s, county, "13800000001", m1), m1)
    tasks.dial(task)
    row = Call(direction="outbound", task_id=task.id, customer_number="13800000001",
               manager_id=m1.id, state="connected")
    s.add(row)
    s.flush()
    return row


def turn(s, call, state="", digits=""):
    return keypad.step(s, call.id, state, digits, settings=SETTINGS, now=NOW)


def code(s, call, digits):
    task = s.get(Task, call.task_id)
    return s.scalar(select(ResultCode).where(ResultCode.task_type_id == task.task_type_id,
                                             ResultCode.code == digits))


def feedback(s):
    return s.scalars(select(Feedback)).all()


def test_choose_read_back_confirm_files_the_result(s, call):
    ask = turn(s, call)
    assert (ask.action, ask.prompts, ask.max_digits) == ("read", ("keypad-ask",), 1)
    chosen = turn(s, call, ask.state, "1")
    assert chosen.action == "read"
    assert chosen.prompts == ("keypad-you-chose", "digits/1", "keypad-confirm")
    done = turn(s, call, chosen.state, "1")
    assert done == keypad.Step("say", ("keypad-filed",))
    [fb] = feedback(s)
    assert (fb.channel, fb.call_id, fb.result_code_id) == ("keypad", call.id,
                                                           code(s, call, "1").id)
    assert s.get(Task, call.task_id).status == "done"
    # the conversation is over: another turn files nothing more
    assert turn(s, call, chosen.state, "1").prompts == ("keypad-already-filed",)
    assert len(feedback(s)) == 1


def test_a_try_again_code_leaves_the_task_open(s, call):
    chosen = turn(s, call, turn(s, call).state, "5")   # 无人接听: not final
    assert turn(s, call, chosen.state, "1").prompts == ("keypad-filed",)
    assert s.get(Task, call.task_id).status in tasks.OPEN
    assert [f.channel for f in feedback(s)] == ["keypad"]


def test_a_wrong_code_is_said_and_asked_again(s, call):
    ask = turn(s, call)
    again = turn(s, call, ask.state, "9")              # no code 9 in the revisit type
    assert (again.action, again.prompts) == ("read", ("keypad-invalid", "keypad-ask"))
    assert again.state != ask.state
    last = turn(s, call, again.state, "*")
    assert last.prompts == ("keypad-invalid", "keypad-ask")
    # a wrong key the last time: not filed, and not "no key pressed"
    assert turn(s, call, last.state, "8") == keypad.Step("say", ("keypad-not-filed",))
    assert feedback(s) == []


def test_no_key_asks_again_then_gives_up_with_nothing_filed(s, call):
    state = turn(s, call).state
    for _ in range(keypad.MAX_TRIES - 1):
        step = turn(s, call, state, "")
        assert step.prompts == ("keypad-ask",)   # no "wrong code" for silence
        state = step.state
    assert turn(s, call, state, "") == keypad.Step("say", ("keypad-no-input",))
    assert feedback(s) == [] and s.get(Task, call.task_id).status == "dialing"


def test_change_of_mind_and_unclear_confirmation(s, call):
    chosen = turn(s, call, turn(s, call).state, "4")
    assert turn(s, call, chosen.state, "2").prompts == ("keypad-ask",)   # 改选
    # a key that is neither 1 nor 2 reads the choice back again
    unclear = turn(s, call, chosen.state, "7")
    assert unclear.prompts == chosen.prompts and unclear.state != chosen.state
    state = unclear.state
    for _ in range(keypad.MAX_TRIES - 2):
        state = turn(s, call, state, "").state
    assert turn(s, call, state, "").prompts == ("keypad-no-input",)
    assert feedback(s) == []


def test_filed_on_the_web_meanwhile_says_already_filed(s, call):
    chosen = turn(s, call, turn(s, call).state, "1")
    task = s.get(Task, call.task_id)
    m1 = task.manager
    results.file_result(s, m1.user, task.id, code(s, call, "4").id, settings=SETTINGS, now=NOW)
    assert turn(s, call, chosen.state, "1") == keypad.Step("say", ("keypad-already-filed",))
    [fb] = feedback(s)
    assert fb.channel == "web"
    # and from the start, too
    assert turn(s, call).prompts == ("keypad-already-filed",)


def test_a_try_again_result_filed_on_the_web_for_this_call_counts_as_filed(s, call):
    task = s.get(Task, call.task_id)
    results.file_result(s, task.manager.user, task.id, code(s, call, "6").id,
                        settings=SETTINGS, now=NOW, call_id=call.id)
    assert s.get(Task, call.task_id).status in tasks.OPEN
    assert turn(s, call).prompts == ("keypad-already-filed",)


def test_a_code_of_another_type_in_the_state_is_not_filed(s, call):
    other = factories.task_type(s, "survey", "调查", codes=(("1", "调查成功", True, True),))
    foreign = s.scalar(select(ResultCode).where(ResultCode.task_type_id == other.id))
    step = turn(s, call, f"confirm:{foreign.id}:1", "1")
    assert step.prompts == ("keypad-ask",) and feedback(s) == []


def test_two_digit_codes_read_two_digits(s, call):
    task = s.get(Task, call.task_id)
    s.add(ResultCode(task_type_id=task.task_type_id, code="12", label="升级套餐",
                     is_success=True, is_final=True))
    s.flush()
    s.expire_all()
    ask = turn(s, call)
    assert ask.max_digits == 2
    chosen = turn(s, call, ask.state, "12")
    assert chosen.prompts == ("keypad-you-chose", "digits/1", "digits/2", "keypad-confirm")
    assert turn(s, call, chosen.state, "1").prompts == ("keypad-filed",)
    assert feedback(s)[0].result_code_id == code(s, call, "12").id


def test_a_code_of_a_type_an_administrator_made_is_filed(s, call):
    """A type made as an administrator makes one (five codes, one of two
    digits): the keypad reads two digits and files either length."""
    care = factories.custom_task_type(s)
    task = s.get(Task, call.task_id)
    task.task_type_id = care.id
    s.flush()
    s.expire_all()
    ask = turn(s, call)
    assert ask.max_digits == 2
    chosen = turn(s, call, ask.state, "7")
    assert chosen.prompts == ("keypad-you-chose", "digits/7", "keypad-confirm")
    again = turn(s, call, chosen.state, "2")   # changed their mind
    chosen = turn(s, call, again.state, "12")
    assert chosen.prompts == ("keypad-you-chose", "digits/1", "digits/2", "keypad-confirm")
    assert turn(s, call, chosen.state, "1").prompts == ("keypad-filed",)
    [fb] = feedback(s)
    assert (fb.channel, fb.result_code_id) == ("keypad", code(s, call, "12").id)
    assert code(s, call, "12").task_type_id == care.id
    assert s.get(Task, call.task_id).status == "done"


def test_unknown_calls_say_unavailable(s, call):
    assert keypad.step(s, None).prompts == ("keypad-unavailable",)
    assert keypad.step(s, 987654).prompts == ("keypad-unavailable",)
    inbound = Call(direction="inbound", customer_number="13800000001",
                   manager_id=call.manager_id, task_id=call.task_id, state="ended")
    s.add(inbound)
    s.flush()
    assert keypad.step(s, inbound.id).prompts == ("keypad-unavailable",)
    assert s.scalar(select(func.count()).select_from(Feedback)) == 0


def test_every_prompt_the_service_names_is_shipped():
    from khhf.shipped import shipped
    zh = shipped("asterisk") / "sounds" / "zh"
    manifest = {line.split("|", 1)[0] for line in (zh / "prompts.txt").read_text().splitlines()
                if line and not line.startswith("#")}
    named = {"keypad-ask", "keypad-you-chose", "keypad-confirm", "keypad-invalid",
             "keypad-filed", "keypad-already-filed", "keypad-no-input", "keypad-not-filed",
             "keypad-refused",
             "keypad-unavailable", "hotline-missed", *(f"digits/{d}" for d in range(10))}
    assert named <= manifest
    for name in manifest:
        for law in ("ulaw", "alaw"):
            audio = zh / f"{name}.{law}"
            # 8 kHz, one byte a sample: at least a third of a second of sound
            assert audio.stat().st_size > 2600, audio
    source = Path(keypad.__file__).read_text()
    used = set(re.findall(r'"((?:keypad|digits)[-/][a-z-]*)', source))
    assert used - {"digits/"} <= manifest


# -- the FastAGI route, against a fake Asterisk over a real socket (tests/test_agi.py)

@pytest.fixture
def agi_call(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'agi.db'}")
    db.create_schema(engine)
    factory = db.session_factory(engine)
    with db.unit_of_work(factory) as s:
        county = factories.county(s, "demo", unified="13900000000")
        m1 = factories.manager(s, county, "m1", desk="8001")
        task = factories.task(s, factories.customer(s, county, "13800000001", m1), m1)
        tasks.dial(task)
        row = Call(direction="outbound", task_id=task.id, customer_number="13800000001",
                   manager_id=m1.id, state="connected")
        s.add(row)
        s.flush()
        call_id = row.id
    yield factory, call_id
    engine.dispose()


def test_route_sets_the_prompts_as_paths_and_the_action_last(agi_call):
    from tests.test_agi import agi_request, run_server, variables
    factory, call_id = agi_call
    sounds = "/khhf/main/sounds/zh"
    commands = run_server(factory, lambda port: agi_request(
        port, "keypad-result", [str(call_id), sounds, "ask:1", "4"]))
    got = variables(commands)
    assert list(got)[-1] == "KHHF_KP_ACTION" and got["KHHF_KP_ACTION"] == "read"
    assert got["KHHF_KP_PROMPT"] == "&".join(
        f"{sounds}/{p}" for p in ("keypad-you-chose", "digits/4", "keypad-confirm"))
    assert got["KHHF_KP_DIGITS"] == "1" and got["KHHF_KP_STATE"].startswith("confirm:")


@pytest.mark.parametrize("sounds", ["", "sounds/zh", "/khhf/../etc", "/a,b", "/a&b"])
def test_route_refuses_a_strange_prompts_directory_and_sets_nothing(agi_call, sounds):
    from tests.test_agi import agi_request, run_server
    factory, call_id = agi_call
    commands = run_server(factory, lambda port: agi_request(
        port, "keypad-result", [str(call_id), sounds, "", ""]))
    assert commands == []   # the dialplan's fallback: "keypad unavailable"
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Feedback)) == 0
