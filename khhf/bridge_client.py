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
        raise BridgeUnavailable(answer.get("error", "refused"))


@dataclasses.dataclass(frozen=True)
class LiveCalls:
    """What the PBX has channels for right now (a CoreShowChannels snapshot)."""
    linkedids: frozenset[str]
    endpoints: frozenset[str]   # PJSIP endpoints with a channel: desk extensions, the trunk


def live(settings: Settings, timeout: float = 10.0) -> LiveCalls:
    """The PBX's live channels, through the bridge; BridgeUnavailable if it cannot say."""
    answer = send(settings, {"command": "live"}, timeout)
    if not answer.get("ok"):
        raise BridgeUnavailable(answer.get("error", "refused"))
    return LiveCalls(frozenset(answer.get("linkedids", ())), frozenset(answer.get("endpoints", ())))
