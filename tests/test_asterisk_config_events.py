"""The shipped Asterisk config asks for no event KHHF does not read, and
drops none it does: CEL's event list and manager.conf's disabledevents
against the bridge's normalisers (no Asterisk needed)."""

import re
from pathlib import Path

from ami_bridge.bridge import TRUNK_STATUS_EVENT
from khhf.calls import events

ASTERISK = Path(__file__).parent.parent / "asterisk"
# every CEL event type Asterisk 22 knows (cel.h)
CEL_TYPES = ("CHAN_START", "CHAN_END", "HANGUP", "ANSWER", "APP_START", "APP_END",
             "PARK_START", "PARK_END", "USER_DEFINED", "BRIDGE_ENTER", "BRIDGE_EXIT",
             "BLINDTRANSFER", "ATTENDEDTRANSFER", "PICKUP", "FORWARD", "LINKEDID_END",
             "LOCAL_OPTIMIZE", "LOCAL_OPTIMIZE_BEGIN", "STREAM_BEGIN", "STREAM_END", "DTMF")


def setting(conf: str, name: str) -> list[str]:
    [value] = re.findall(rf"^{name}\s*=\s*(\S+)\s*$", (ASTERISK / conf).read_text(), re.M)
    return value.split(",")


def test_cel_writes_exactly_the_events_the_reconciler_reads():
    def read(kind: str) -> bool:
        row = {"eventtype": kind, "eventtime": "1700000000.000000", "uniqueid": "khhf-1-ab",
               "linkedid": "khhf-1-ab", "channame": "PJSIP/8001-00000001",
               "eventextra": '{"hangupcause": 16, "extra": "ANSWER/"}',
               # CELGenUserEvent(KhhfDial, ...) is a USER_DEFINED row
               "userdeftype": events.DIAL_USER_EVENT if kind == "USER_DEFINED" else ""}
        return bool(events.from_cel(row))
    assert set(setting("cel.conf", "events")) == {t for t in CEL_TYPES if read(t)}
    assert "apps" not in re.findall(r"^(\w+)\s*=", (ASTERISK / "cel.conf").read_text(), re.M)


def test_manager_disables_no_event_that_khhf_reads():
    disabled = set(setting("manager.conf", "disabledevents"))
    assert "Newexten" in disabled and "VarSet" in disabled
    read = {*events.AMI_EVENTS, TRUNK_STATUS_EVENT, "CoreShowChannel",
            "CoreShowChannelsComplete"}
    assert not disabled & read
