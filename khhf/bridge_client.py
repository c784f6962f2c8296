"""Client of the AMI bridge's command channel (see ami_bridge/commands.py),
for the web UI: ask the bridge to place a call the dialing service wrote."""

from __future__ import annotations

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
