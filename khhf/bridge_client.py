"""Client of the AMI bridge's command channel (see ami_bridge/commands.py),
for the web UI: ask the bridge what the PBX is doing now, and to place a
call the dialing service wrote."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import tempfile
from collections.abc import Callable, Sequence
from typing import IO

from khhf.config import Settings

log = logging.getLogger(__name__)


class BridgeUnavailable(Exception):
    """The bridge could not be reached or refused; the message says why."""


class PbxRestarting(BridgeUnavailable):
    """The PBX is shutting down gracefully (`core restart gracefully`): the
    calls in progress go on, no new one is placed until it is back."""


class NothingSent(BridgeUnavailable):
    """Refused before anything reached the PBX: the bridge was not reachable,
    or is not logged in to its Asterisk. Another node may take the call."""


# the bridge's answer codes (ami_bridge.commands answers with them)
PBX_RESTARTING = "pbx_restarting"
PBX_UNAVAILABLE = "pbx_unavailable"


def _refused(answer: dict) -> BridgeUnavailable:
    error = answer.get("error", "refused")
    kind = {PBX_RESTARTING: PbxRestarting, PBX_UNAVAILABLE: NothingSent}.get(
        str(answer.get("code")), BridgeUnavailable)
    return kind(error)


def _unreachable(settings: Settings, exc: OSError) -> str:
    return (f"the AMI bridge at {settings.bridge_host}:{settings.bridge_port} is not reachable "
            f"({exc.strerror or exc}): is it running?")


def _connect(settings: Settings, command: dict, timeout: float) -> socket.socket:
    """A connection to the bridge with `command` sent on it."""
    request = dict(command, token=settings.require("bridge_token"))
    try:
        sock = socket.create_connection((settings.bridge_host, settings.bridge_port), timeout)
    except OSError as exc:  # not even connected: nothing was asked
        raise NothingSent(_unreachable(settings, exc)) from None
    try:
        sock.sendall(json.dumps(request).encode() + b"\n")
    except OSError as exc:
        sock.close()
        raise BridgeUnavailable(_unreachable(settings, exc)) from None
    return sock


def _answer(settings: Settings, sock: socket.socket) -> tuple[dict, bytes]:
    """The answer's JSON line, and the bytes already received after it."""
    data = b""
    try:
        while b"\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise BridgeUnavailable(_unreachable(settings, exc)) from None
    line, _, rest = data.partition(b"\n")
    try:
        return json.loads(line), rest
    except ValueError:
        raise BridgeUnavailable("the AMI bridge answered something that is not JSON") from None


def send(settings: Settings, command: dict, timeout: float = 10.0) -> dict:
    with _connect(settings, command, timeout) as sock:
        return _answer(settings, sock)[0]


def dial(settings: Settings, call_id: int) -> None:
    """Ask the bridge to originate call `call_id`; raise BridgeUnavailable if refused."""
    answer = send(settings, {"command": "dial", "call_id": call_id})
    if not answer.get("ok"):
        raise _refused(answer)


def dial_across(targets: Sequence[Settings], call_id: int,
                move: Callable[[Settings], bool]) -> Settings:
    """Ask the bridges of `targets` (khhf.services.nodes.dial_targets, best
    first) in turn to originate call `call_id`, until one takes it; return
    that one. The next is asked only when the last refused before anything
    reached its PBX (NothingSent), and after `move(next)` moved the row to
    it (False: the row is no longer a requested call; nothing more is
    tried). With one target, exactly `dial`."""
    for i, target in enumerate(targets):
        if i and not move(target):
            break
        try:
            dial(target, call_id)
        except NothingSent as exc:
            if i == len(targets) - 1:
                raise
            log.warning("call %s not taken by PBX node %s (%s); trying node %s", call_id,
                        target.pbx_name, exc, targets[i + 1].pbx_name)
            continue
        return target
    raise BridgeUnavailable(f"call {call_id} was placed by no PBX node")


@dataclasses.dataclass(frozen=True)
class LiveCalls:
    """What the PBX has channels for right now (a CoreShowChannels snapshot)."""
    linkedids: frozenset[str]
    endpoints: frozenset[str]   # PJSIP endpoints with a channel: desk extensions, the trunk


def live_across(targets: Sequence[Settings],
                timeout: float = 10.0) -> tuple[LiveCalls, list[Settings]]:
    """What the PBXs of `targets` have live, together, and the targets that
    answered (in their order); raises the first target's refusal when none
    answered. With one target, exactly `live`."""
    linkedids: set[str] = set()
    endpoints: set[str] = set()
    answered, refusals = [], []
    for target in targets:
        try:
            calls = live(target, timeout)
        except BridgeUnavailable as exc:
            refusals.append(exc)
            continue
        linkedids |= calls.linkedids
        endpoints |= calls.endpoints
        answered.append(target)
    if not answered:
        raise refusals[0] if refusals else NothingSent(
            "no PBX node is up: none beat in the last seconds; start one (`khhf pbx up` "
            "and its bridge)")
    return LiveCalls(frozenset(linkedids), frozenset(endpoints)), answered


