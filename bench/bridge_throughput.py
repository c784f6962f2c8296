"""AMI bridge throughput: events per second into SQLite and PostgreSQL, as
a ratio to panoramisk's own parse rate (AmiClient, no database) on the same
stream in the same run.

    python3 -m bench.bridge_throughput [--events 20000] [--db sqlite,postgresql]
                                       [--pg-url URL] [--profile] [--quick]
                                       [--recording FILE]

--quick: 16,000 events, no apply-only rows (about 40 s, most of it recording
a real Asterisk); the last line is always `ratio bridge/panoramisk sqlite=0.xx postgresql=0.xx`
(Bridge.run's events/s over AmiClient's). --recording replays a recording a
previous run saved (recording.ami in its work directory) instead of
recording a real Asterisk again.

1. Record: a real Asterisk (tests/harness.py) and the real bridge place a few
   outbound calls (SIPp desk phones and carrier, with RTP); a raw socket
   logged in as the bridge's AMI user (so with the same eventfilter) records
   every event Asterisk sends.
2. Replay: a loopback TCP server speaks the AMI greeting and login, then
   sends the recording again and again, as fast as the reader takes it.
   Each copy gets its own linkedids and uniqueids, and a call row waits for
   each copied call, so the bridge really inserts every event and
   recomputes every call, as it would live.
3. Readers, one after the other on the same bytes:
   bare        asyncio StreamReader, split on \\r\\n\\r\\n, count
   panoramisk  amiclient.AmiClient (panoramisk parse + queue), no database
   apply only  Bridge.apply_ami on the parsed events in batches of BATCH, no socket
   bridge      the real Bridge.run: AmiClient -> queue -> batches written by
               its writer process (from the stream's first byte, sent once
               the bridge has logged in and done its log-in catch-up, as the
               writer process is started before: until it has applied the
               last event);
               the full form also runs it with the writer in a thread of the
               bridge's own process, as before the writer process
The bare reader runs five times and AmiClient three (medians): the ratio's
denominator is AmiClient's median. Prints a table; --profile adds
cProfile's top functions of the apply step.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import dataclasses
import io
import os
import pstats
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select, text

from ami_bridge.bridge import BATCH, Bridge
from amiclient import AmiClient
from khhf import config, db
from khhf.calls import store
from khhf.calls.states import FINAL_STATES
from khhf.models import Call, CallEvent, utcnow
from khhf.services import tasks
from simkit import factories

SEP = b"\r\n\r\n"
LINKEDID = re.compile(rb"khhf-\d+-[0-9a-f]+")
# every header that carries a channel id: rewritten per replayed copy
ID_HEADER = re.compile(rb"^((?:Uniqueid|Linkedid|DestUniqueid|DestLinkedid): )([^\r\n]+)",
                       re.MULTILINE)


# -- a raw AMI tap: what Asterisk sends, as bytes ------------------------------------
class AmiTap:
    """A raw socket logged in to the AMI; keeps every event message it gets."""

    def __init__(self, settings):
        self.settings = settings
        self.messages: list[bytes] = []
        self._task = None

    async def start(self) -> AmiTap:
        s = self.settings
        self.reader, self.writer = await asyncio.open_connection(s.ami_host, s.ami_port)
        await self.reader.readline()  # greeting
        self.writer.write(f"Action: Login\r\nUsername: {s.ami_user}\r\nSecret: {s.ami_secret}"
                          f"\r\nEvents: on\r\n\r\n".encode())
        response = await asyncio.wait_for(self.reader.readuntil(SEP), 5)
        if b"Success" not in response:
            raise RuntimeError(f"AMI login refused: {response!r}")
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        buf = b""
        while data := await self.reader.read(1 << 16):
            buf += data
            *done, buf = buf.split(SEP)
            self.messages += [m + SEP for m in done if m.startswith(b"Event:")]

    async def stop(self) -> list[bytes]:
        await asyncio.sleep(0.5)  # the last events of the last call
        self._task.cancel()
        self.writer.close()
        return self.messages


class AmiTapThread:
    """An AmiTap on an event loop of its own thread, for synchronous callers."""

    def __init__(self, settings):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tap = asyncio.run_coroutine_threadsafe(AmiTap(settings).start(), self.loop).result(10)

    def stop(self) -> list[bytes]:
        messages = asyncio.run_coroutine_threadsafe(self.tap.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        return messages


def record(workdir: Path, calls: int = 3, talk_ms: int = 1000):
    """Events of `calls` real answered outbound calls, as the bridge's AMI user
    gets them, and the PBX's settings."""
    from simkit.bridge_env import BridgeEnv
    from simkit.harness import PbxHarness

    desks = ("8001", "8002", "8003")[:calls]
    with PbxHarness(workdir, name=f"bench-tp{os.getpid()}", desk_extensions=desks) as h:
        env = BridgeEnv(h, workdir).start()
        try:
            tap = AmiTapThread(h.settings)
            phones = [h.desk_phone(ext) for ext in desks]
            carrier = h.trunk("answer_hangup.xml", duration_ms=talk_ms, calls=calls)
            for call_id in [env.dial(ext, f"1391234{i:04d}") for i, ext in enumerate(desks)]:
                env.wait_final(call_id)
            for party in (carrier, *phones):
                party.wait(30)
            messages = tap.stop()
        finally:
            env.stop()
    return messages, h.settings


