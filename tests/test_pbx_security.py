"""What the PBX's own interfaces allow, against the real Asterisk: the AMI
user can do what the bridge does and nothing that rewrites the PBX, and
Asterisk runs as a dedicated user (issue 9)."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from khhf import numbering
from khhf.channel_vars import TRUNK_ENDPOINT
from khhf.config import agi_key
from pbxctl import pbx

pytestmark = pytest.mark.pbx


def ami_answers(h, actions):
    """The first response to each action, in order, as (Response, Message)."""
    async def run():
        client = h.ami(event_mask="off")
        await client.connect()
        try:
            out = []
            for action in actions:
                if action["Action"] == "Originate":  # answers twice, as the bridge sends it
                    first, _ = await client.send_tracked(action, timeout=10)
                else:
                    answer = await client.action(action, timeout=10)
                    first = answer[0] if isinstance(answer, list) else answer
                out.append((first.get("Response"), first.get("Message", "")))
            return out
        finally:
            client.close()
    return asyncio.run(run())


def test_the_ami_user_has_the_bridges_actions(pbx_harness):
    answers = ami_answers(pbx_harness, [
        {"Action": "CoreShowChannels"}, {"Action": "CoreSettings"}, {"Action": "Ping"},
        # an Originate the PBX accepts (then fails to ring: nobody is registered)
        {"Action": "Originate", "Channel": "PJSIP/8003", "Context": "khhf-outbound",
         "Exten": "13812345678", "Priority": "1", "Async": "true", "Timeout": "1000"}])
    assert [response for response, _ in answers] == ["Success"] * 4, answers


@pytest.mark.parametrize("action", [
    # rewrite a dialplan global: the AGI address, or the trunk the PBX dials out on
    {"Action": "Setvar", "Variable": "KHHF_AGI", "Value": "agi://127.0.0.1:1/x"},
    {"Action": "Setvar", "Variable": "KHHF_TRUNK", "Value": "elsewhere"},
    {"Action": "Hangup", "Channel": "PJSIP/8001-00000001"},
    {"Action": "Redirect", "Channel": "PJSIP/8001-00000001", "Context": "khhf-outbound",
     "Exten": "13812345678", "Priority": "1"},
    {"Action": "Command", "Command": "core show version"},
    {"Action": "DBPut", "Family": "khhf-hotline-group", "Key": "13900000001", "Val": "x"},
    {"Action": "Reload"},
    {"Action": "ModuleLoad", "Module": "pbx_config.so", "LoadType": "reload"},
    {"Action": "UserEvent", "UserEvent": "KhhfDial", "DialStatus": "ANSWER"},
    {"Action": "Filter", "Operation": "Add", "Filter": "Event: Newchannel"},
    {"Action": "GetConfig", "Filename": "manager.conf"},
    {"Action": "UpdateConfig", "SrcFilename": "extensions.conf",
     "DstFilename": "extensions.conf", "Action-000000": "Delete", "Cat-000000": "globals"},
], ids=lambda a: a["Action"] + ("-" + a["Variable"] if "Variable" in a else ""))
def test_the_ami_user_cannot_rewrite_the_pbx(pbx_harness, action):
    [(response, message)] = ami_answers(pbx_harness, [action])
    assert response == "Error", (action, response, message)
    assert "Permission denied" in message or "Invalid/unknown command" in message, message
    # and the globals are still what was rendered
    out = pbx_harness.pbx.cli("dialplan show globals")
    assert f"KHHF_AGI=agi://127.0.0.1:{pbx_harness.settings.agi_port}/" \
           f"{agi_key(pbx_harness.settings)}" in out
    assert f"KHHF_TRUNK={TRUNK_ENDPOINT}" in out


def test_getvar_cannot_run_functions_with_side_effects(pbx_harness):
    """Getvar and ShowDialPlan come with 'reporting', which CoreShowChannels
    needs; live_dangerously = no keeps Getvar from writing through a function."""
    h = pbx_harness
    h.pbx.cli("database put khhf-probe k v")
    try:
        [(response, _)] = ami_answers(h, [{"Action": "Getvar", "Variable": "DB_DELETE(khhf-probe/k)"}])
        assert "Value: v" in h.pbx.cli("database get khhf-probe k")
    finally:
        h.pbx.cli("database deltree khhf-probe")


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def test_asterisk_runs_as_a_dedicated_user_writing_only_its_run_directories(pbx_harness):
    h = pbx_harness
    pid = h.pbx.pid()
    assert pid and _uid_of(pid) != 0, "Asterisk runs as root"
    uid = _uid_of(pid)
    run = h.settings.pbx_dir
    for sub in ("spool", "log", "run", "lib", "cache", "recordings"):
        assert (run / sub).stat().st_uid == uid, sub
    # the rendered configuration is readable, not writable, by Asterisk
    etc = run / "etc"
    assert etc.stat().st_uid == 0 and not etc.stat().st_mode & 0o002
    manager = etc / "manager.conf"
    assert manager.stat().st_uid == 0 and manager.stat().st_mode & 0o777 == 0o640
    assert os.stat(run / "etc" / "pjsip.d" / "50-desk-phones.conf").st_mode & 0o777 == 0o640


def _gid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Gid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Gid in /proc/{pid}/status")


def test_asterisk_runs_as_a_host_account_shared_with_no_other_service(pbx_harness, tmp_path_factory):
    """The PBX parses SIP from the carrier and the phones: its ids must name
    its own host account (not the host's postgres, as the root's next free
    id did), and that account owns nothing outside KHHF's directories."""
    h = pbx_harness
    pid = h.pbx.pid()
    uid, gid = _uid_of(pid), _gid_of(pid)
    layout = h.pbx.layout()
    expected = pbx.HOST_PBX_USER if layout.root is not None else pbx.PBX_USER
    users = [entry.pw_name for entry in pwd.getpwall() if entry.pw_uid == uid]
    assert users == [expected], f"uid {uid} of the running Asterisk is {users} on the host"
    groups = [entry.gr_name for entry in grp.getgrall() if entry.gr_gid == gid]
    assert groups == [expected], f"gid {gid} of the running Asterisk is {groups} on the host"
    assert not [entry.pw_name for entry in pwd.getpwall()
                if entry.pw_gid == gid and entry.pw_name != expected]
    # what it owns: its run directory, the root it runs in, and the run
    # directories of the tests' other PBX instances (all under pytest's tmp)
    allowed = [str(h.settings.pbx_dir), str(tmp_path_factory.getbasetemp().parent)]
    if layout.root is not None:
        allowed.append(str(layout.root))
    prune = []
    for path in ["/proc", "/sys", "/dev", *allowed]:
        prune += ["-path", path, "-o"]
    found = subprocess.run(["find", "/", "(", *prune[:-1], ")", "-prune", "-o", "-uid", str(uid),
                            "-print"], capture_output=True, text=True)
    # and other PBX instances' run directories (a test's own, a demo's): each
    # holds the configuration `khhf pbx up` rendered
    owned = [path for path in found.stdout.split()
             if not any((parent / "etc" / "asterisk.conf").is_file()
                        for parent in Path(path).parents)]
    assert not owned, f"the PBX account owns files outside KHHF's directories: {owned[:10]}"


def test_the_running_dialplan_has_the_number_rules_and_trunk_of_one_home(pbx_harness):
    """khhf/numbering.py's patterns and the trunk's endpoint name, rendered."""
    h = pbx_harness
    tokens = numbering.dialplan_tokens()
    outbound = h.pbx.cli("dialplan show khhf-outbound")
    for pattern in tokens["CUSTOMER_EXTEN"]:
        assert f"'{pattern}' =>" in outbound, (pattern, outbound)
    assert f"'{tokens['UNIFIED_EXTEN']}' =>" in h.pbx.cli("dialplan show khhf-from-trunk")
    endpoint = h.pbx.cli(f"pjsip show endpoint {TRUNK_ENDPOINT}")
    assert "identify_by" in endpoint and ": ip" in endpoint.split("identify_by", 1)[1][:40]
    assert h.settings.trunk_host in h.pbx.cli("pjsip show identifies")
