"""SMS gateway throughput: messages submitted per second through the gateway,
as a ratio to the SMPP server's own accept rate, measured in the same run
against the same loopback SMSC process (simkit/smsc.py).

    python3 -m bench.sms [--messages 2000] [--pg-url URL]

Rows, one after the other, each with its own fresh SMSC process:
  smpp34 raw           smpp34's Rust client, up to 64 submits in flight
  smpplib raw          smpplib, one submit in flight, no database
  aiosmpplib raw       aiosmpplib's ESME (its own queue and send loop), no database
  (the SMPP server's own accept rate is the best of these three: the rate the
  SMSC was seen to accept at, in this run; every ratio is to it)
  gateway sqlite       smsgw.Gateway: claim row, commit, submit, commit part,
                       commit sent; unthrottled (rate 100000/s)
  gateway postgresql   the same on PostgreSQL (with --pg-url / KHHF_TEST_PG_URL)
Every message is one UCS-2 part (a 20-character Chinese text). The figures
are throughput, not a test: they go in README, "SMS gateway".
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import smpplib.client
import smpplib.consts
import smpplib.exceptions
from sqlalchemy import func, select, text

from khhf import db
from khhf.models import SmsMessage
from khhf.services import sms
from simkit.smsc import SmscProcess
from smsgw.gateway import Gateway
from smsgw.transport import SmppTransport

TEXT = "【客户回访】请回复结果：1成功 2拒绝 3再拨"
BODY = TEXT.encode("utf-16-be")


def accepted(smsc: SmscProcess) -> list[float]:
    return [g["at"] for g in smsc.received()]


def rate_of(smsc: SmscProcess, n: int) -> float:
    """n / (last - first) of the SMSC's own receive times."""
    times = accepted(smsc)
    assert len(times) == n, f"the SMSC accepted {len(times)} of {n}"
    return (n - 1) / (times[-1] - times[0])


def server_rate(port: int, n: int) -> None:
    import smpp34

    async def run():
        client = smpp34.Client("127.0.0.1", port, "bench", "pw", window_size=64)
        smsc = await client.connect()
        sem = asyncio.Semaphore(64)

        async def one(i):
            async with sem:
                await smsc.submit_sm("13900000000", BODY, source_addr="10658",
                                     data_coding=8, registered_delivery=0)
        await asyncio.gather(*(one(i) for i in range(n)))
        await smsc.unbind()
        await client.stop()
    asyncio.run(run())


def smpplib_raw(port: int, n: int) -> None:
    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
    done = []
    client.set_message_sent_handler(lambda pdu: done.append(pdu.sequence))
    client.connect()
    client.bind_transceiver(system_id="bench", password="pw")
    for _ in range(n):
        before = len(done)
        client.send_message(source_addr="10658", destination_addr="13900000000",
                            short_message=BODY, data_coding=8)
        while len(done) == before:
            client.read_once()
    try:
        client.unbind()
    except smpplib.exceptions.ConnectionError:
        pass  # the simulator closes on unbind without waiting
    client.disconnect()


def aiosmpplib_raw(port: int, n: int) -> None:
    import aiosmpplib
    from aiosmpplib.broker import SimpleBroker
    from aiosmpplib.hook import AbstractHook
    from aiosmpplib.state import PhoneNumber

    async def run():
        finished = asyncio.Event()
        count = 0

        class Hook(AbstractHook):
            async def sending(self, smpp_message, pdu, client_id):
                pass

            async def received(self, smpp_message, pdu, client_id):
                nonlocal count
                if isinstance(smpp_message, aiosmpplib.SubmitSmResp):
                    count += 1
                    if count == n:
                        finished.set()

            async def send_error(self, smpp_message, error, client_id):
                raise error

        broker = SimpleBroker(maxsize=n + 10)
        esme = aiosmpplib.ESME("127.0.0.1", port, "bench", "pw", broker=broker, hook=Hook(),
                               log_level=logging.WARNING)
        for i in range(n):
            await broker.enqueue(aiosmpplib.SubmitSm(
                short_message=TEXT, source=PhoneNumber("10658"),
                destination=PhoneNumber("13900000000"), encoding="ucs2",
                registered_delivery=0, log_id=str(i)))
        task = asyncio.create_task(esme.start())
        await asyncio.wait_for(finished.wait(), 300)
        await esme.stop()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
    asyncio.run(run())


def gateway_run(url: str, port: int, n: int) -> None:
    engine = db.make_engine(url)
    db.create_schema(engine)
    factory = db.session_factory(engine, writer=True)
    with factory() as s:
        for _ in range(n):  # queued as the services queue them (the outbox's one writer)
            sms.queue(s, None, TEXT, mobile="13900000000")
        s.commit()
    gateway = Gateway(factory, SmppTransport("127.0.0.1", port, "bench", "pw"),
                      source_addr="10658", rate_per_second=100000)
    thread = threading.Thread(target=gateway.run, daemon=True)
    thread.start()
    while True:
        with factory() as s:
            left = s.scalar(select(func.count()).select_from(SmsMessage)
                            .where(SmsMessage.status != "sent"))
        if not left:
            break
        time.sleep(0.05)
    gateway.stop.set()
    thread.join(30)
    engine.dispose()


def pg_database(admin_url: str) -> tuple[str, callable]:
    """A throw-away database on the server of `admin_url`."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    name = f"khhf_bench_sms_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def measure(label: str, run, n: int, workdir: Path) -> tuple[str, float, float]:
    """(label, msgs/s by the SMSC's receive times, msgs/s by our wall clock)."""
    sub = workdir / label.replace(" ", "_")
    sub.mkdir()
    smsc = SmscProcess(sub).start()
    try:
        t0 = time.perf_counter()
        run(smsc.port, n)
        wall = n / (time.perf_counter() - t0)
        return label, rate_of(smsc, n), wall
    finally:
        smsc.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sms")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--pg-url", default=os.environ.get("KHHF_TEST_PG_URL"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    n = args.messages
    rows = []
    with tempfile.TemporaryDirectory(prefix="khhf-bench-sms-") as tmp:
        workdir = Path(tmp)
        rows.append(measure("smpp34 raw", server_rate, n, workdir))
        rows.append(measure("smpplib raw", smpplib_raw, n, workdir))
        rows.append(measure("aiosmpplib raw", aiosmpplib_raw, n, workdir))
        url = f"sqlite:///{workdir / 'bench.db'}"
        rows.append(measure("gateway sqlite", lambda port, k: gateway_run(url, port, k), n,
                            workdir))
        if args.pg_url:
            pg_url, drop = pg_database(args.pg_url)
            try:
                rows.append(measure("gateway postgresql",
                                    lambda port, k: gateway_run(pg_url, port, k), n, workdir))
            finally:
                drop()
    base = max(rate for _, rate, _ in rows[:3])
    print(f"SMS throughput, {n} one-part UCS-2 messages each, loopback SMSC (simkit/smsc.py);")
    print(f"the SMSC's accept rate (best raw client) = {base:.0f} msgs/s = ratio 1.00")
    print(f"{'path':<22}{'msgs/s (SMSC clock)':>22}{'msgs/s (wall)':>16}{'ratio':>9}")
    for label, rate, wall in rows:
        print(f"{label:<22}{rate:>22.0f}{wall:>16.0f}{rate / base:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
