"""The pure part of the bridge: recorded traces in, call row out."""

import csv
import datetime as dt
from pathlib import Path

from khhf.calls import events
from khhf.calls.facts import CUSTOMER, MANAGER, CallFacts, LegEvent, reduce, summarize

TRACES = Path(__file__).parent / "traces"
T0 = dt.datetime(2026, 11, 27, 2, 0, 0)


def ami_trace(name):
    """Parse an AMI text fixture: blocks of 'Key: Value' lines."""
    blocks, current = [], {}
    for line in (TRACES / name).read_text().splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            continue
        key, _, value = line.partition(": ")
        current[key] = value
    return blocks


def fold(leg_events):
    facts = CallFacts()
    for e in leg_events:
        facts = reduce(facts, e)
    return summarize(facts)


def test_answered_call_from_ami_trace():
    raw = ami_trace("answered_customer_hangs_up.ami")
    assert all(events.is_ours(e["Linkedid"]) for e in raw)
    row = fold(le for e in raw for le in events.from_ami(e))
    assert row["state"] == "ended" and row["outcome"] == "answered"
    assert row["hangup_by"] == "customer" and row["hangup_cause"] == 16
    assert row["talk_seconds"] == 2  # 1.505 s, rounded
    assert row["answer_at"] < row["end_at"]


def test_replaying_a_trace_changes_nothing():
    raw = ami_trace("answered_customer_hangs_up.ami")
    once = fold(le for e in raw for le in events.from_ami(e))
    twice = fold(le for e in raw + raw for le in events.from_ami(e))
    assert once == twice


def test_busy_call_from_cel_rows():
    with open(TRACES / "busy.cel", newline="") as fh:
        rows = [dict(zip(events.CEL_COLUMNS, r)) for r in csv.reader(fh)]
    row = fold(le for r in rows for le in events.from_cel(r))
    assert (row["state"], row["outcome"], row["hangup_cause"]) == ("ended", "busy", 17)
    assert "answer_at" not in row and "talk_seconds" not in row


def test_half_a_trace_is_not_final():
    raw = ami_trace("answered_customer_hangs_up.ami")[:6]
    row = fold(le for e in raw for le in events.from_ami(e))
    assert row["state"] == "connected" and "end_at" not in row


def at(seconds):
    return T0 + dt.timedelta(seconds=seconds)


