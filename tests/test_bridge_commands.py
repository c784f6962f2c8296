"""The bridge's command channel against strangers on the machine (issue 9):
a token within a deadline, a cap on connections, bounded parsing. A real
CommandServer of a real (not connected) Bridge on a loopback port."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from ami_bridge.bridge import Bridge
from ami_bridge.commands import MAX_CALL_ID, CommandServer, json_depth, parse_request
from khhf import bridge_client, config, db
from simkit.harness import free_port


@pytest.fixture
def settings(tmp_path):
    s = config.write_new(tmp_path / "khhf.conf", home=tmp_path,
                         bridge_port=free_port(kind=socket.SOCK_STREAM))
    engine = db.make_engine(s.database_url)
    db.create_schema(engine)
    engine.dispose()
    return s


def serve(settings, scenario, **kwargs):
    """Run `scenario(server, connect)` against a started command server."""
    async def main():
        bridge = Bridge(settings)
        server = CommandServer(bridge, **kwargs)
        listener = await server.start()
        writers = []

        async def connect():
            reader, writer = await asyncio.open_connection(settings.bridge_host,
                                                           settings.bridge_port)
            writers.append(writer)
            return reader, writer
        try:
            return await scenario(server, connect)
        finally:
            for writer in writers:
                writer.close()
                try:
                    await writer.wait_closed()
                except ConnectionError:
                    pass
            listener.close()
            await listener.wait_closed()
            bridge.engine.dispose()
    return asyncio.run(main())


async def ask(connect, request) -> dict:
    reader, writer = await connect()
    writer.write((request if isinstance(request, bytes) else json.dumps(request).encode())
                 + b"\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return json.loads(line)


async def closed_within(reader, seconds) -> bool:
    """True if the server closes the connection within `seconds`."""
    try:
        while await asyncio.wait_for(reader.read(100), seconds):
            pass
        return True
    except asyncio.TimeoutError:
        return False


def test_a_connection_without_the_token_is_closed_at_the_deadline(settings):
    async def scenario(server, connect):
        silent_reader, _ = await connect()
        # a trickle of bytes that never makes a line does not keep it open
        trickle_reader, trickle = await connect()
        for _ in range(6):
            trickle.write(b" ")
            await trickle.drain()
            await asyncio.sleep(0.1)
        assert await closed_within(silent_reader, 2)
        assert await closed_within(trickle_reader, 2)
        # a newline (not a request) is answered once, then the door closes
        reader, writer = await connect()
        writer.write(b"\n")
        await writer.drain()
        assert b"not a JSON object" in await reader.readline()
        assert await closed_within(reader, 1)
        # a wrong token: the same
        reader, writer = await connect()
        writer.write(json.dumps({"token": "guess", "command": "ping"}).encode() + b"\n")
        await writer.drain()
        assert json.loads(await reader.readline()) == {"ok": False, "error": "bad token"}
        assert await closed_within(reader, 1)
        # the right token: served, and the connection may ask again
        reader, writer = await connect()
        for _ in range(2):
            writer.write(json.dumps({"token": settings.bridge_token, "command": "ping"}).encode()
                         + b"\n")
            await writer.drain()
            assert json.loads(await reader.readline()) == {"ok": True, "ami": False}
            await asyncio.sleep(0.6)   # past the deadline: authenticated, it stays
        writer.close()
        return server.open_connections
    serve(settings, scenario, auth_deadline=0.5)


def test_connections_are_capped(settings):
    async def scenario(server, connect):
        held = [await connect() for _ in range(3)]
        await asyncio.sleep(0.1)
        reader, _ = await connect()
        assert await closed_within(reader, 1), "a connection over the cap was kept"
        assert server.open_connections == 3
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.1)
        return await ask(connect, {"token": settings.bridge_token, "command": "ping"})
    assert serve(settings, scenario, max_connections=3) == {"ok": True, "ami": False}


@pytest.mark.parametrize("line", [
    b"[" * 4000,
    b'{"token": "x", "call_id": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"a": {"b": {"c": 1}}}',
])
def test_deep_nesting_is_refused_before_it_is_parsed(settings, line):
    async def scenario(server, connect):
        return await ask(connect, line)
    answer = serve(settings, scenario)
    assert answer == {"ok": False, "error": "request nests deeper than 2 levels"}


def test_the_depth_scan_reads_json_as_json():
    assert json_depth(b'{"token": "[[[[{{{{\\"[[[", "a": [1, 2]}') == 2
    assert parse_request(b'{"token": "t", "command": "dial", "call_id": 4}')["call_id"] == 4


@pytest.mark.parametrize("call_id, error", [
    (10**30, f"call_id must be between 1 and {MAX_CALL_ID}"),
    ("9" * 4000, "dial needs an integer call_id"),
    (0, "call_id must be between"),
    (-5, "call_id must be between"),
    (True, "dial needs an integer call_id"),
    (1.5, "dial needs an integer call_id"),
    (None, "dial needs an integer call_id"),
    ("１２", "dial needs an integer call_id"),
])
def test_a_bad_call_id_is_a_clear_error(settings, call_id, error):
    async def scenario(server, connect):
        return await ask(connect, {"token": settings.bridge_token, "command": "dial",
                                   "call_id": call_id})
    answer = serve(settings, scenario)
    assert answer["ok"] is False and answer["error"].startswith(error), answer


def test_a_good_call_id_reaches_the_dial(settings):
    async def scenario(server, connect):
        return await ask(connect, {"token": settings.bridge_token, "command": "dial",
                                   "call_id": MAX_CALL_ID})
    # the bridge is not connected to a PBX: the dial itself says so
    assert serve(settings, scenario)["error"].startswith("the PBX is not connected")


def test_a_recording_is_handed_over_by_its_stored_name_and_nothing_else(settings):
    """What another node's recording review asks (khhf.bridge_client.recording):
    a file under recordings_dir, its bytes after the answer line; a name
    that leads outside it (.., absolute, a symbolic link) is refused."""
    day = settings.recordings_dir / "2026" / "12" / "07"
    day.mkdir(parents=True)
    wav = b"RIFF" + bytes(range(256)) * 1200
    (day / "42.wav").write_bytes(wav)
    (day / "link.wav").symlink_to(day / "42.wav")
    (settings.home / "secret.wav").write_bytes(b"not a recording")

    async def scenario(server, connect):
        def fetch(name, body=True):
            try:
                info, fh = bridge_client.recording(settings, name, body=body)
            except bridge_client.RecordingRefused as exc:
                return exc.reason
            if fh is None:
                return info.st_size
            with fh:
                return fh.read()
        return [await asyncio.to_thread(fetch, name, body) for name, body in [
            ("2026/12/07/42.wav", True), ("2026/12/07/42.wav", False),
            ("2026/12/07/none.wav", True), ("../secret.wav", True),
            (str(settings.home / "secret.wav"), True), ("2026/12/07/link.wav", True),
            ("2026/../../secret.wav", True)]]
    assert serve(settings, scenario) == [wav, len(wav), "missing", "refused", "refused",
                                         "refused", "refused"]
