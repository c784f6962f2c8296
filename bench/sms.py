"""SMS gateway throughput: messages submitted per second through the gateway,
as a ratio to the SMPP server's own accept rate, measured in the same run
against the same loopback SMSC process (simkit/smsc.py).

    python3 -m bench.sms [--messages 3000] [--rounds 5] [--pg-url URL] [--profile]
    python3 -m bench.sms --quick       (1000 messages, three rounds: about two minutes)

Rows, one after the other, each with its own fresh SMSC process:
  smpp34 raw           smpp34's Rust client, WINDOW (64) submits in flight
  smpplib raw          smpplib's client, WINDOW submits in flight, asking for a
                       receipt with each and acknowledging them as the gateway
                       does: the gateway's SMPP work without its database
  aiosmpplib raw       aiosmpplib's ESME (its own queue and send loop), no database
  (the SMPP server's own accept rate is the best of these three: the rate the
  SMSC was seen to accept at, in this run; every ratio is to it)
  gateway sqlite       smsgw.Gateway, window WINDOW, unthrottled (rate 100000/s):
                       claim a batch, submit, record the outcomes and the
                       receipts, grouped in one commit per turn
  gateway postgresql   the same on PostgreSQL (with --pg-url / KHHF_TEST_PG_URL)
Every message is one UCS-2 part (a 20-character Chinese text). With several
rounds each row's figure is its median; the ratios are of the medians. The
last line is the ratios, `ratio gateway/raw sqlite=… postgresql=…`. The
figures are throughput, not a test: they go in bench/RESULTS.md, "SMS
gateway throughput". --profile prints where the gateway's thread spends its
time (cProfile, SQLite then PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import os
import pstats
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import smpplib.client
import smpplib.consts
import smpplib.exceptions
from sqlalchemy import text

from khhf import db
from khhf.services import sms
from simkit.smsc import SmscProcess
from smsgw.gateway import Gateway
from smsgw.transport import SmppTransport

TEXT = "【客户回访】请回复结果：1成功 2拒绝 3再拨"
BODY = TEXT.encode("utf-16-be")
# submits in flight, unanswered: every client that has a window, the gateway too
WINDOW = 64
# a raw client that has not finished by then is left out of the run (aiosmpplib
# sometimes never gets an answer to its bind from a just-started simulator)
RAW_TIMEOUT = 30
# how often the bench looks whether the gateway has sent everything
POLL_SECONDS = 0.2


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
        client = smpp34.Client("127.0.0.1", port, "bench", "pw", window_size=WINDOW)
        smsc = await client.connect()
        sem = asyncio.Semaphore(WINDOW)

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
    answered = []
    client.set_message_sent_handler(lambda pdu: answered.append(pdu.sequence))
    client.set_message_received_handler(lambda pdu: None)  # a receipt: acknowledged
    client.connect()
    client._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.bind_transceiver(system_id="bench", password="pw")
    sent = 0
    while len(answered) < n:
        while sent < n and sent - len(answered) < WINDOW:
            client.send_message(
                source_addr="10658", destination_addr="13900000000", short_message=BODY,
                data_coding=8, registered_delivery=smpplib.consts.SMPP_SMSC_DELIVERY_RECEIPT_BOTH)
            sent += 1
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
        await asyncio.wait_for(finished.wait(), RAW_TIMEOUT)
        await esme.stop()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
    asyncio.run(run())


def gateway_run(url: str, port: int, n: int,
                profile: tuple[pstats.Stats, pstats.Stats] | None = None) -> None:
    engine = db.make_engine(url)
    db.create_schema(engine)
    factory = db.session_factory(engine, writer=True)
    with factory() as s:
        for _ in range(n):  # queued as the services queue them (the outbox's one writer)
            sms.queue(s, None, TEXT, mobile="13900000000")
        s.commit()
    gateway = Gateway(factory, SmppTransport("127.0.0.1", port, "bench", "pw"),
                      source_addr="10658", rate_per_second=100000, window=WINDOW)
    if profile is not None:
        # the committer thread's share too: cProfile sees one thread
        committer = cProfile.Profile()
        commit = gateway._commit
        gateway._commit = lambda batch: committer.runcall(commit, batch)  # type: ignore[method-assign]

    def run():
        if profile is None:
            gateway.run()
            return
        profiler = cProfile.Profile()
        profiler.runcall(gateway.run)
        profile[0].add(profiler)
        profile[1].add(committer)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    # done when every row is sent: looked at five times a second, one short
    # query, so the bench's own polling takes little from the gateway's
    # process (the rate is the SMSC's, first to last accept: when the end
    # is seen does not change it)
    with engine.connect() as conn:
        while conn.exec_driver_sql(
                "SELECT EXISTS (SELECT 1 FROM sms_messages WHERE status <> 'sent')").scalar():
            conn.rollback()
            time.sleep(POLL_SECONDS)
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


def one_round(n: int, pg_url: str | None, workdir: Path,
              profiles: dict[str, tuple[pstats.Stats, pstats.Stats]] | None
              ) -> list[tuple[str, float, float]]:
    """Every row once, each against a fresh SMSC; the gateways on fresh databases."""
    rows = []
    for label, client in (("smpp34 raw", server_rate), ("smpplib raw", smpplib_raw),
                          ("aiosmpplib raw", aiosmpplib_raw)):
        try:
            rows.append(measure(label, client, n, workdir))
        except Exception as exc:  # left out of this round, said so
            print(f"{label}: failed this round ({type(exc).__name__}: {exc})", file=sys.stderr)
            rows.append((label, float("nan"), float("nan")))
    url = f"sqlite:///{workdir / uuid.uuid4().hex}.db"
    gateways = [("gateway sqlite", url, None)]
    if pg_url:
        gateways.append(("gateway postgresql", *pg_database(pg_url)))
    for label, db_url, drop in gateways:
        profile = profiles.get(label) if profiles is not None else None
        try:
            rows.append(measure(label, lambda port, k: gateway_run(db_url, port, k, profile), n,
                                workdir))
        finally:
            if drop:
                drop()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sms")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="1000 messages, three rounds (about two minutes)")
    parser.add_argument("--profile", action="store_true",
                        help="print the gateway's profile (cProfile: its link thread and "
                             "its committer thread)")
    parser.add_argument("--pg-url", default=os.environ.get("KHHF_TEST_PG_URL"))
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.rounds = 1000, 3
    logging.basicConfig(level=logging.WARNING)
    n = args.messages
    profiles: dict[str, tuple[pstats.Stats, pstats.Stats]] | None = None
    if args.profile:
        profiles = {label: (pstats.Stats(), pstats.Stats())
                    for label in ("gateway sqlite", "gateway postgresql")}
    rounds = []
    with tempfile.TemporaryDirectory(prefix="khhf-bench-sms-") as tmp:
        for r in range(args.rounds):
            workdir = Path(tmp) / f"round{r}"
            workdir.mkdir()
            rounds.append(one_round(n, args.pg_url, workdir, profiles))
    labels = [label for label, _, _ in rounds[0]]
    rows = [(label, *(statistics.median([r for rs in rounds if (r := rs[i][k]) == r] or [0.0])
                      for k in (1, 2))) for i, label in enumerate(labels)]
    base = max(rate for _, rate, _ in rows[:3])
    load = os.getloadavg()
    print(f"SMS throughput, {n} one-part UCS-2 messages each, loopback SMSC (simkit/smsc.py),")
    print(f"window {WINDOW}, median of {args.rounds} round(s); load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end")
    print(f"the SMSC's accept rate (best raw client) = {base:.0f} msgs/s = ratio 1.00")
    print(f"{'path':<22}{'msgs/s (SMSC clock)':>22}{'msgs/s (wall)':>16}{'ratio':>9}")
    for label, rate, wall in rows:
        print(f"{label:<22}{rate:>22.0f}{wall:>16.0f}{rate / base:>9.2f}")
    if profiles is not None:
        for label, pair in profiles.items():
            for thread, stats in zip(("link thread", "committer thread"), pair):
                if stats.total_calls:
                    out = io.StringIO()
                    stats.stream = out
                    stats.sort_stats("cumulative").print_stats(30)
                    stats.sort_stats("tottime").print_stats(15)
                    print(f"\n{label}: cProfile of the gateway's {thread}, all rounds\n"
                          f"{out.getvalue()}")
    ratios = {label.split()[1]: rate / base for label, rate, _ in rows[3:]}
    print("ratio gateway/raw " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
