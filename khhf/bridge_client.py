"""Client of the AMI bridge's command channel (see ami_bridge/commands.py),
for the web UI: ask the bridge what the PBX is doing now, and to place a
call the dialing service wrote."""

from __future__ import annotations

import dataclasses
import json
import socket

from khhf.config import Settings


class BridgeUnavailable(Exception):
    """The bridge could not be reached or refused; the message says why."""


class PbxRestarting(BridgeUnavailable):
    """The PBX is shutting down gracefully (`core restart gracefully`): the
    calls in progress go on, no new one is placed until it is back."""


# the bridge's answer code for it (ami_bridge.commands answers with it)
PBX_RESTARTING = "pbx_restarting"


def _refused(answer: dict) -> BridgeUnavailable:
    error = answer.get("error", "refused")
    return PbxRestarting(error) if answer.get("code") == PBX_RESTARTING else BridgeUnavailable(error)


def send(settings: Settings, command: dict, timeout: float = 10.0) -> dict:
    request = dict(command, token=settings.require("bridge_token"))
    try:
        with socket.create_connection((settings.bridge_host, settings.bridge_port), timeout) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise BridgeUnavailable(f"the AMI bridge at {settings.bridge_host}:{settings.bridge_port} "
                                f"is not reachable ({exc.strerror or exc}): is it running?") from None
    try:
        return json.loads(data)
    except ValueError:
        raise BridgeUnavailable("the AMI bridge answered something that is not JSON") from None


def dial(settings: Settings, call_id: int) -> None:
    """Ask the bridge to originate call `call_id`; raise BridgeUnavailable if refused."""
    answer = send(settings, {"command": "dial", "call_id": call_id})
    if not answer.get("ok"):
        raise _refused(answer)


@dataclasses.dataclass(frozen=True)
class LiveCalls:
    """What the PBX has channels for right now (a CoreShowChannels snapshot)."""
    linkedids: frozenset[str]
    endpoints: frozenset[str]   # PJSIP endpoints with a channel: desk extensions, the trunk


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


def channels(settings: Settings, timeout: float = 10.0) -> list[Channel]:
    """Every channel the PBX has now, through the bridge (the live view);
    BridgeUnavailable if it cannot say."""
    answer = send(settings, {"command": "live"}, timeout)
    if not answer.get("ok"):
        raise _refused(answer)
    return [Channel(c.get("endpoint"), c.get("linkedid") or "", c.get("state") or "",
                    int(c.get("seconds") or 0), c.get("application") or "")
            for c in answer.get("channels", ())]


def listen(settings: Settings, supervisor_desk: str, manager_desk: str, mode: str) -> None:
    """Ask the bridge to ring `supervisor_desk` into a listen-in ('listen' or
    'whisper') on the call of `manager_desk`; BridgeUnavailable if refused.
    Who may listen to whom is decided before (khhf.services.live)."""
    answer = send(settings, {"command": "listen", "supervisor_desk": supervisor_desk,
                             "manager_desk": manager_desk, "mode": mode})
    if not answer.get("ok"):
        raise BridgeUnavailable(answer.get("error", "refused"))