# -- the replayed stream -----------------------------------------------------------------
@dataclasses.dataclass
class Stream:
    data: bytes                  # every copy, concatenated
    events: int                  # messages in `data`
    ours: int                    # distinct events of a KHHF call (what the bridge stores)
    calls: list[tuple[int, str]]  # (call id, linkedid) of every copied call


def replay_stream(template: list[bytes], events: int) -> Stream:
    """Copies of `template` with fresh ids until at least `events` messages."""
    originals = sorted({m.group(0) for msg in template for m in LINKEDID.finditer(msg)})
    copies = -(-events // len(template))
    out, calls = [], []
    raws = [store.raw_from_ami(parse(m)) for m in template]
    per_copy_ours = len({r.dedup_key for r in raws if r is not None})
    blob = b"".join(template)
    for copy in range(copies):
        mapping = {}
        for k, old in enumerate(originals):
            call_id = copy * len(originals) + k + 1
            new = f"khhf-{call_id}-{uuid.uuid4().hex[:8]}".encode()
            mapping[old] = new
            calls.append((call_id, new.decode()))

        def swap(m, copy=copy):  # Asterisk's own ids (the customer's leg) get a suffix
            value = m.group(2)
            return m.group(0) if LINKEDID.fullmatch(value) else m.group(1) + value + b".%d" % copy
        out.append(ID_HEADER.sub(swap, LINKEDID.sub(lambda m, ids=mapping: ids[m.group(0)], blob)))
    return Stream(b"".join(out), copies * len(template), copies * per_copy_ours, calls)


def parse(message: bytes) -> dict:
    """The headers of one AMI message."""
    lines = message.decode().strip().split("\r\n")
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def seed_calls(engine, calls: list[tuple[int, str]]) -> None:
    """A county, a manager, a customer, and per replayed call a task and a
    requested call row, as request_call leaves them."""
    db.create_schema(engine)
    sessions = db.session_factory(engine)
    now = utcnow()
    with db.unit_of_work(sessions) as s:
        county = factories.county(s, "bench", "Bench")
        type_id = factories.task_type(s).id
        manager = factories.manager(s, county, "m1", employee_no="E1", desk="8001",
                                    mobile="13700000001")
        customer = factories.customer(s, county, "13912340000", manager, name="c")
        for call_id, _ in calls:
            tasks.dial(tasks.new_task(s, task_id=call_id, task_type_id=type_id,
                                      customer_id=customer.id, manager_id=manager.id,
                                      flush=False))
        s.flush()
        for call_id, linkedid in calls:
            s.add(Call(id=call_id, direction="outbound", task_id=call_id, customer_id=customer.id,
                       manager_id=manager.id, county_id=county.id, uniqueid=linkedid,
                       linkedid=linkedid, customer_number=customer.phone,
                       unified_number="13900000000", state="requested", requested_at=now,
                       recording_path=f"bench/{call_id}.wav"))


class ReplayServer:
    """Loopback AMI: greeting, any login succeeds, then the stream, once per
    connection (once `go` is set, when one is given)."""

    def __init__(self, stream: Stream, go: asyncio.Event | None = None):
        self.stream = stream
        self.go = go
        self.started_at = None

    async def start(self) -> ReplayServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        sending = None
        try:
            while msg := await reader.readuntil(SEP):
                action_id = re.search(rb"ActionID: *(\S+)", msg, re.IGNORECASE)
                aid = b"ActionID: " + action_id.group(1) + b"\r\n" if action_id else b""
                writer.write(b"Response: Success\r\n" + aid + b"Message: ok\r\n\r\n")
                if sending is None and re.search(rb"Action: *Login", msg, re.IGNORECASE):
                    sending = asyncio.create_task(self._send(writer))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if sending is not None:
                sending.cancel()

    async def _send(self, writer) -> None:
        await writer.drain()
        if self.go is not None:
            await self.go.wait()
        self.started_at = time.perf_counter()
        # whole messages per write: an action's response (the bridge asks for
        # CoreShowChannels on connect) must not land inside an event
        data, start = self.stream.data, 0
        while start < len(data):
            end = data.rfind(SEP, start, start + (1 << 16)) + len(SEP)
            if end <= start:
                end = data.index(SEP, start) + len(SEP)
            writer.write(data[start:end])
            start = end
            await writer.drain()

    async def close(self):
        self.server.close()


# -- the readers ---------------------------------------------------------------------------
# CPU seconds per event: AmiClient's parse (the bench process, replay server
# included), and the bridge's writer process (its batches only)
CPU: dict[str, list[float]] = collections.defaultdict(list)
# the longest batch write of each Bridge.run (up to BATCH events; seconds)
LONGEST_BATCH: dict[str, float] = {}


async def bare_reader(stream: Stream) -> float:
    server = await ReplayServer(stream).start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await reader.readline()
    writer.write(b"Action: Login\r\nUsername: x\r\nSecret: y\r\n\r\n")
    await reader.readuntil(SEP)
    count, buf = 0, b""
    while count < stream.events:
        buf += await reader.read(1 << 16)
        *done, buf = buf.split(SEP)
        count += len(done)
    seconds = time.perf_counter() - server.started_at
    writer.close()
    await server.close()
    return seconds


async def panoramisk_reader(stream: Stream) -> tuple[float, list[dict]]:
    cpu = time.process_time()
    server = await ReplayServer(stream).start()
    client = AmiClient("127.0.0.1", server.port, "x", "y")
    await client.connect()
    events = []
    while len(events) < stream.events:
        events.append(dict((await client.events.get()).items()))
    seconds = time.perf_counter() - server.started_at
    CPU["AmiClient parse"].append((time.process_time() - cpu) / stream.events)
    client.close()
    await server.close()
    return seconds, events


def apply_only(bridge: Bridge, events: list[dict], profile: bool) -> tuple[float, str]:
    prof = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if prof:
        prof.enable()
    for i in range(0, len(events), BATCH):
        bridge.apply_ami(events[i:i + BATCH])
    if prof:
        prof.disable()
    seconds = time.perf_counter() - started
    report = ""
    if prof:
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("cumulative").print_stats(r"ami_bridge|khhf/", 12)
        stats.sort_stats("tottime").print_stats(12)
        report = out.getvalue()
    return seconds, report


async def bridge_reader(stream: Stream, settings, engine, state_dir,
                        writer_process: bool = True) -> float:
    go = asyncio.Event()
    server = await ReplayServer(stream, go).start()
    settings = dataclasses.replace(settings, ami_host="127.0.0.1", ami_port=server.port,
                                   reconcile_seconds=3600)
    bridge = Bridge(settings, engine, state_dir=state_dir, writer_process=writer_process)
    if bridge.writer is not None:
        # started as the daemon starts it, before the stream: the bench
        # measures the flow of events, not a Python process's start
        await asyncio.to_thread(bridge.writer.start)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    # nor the catch-up of its log-in (a CoreShowChannels snapshot and a CEL
    # pass): with the stream sent at once, the snapshot's answer queued behind
    # the whole stream and held every write back until all was parsed (a real
    # Asterisk answers it at once); the stream starts once the bridge is caught up
    while not (bridge.connected.is_set() and bridge.caught_up.is_set()):
        if task.done():
            task.result()
            raise RuntimeError("the bridge stopped before it logged in")
        await asyncio.sleep(0.005)
    cpu = time.process_time()
    go.set()
    last, stalled = 0, time.monotonic()
    while bridge.events_applied < stream.events:
        if task.done():
            task.result()
            raise RuntimeError("the bridge stopped before applying every event")
        if bridge.events_applied != last:
            last, stalled = bridge.events_applied, time.monotonic()
        elif time.monotonic() - stalled > 30:
            raise RuntimeError(f"the bridge applied {last} of {stream.events} events, "
                               f"then nothing for 30 s")
        await asyncio.sleep(0.005)
    seconds = time.perf_counter() - server.started_at
    # the bridge's own process (replay server included, as in AmiClient's figure)
    CPU[f"reader process, {engine.dialect.name}"].append(
        (time.process_time() - cpu) / stream.events)
    if bridge.writer is not None:
        CPU[f"writer process, {engine.dialect.name}"].append(
            bridge.writer.cpu_seconds / stream.events)
    mode = "writer process" if bridge.writer is not None else "writer thread"
    LONGEST_BATCH[f"{mode}, {engine.dialect.name}"] = bridge._batch_seconds
    stop.set()
    await task
    await server.close()
    return seconds


def check_rows(engine, stream: Stream) -> str:
    """'ok' when every event of ours is stored and every call row is final."""
    with engine.connect() as conn:
        stored = conn.scalar(select(func.count()).select_from(CallEvent))
        open_ = conn.scalar(select(func.count()).select_from(Call).where(
            Call.state.not_in(FINAL_STATES)))
    if stored == stream.ours and open_ == 0:
        return "ok"
    return f"stored {stored}/{stream.ours} events, {open_} calls not final"


# -- databases -------------------------------------------------------------------------------
@contextlib.contextmanager
def database(label: str, workdir: Path, pg_url: str | None):
    """A fresh empty database: an SQLite file, or a PostgreSQL database dropped after."""
    if label == "sqlite":
        engine = db.make_engine(f"sqlite:///{workdir / f'tp-{uuid.uuid4().hex[:6]}.db'}")
        try:
            yield engine
        finally:
            engine.dispose()
        return
    if not pg_url:
        raise SystemExit("PostgreSQL needs --pg-url or KHHF_TEST_PG_URL (bench/run sets it)")
    admin = db.make_engine(pg_url, isolation_level="AUTOCOMMIT")
    name = f"khhf_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = db.make_engine(admin.url.set(database=name).render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.bridge_throughput",
                                description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--pg-url", default=os.environ.get("KHHF_TEST_PG_URL"))
    p.add_argument("--profile", action="store_true", help="cProfile the apply step")
    p.add_argument("--quick", action="store_true",
                   help="16,000 events, Bridge.run only (no apply-only rows): under 5 minutes")
    p.add_argument("--recording", type=Path,
                   help="replay this saved recording (a run's recording.ami) instead of "
                        "recording a real Asterisk")
    args = p.parse_args(argv)
    if args.quick and args.events == p.get_default("events"):
        args.events = 16_000
    workdir = Path(tempfile.mkdtemp(prefix="khhf-bench-tp-"))

    if args.recording:
        template = [m + SEP for m in args.recording.read_bytes().split(SEP) if m.strip()]
        settings = config.write_new(workdir / "khhf.conf", home=workdir)
    else:
        template, settings = record(workdir)
    (workdir / "recording.ami").write_bytes(b"".join(template))
    stream = replay_stream(template, args.events)
    print(f"recorded {len(template)} AMI events "
          f"({sum(1 for m in template if LINKEDID.search(m))} of them KHHF calls' own; "
          f"saved as {workdir / 'recording.ami'}); "
          f"replayed {stream.events} events, {len(stream.calls)} call rows, "
          f"{len(stream.data) / 1e6:.1f} MB", file=sys.stderr)

    rows = []
    # milliseconds, so noisy: the median of five
    bare = statistics.median(asyncio.run(bare_reader(stream)) for _ in range(5))
    rows.append(("bare socket reader (median of 5)", "-", bare, "-"))
    runs = [asyncio.run(panoramisk_reader(stream)) for _ in range(3)]
    parsed_s, parsed = statistics.median(r[0] for r in runs), runs[0][1]
    rows.append(("AmiClient (panoramisk), no db (median of 3)", "-", parsed_s, "-"))
    profiles, ratios = [], {}
    for label in args.db.split(","):
        if not args.quick or args.profile:
            with database(label, workdir, args.pg_url) as engine:
                seed_calls(engine, stream.calls)
                bridge = Bridge(dataclasses.replace(settings), engine, state_dir=workdir / "st")
                seconds, report = apply_only(bridge, parsed, args.profile)
                rows.append(("apply_ami only, no socket", label, seconds,
                             check_rows(engine, stream)))
                if report:
                    profiles.append((label, report))
        if not args.quick:
            with database(label, workdir, args.pg_url) as engine:
                seed_calls(engine, stream.calls)
                seconds = asyncio.run(bridge_reader(stream, settings, engine, workdir / "st",
                                                    writer_process=False))
                rows.append(("Bridge.run, writer in a thread (before)", label, seconds,
                             check_rows(engine, stream)))
        with database(label, workdir, args.pg_url) as engine:
            seed_calls(engine, stream.calls)
            seconds = asyncio.run(bridge_reader(stream, settings, engine, workdir / "st"))
            rows.append(("Bridge.run (AMI -> queue -> writer process)", label, seconds,
                         check_rows(engine, stream)))
            ratios[label] = parsed_s / seconds
    print(f"AMI bridge throughput: {stream.events} events ({stream.ours} stored, "
          f"{len(stream.calls)} calls) replayed from a real Asterisk 22 recording; "
          f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} "
          f"{os.getloadavg()[2]:.1f}")
    print("reader | db | events | seconds | events/s | ratio to AmiClient | ratio to bare | rows")
    print("--- | --- | --- | --- | --- | --- | --- | ---")
    for name, label, seconds, ok in rows:
        print(f"{name} | {label} | {stream.events} | {seconds:.3f} | "
              f"{stream.events / seconds:,.0f} | {parsed_s / seconds:.2f} | "
              f"{bare / seconds:.4f} | {ok}")
    print("CPU per event: " + ", ".join(f"{k} {statistics.median(v) * 1e6:.0f} µs"
                                         for k, v in CPU.items()))
    print(f"longest batch write (up to {BATCH} events): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in LONGEST_BATCH.items()))
    for label, report in profiles:
        print(f"\ncProfile of apply_ami ({label}), top by own time:\n{report}")
    print("ratio bridge/panoramisk " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