def test_outcomes_table():
    """Readable as a call log: events, then the outcome they must give."""
    cases = [
        ([LegEvent("start", at(0), MANAGER), LegEvent("hangup", at(30), MANAGER, cause=19)],
         "failed", "manager_no_answer"),
        ([LegEvent("start", at(0), MANAGER), LegEvent("hangup", at(1), MANAGER, cause=17)],
         "failed", "manager_busy"),
        ([LegEvent("originate_failed", at(0))], "failed", "manager_unavailable"),
        ([LegEvent("start", at(0), MANAGER), LegEvent("answer", at(1), MANAGER),
          LegEvent("start", at(1), CUSTOMER), LegEvent("hangup", at(2), CUSTOMER, cause=19),
          LegEvent("dial_result", at(2), dial_status="NOANSWER", sip_code=480),
          LegEvent("hangup", at(2), MANAGER, cause=19)], "ended", "unreachable"),
        # the carrier trunk failing (drill 4): the customer never rang
        ([LegEvent("start", at(0), MANAGER), LegEvent("answer", at(1), MANAGER),
          LegEvent("start", at(1), CUSTOMER), LegEvent("hangup", at(1.2), CUSTOMER, cause=34),
          LegEvent("dial_result", at(1.2), dial_status="CONGESTION", sip_code=503),
          LegEvent("hangup", at(1.3), MANAGER, cause=34)], "failed", "carrier_rejected"),
        # ... silent until SIP timer B: no response at all, Asterisk says cause 18
        ([LegEvent("start", at(0), MANAGER), LegEvent("answer", at(1), MANAGER),
          LegEvent("start", at(1), CUSTOMER), LegEvent("hangup", at(9), CUSTOMER, cause=18),
          LegEvent("dial_result", at(9), dial_status="CHANUNAVAIL"),
          LegEvent("hangup", at(9), MANAGER, cause=18)], "failed", "carrier_unreachable"),
        # ... known down by the PBX's qualify: no INVITE sent, cause 3
        ([LegEvent("start", at(0), MANAGER), LegEvent("answer", at(1), MANAGER),
          LegEvent("start", at(1), CUSTOMER), LegEvent("hangup", at(1), CUSTOMER, cause=3),
          LegEvent("dial_result", at(1), dial_status="CHANUNAVAIL"),
          LegEvent("hangup", at(1), MANAGER, cause=3)], "failed", "carrier_unreachable"),
        ([LegEvent("start", at(0), MANAGER), LegEvent("answer", at(1), MANAGER),
          LegEvent("start", at(1), CUSTOMER), LegEvent("hangup", at(40), CUSTOMER, cause=19),
          LegEvent("dial_result", at(40), dial_status="NOANSWER"),
          LegEvent("hangup", at(40), MANAGER, cause=19)], "ended", "no_answer"),
        # the ring timeout again, the manager's leg stamped first (seen under load)
        ([LegEvent("start", at(0), MANAGER), LegEvent("answer", at(1), MANAGER),
          LegEvent("start", at(1), CUSTOMER), LegEvent("hangup", at(40.001), MANAGER, cause=16),
          LegEvent("hangup", at(40.002), CUSTOMER, cause=19),
          LegEvent("dial_result", at(40), dial_status="NOANSWER")], "ended", "no_answer"),
        ([LegEvent("start", at(0), MANAGER), LegEvent("answer", at(1), MANAGER),
          LegEvent("start", at(1), CUSTOMER), LegEvent("hangup_request", at(5), MANAGER),
          LegEvent("hangup", at(5), MANAGER, cause=16),
          LegEvent("hangup", at(5.1), CUSTOMER, cause=16)], "ended", "manager_abandoned"),
        ([LegEvent("start", at(0), MANAGER), LegEvent("answer", at(1), MANAGER),
          LegEvent("start", at(1), CUSTOMER), LegEvent("answer", at(3), CUSTOMER),
          LegEvent("hangup_request", at(9), MANAGER), LegEvent("hangup", at(9), MANAGER, cause=16),
          LegEvent("hangup", at(9), CUSTOMER, cause=16)], "ended", "answered"),
    ]
    # the carrier refused it (Q.850 21, SIP 603); the network failed (38, 41)
    for cause, code, outcome in ((21, None, "rejected"), (16, 603, "rejected"),
                                 (38, None, "unreachable"), (41, None, "unreachable")):
        cases.append(([LegEvent("start", at(0), MANAGER), LegEvent("answer", at(1), MANAGER),
                       LegEvent("start", at(1), CUSTOMER),
                       LegEvent("hangup", at(2), CUSTOMER, cause=cause),
                       LegEvent("dial_result", at(2), dial_status="CONGESTION", sip_code=code),
                       LegEvent("hangup", at(2), MANAGER, cause=16)], "ended", outcome))
    cases.append(cases.pop(-5))  # the answered call last: checked below
    for leg_events, state, outcome in cases:
        row = fold(leg_events)
        assert (row["state"], row["outcome"]) == (state, outcome), leg_events
    # the last one: the manager hung up first, after 6 s of talk
    assert (row["hangup_by"], row["talk_seconds"]) == ("manager", 6)


def test_manager_conf_asks_for_exactly_the_events_the_bridge_reads():
    import re
    conf = (Path(__file__).parent.parent / "asterisk" / "manager.conf").read_text()
    [pattern] = re.findall(r"^eventfilter = Event: \(([^)]*)\)", conf, re.M)
    from ami_bridge.bridge import TRUNK_STATUS_EVENT
    assert set(pattern.split("|")) == {*events.AMI_EVENTS, TRUNK_STATUS_EVENT}
    # and every event the normaliser understands is among them
    for name in ("Newchannel", "Newstate", "HangupRequest", "Hangup", "UserEvent",
                 "OriginateResponse"):
        assert name in events.AMI_EVENTS