def live(settings: Settings, timeout: float = 10.0) -> LiveCalls:
    """The PBX's live channels, through the bridge; BridgeUnavailable if it
    cannot say, PbxRestarting if the PBX is shutting down gracefully."""
    answer = send(settings, {"command": "live"}, timeout)
    if not answer.get("ok"):
        raise _refused(answer)
    return LiveCalls(frozenset(answer.get("linkedids", ())), frozenset(answer.get("endpoints", ())))


@dataclasses.dataclass(frozen=True)
class Channel:
    """One channel the PBX has now (a CoreShowChannel, without its data)."""
    endpoint: str | None        # the PJSIP endpoint: a desk extension, the trunk
    linkedid: str
    state: str                  # Asterisk's ChannelStateDesc: Ring, Ringing, Up, ...
    seconds: int                # how long the channel has existed
    application: str            # what it runs now: Dial, AppDial, ChanSpy, ...
    node: str = ""              # the PBX node whose Asterisk has it (its pbx_name)


def channels(settings: Settings, timeout: float = 10.0) -> list[Channel]:
    """Every channel the PBX has now, through the bridge (the live view);
    BridgeUnavailable if it cannot say."""
    answer = send(settings, {"command": "live"}, timeout)
    if not answer.get("ok"):
        raise _refused(answer)
    return [Channel(c.get("endpoint"), c.get("linkedid") or "", c.get("state") or "",
                    int(c.get("seconds") or 0), c.get("application") or "", settings.pbx_name)
            for c in answer.get("channels", ())]


def channels_across(targets: Sequence[Settings], timeout: float = 10.0) -> list[Channel]:
    """Every channel of the PBXs of `targets` (khhf.services.nodes.watch_targets),
    each naming its node; the nodes that cannot say are left out (and
    logged); raises the first refusal when none could say. With one target,
    exactly `channels`."""
    found: list[Channel] = []
    refusals = []
    for target in targets:
        try:
            found += channels(target, timeout)
        except BridgeUnavailable as exc:
            log.warning("PBX node %s cannot say its channels: %s", target.pbx_name, exc)
            refusals.append(exc)
    if refusals and len(refusals) == len(targets):
        raise refusals[0]
    if not targets:
        raise NothingSent("no PBX node is up: none beat in the last seconds; start one "
                          "(`khhf pbx up` and its bridge)")
    return found


def listen(settings: Settings, supervisor_desk: str, manager_desk: str, mode: str) -> None:
    """Ask the bridge to ring `supervisor_desk` into a listen-in ('listen' or
    'whisper') on the call of `manager_desk`; BridgeUnavailable if refused.
    Who may listen to whom is decided before (khhf.services.live)."""
    answer = send(settings, {"command": "listen", "supervisor_desk": supervisor_desk,
                             "manager_desk": manager_desk, "mode": mode})
    if not answer.get("ok"):
        raise BridgeUnavailable(answer.get("error", "refused"))


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """A recording as another node's bridge has it (the `recording` command)."""
    st_size: int
    st_mtime: float


class RecordingRefused(BridgeUnavailable):
    """The bridge answered, but has no such file to give: `reason` is
    'missing' or 'refused' (the name leads outside its recordings directory)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def recording(settings: Settings, path: str, body: bool = True,
              timeout: float = 10.0) -> tuple[RemoteFile, IO[bytes] | None]:
    """The recording stored as `path` (relative to the node's recordings
    directory) from the bridge of `settings`: its size and time, and with
    `body` its bytes in an anonymous temporary file (gone once closed), at
    its start. RecordingRefused when the node has no such file, BridgeUnavailable
    when it cannot be asked."""
    with _connect(settings, {"command": "recording", "path": path, "body": body},
                  timeout) as sock:
        answer, rest = _answer(settings, sock)
        if not answer.get("ok"):
            raise RecordingRefused(answer.get("error", "refused"),
                                   str(answer.get("reason") or "refused"))
        info = RemoteFile(int(answer["size"]), float(answer["mtime"]))
        if not body:
            return info, None
        fh = tempfile.TemporaryFile()
        try:
            fh.write(rest)
            got = len(rest)
            while got < info.st_size:
                chunk = sock.recv(min(1 << 20, info.st_size - got))
                if not chunk:
                    break
                fh.write(chunk)
                got += len(chunk)
            if got != info.st_size:
                raise BridgeUnavailable(f"the AMI bridge at {settings.bridge_host}:"
                                        f"{settings.bridge_port} sent {got} of the "
                                        f"recording's {info.st_size} bytes")
        except OSError as exc:
            fh.close()
            raise BridgeUnavailable(_unreachable(settings, exc)) from None
        except BridgeUnavailable:
            fh.close()
            raise
        fh.seek(0)
        return info, fh
