"""The SMS reply parser (khhf.sms_reply): the documented forms, and a
property-based fuzz (hypothesis) of what managers' thumbs may type."""

from __future__ import annotations

import datetime as dt
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from khhf.sms_reply import CallBack, Reply, Unclear, parse, resolve


@pytest.mark.parametrize("text, expected", [
    ("1", Reply("1")),
    (" 1 ", Reply("1")),
    ("１", Reply("1")),
    ("12", Reply("12")),
    ("6 1201 1430", Reply("6", call_back=CallBack(14, 30, 12, 1))),
    ("６　１２０１　１４３０", Reply("6", call_back=CallBack(14, 30, 12, 1))),
    ("6+1201 1430", Reply("6", call_back=CallBack(14, 30, 12, 1))),
    ("6 12011430", Reply("6", call_back=CallBack(14, 30, 12, 1))),
    ("6 12-01 14:30", Reply("6", call_back=CallBack(14, 30, 12, 1))),
    ("6，12月1日14点30分", Reply("6", call_back=CallBack(14, 30, 12, 1))),
    ("6 1430", Reply("6", call_back=CallBack(14, 30))),
    ("6 9:05", Reply("6", call_back=CallBack(9, 5))),
    ("6 930", Reply("6", call_back=CallBack(9, 30))),
    ("1 #12", Reply("1", ref="12")),
    ("#12 1", Reply("1", ref="12")),
    ("＃１２　１", Reply("1", ref="12")),
    ("#012 1", Reply("1", ref="12")),
    ("6 1201 1430 #3", Reply("6", ref="3", call_back=CallBack(14, 30, 12, 1))),
    ("1。", Reply("1")),
    ("6 0229 0800", Reply("6", call_back=CallBack(8, 0, 2, 29))),
    ("1 客户很满意", Reply("1", note="客户很满意")),
    ("1回访成功", Reply("1", note="回访成功")),
    ("6 1201 1430 下午有空 3点后", Reply("6", call_back=CallBack(14, 30, 12, 1),
                                    note="下午有空 3点后")),
    ("1 #2 ok", Reply("1", ref="2", note="ok")),
])
def test_the_documented_forms(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text", [
    "", "   ", "ok", "好的", "回复1", "#12", "# 12 1", "1 #12 #13", "123", "1 # 12",
    "6 1301 1430", "6 0230 1430", "6 1201 2430", "6 1201 1460", "6 12011", "6 1",
    "1 #12345", "1#", "6 1201 1430 9",
])
def test_what_is_unclear(text):
    with pytest.raises(Unclear):
        parse(text)


def test_resolve_gives_the_next_such_moment():
    now = dt.datetime(2026, 11, 27, 11, 0)
    assert resolve(CallBack(14, 30, 12, 1), now) == dt.datetime(2026, 12, 1, 14, 30)
    assert resolve(CallBack(14, 30, 1, 5), now) == dt.datetime(2027, 1, 5, 14, 30)
    assert resolve(CallBack(14, 30), now) == dt.datetime(2026, 11, 27, 14, 30)
    assert resolve(CallBack(9, 0), now) == dt.datetime(2026, 11, 28, 9, 0)
    assert resolve(CallBack(8, 0, 2, 29), now) == dt.datetime(2028, 2, 29, 8, 0)


# -- the fuzz -------------------------------------------------------------------------

SEPARATORS = [" ", "  ", "\u3000", ",", "，", "、", "+", "。", " , "]
FULL_WIDTH = str.maketrans("0123456789#", "０１２３４５６７８９＃")


@st.composite
def replies(draw):
    """(a reply, a text a manager might type for it)."""
    code = str(draw(st.integers(1, 99)))
    ref = draw(st.none() | st.integers(1, 999).map(str))
    call_back = draw(st.none() | st.builds(
        CallBack, hour=st.integers(0, 23), minute=st.integers(0, 59),
        month=st.none() | st.integers(1, 12), day=st.integers(1, 28)))
    if call_back is not None and call_back.month is None:
        call_back = CallBack(call_back.hour, call_back.minute)
    parts = [code]
    if call_back is not None:
        hhmm = f"{call_back.hour:02d}{call_back.minute:02d}"
        if draw(st.booleans()):
            hhmm = f"{call_back.hour}:{call_back.minute:02d}"
        if call_back.month is None:
            parts.append(hhmm)
        else:
            mmdd = draw(st.sampled_from([f"{call_back.month:02d}{call_back.day:02d}",
                                         f"{call_back.month}月{call_back.day}日"]))
            parts.extend([mmdd, hhmm])
    if ref is not None:
        position = draw(st.sampled_from(["first", "last"]))
        token = "#" + ref
        parts = [token] + parts if position == "first" else parts + [token]
    text = ""
    for i, part in enumerate(parts):
        text += (draw(st.sampled_from(SEPARATORS)) if i else draw(st.sampled_from(["", " "])))
        text += part
    text += draw(st.sampled_from(["", " ", "。", "\n"]))
    if draw(st.booleans()):
        text = text.translate(FULL_WIDTH)
    return Reply(code, ref, call_back), text


@given(replies())
def test_any_way_of_typing_a_reply_parses_to_it(case):
    reply, text = case
    assert parse(text) == reply


@given(st.text(max_size=40) | st.builds(lambda a, b: a + b, st.text("12# ", max_size=6),
                                        st.text(max_size=10)))
def test_any_text_parses_or_is_unclear(text):
    try:
        reply = parse(text)
    except Unclear:
        return
    assert reply.code.isdigit() and 1 <= len(reply.code) <= 2
    assert reply.ref is None or reply.ref.isdigit()
    # what is not the note is digits, '#' and separators only
    head = unicodedata.normalize("NFKC", text)
    head = head[:head.find(reply.note)] if reply.note else head
    assert not any(unicodedata.category(c)[0] == "L" and c not in "月日号點点时時分"
                   for c in head.rstrip())


@given(st.text(alphabet="0123456789#＃ ,，:+-", max_size=20))
def test_digit_soup_never_crashes(text):
    try:
        reply = parse(text)
    except Unclear:
        return
    assert reply.note == ""
    if reply.call_back is not None and reply.call_back.month is not None:
        assert 1 <= reply.call_back.month <= 12
    if reply.call_back is not None:
        assert 0 <= reply.call_back.hour <= 23 and 0 <= reply.call_back.minute <= 59
