"""`python -m agi`: the FastAGI service on settings.agi_host:agi_port.

Under systemd (Type=notify, WatchdogSec=2), it says READY=1 once listening
and sends WATCHDOG=1 from its event loop: a service that hangs (stopped,
loop blocked) stops the heartbeat, systemd kills it, the kernel resets
its connections and every call waiting in AGI() takes the dialplan's
fallback at once. res_agi itself has no read timeout, so without this a
hung service would hold calls in ringback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from khhf import daemon

# how often stale inbound call rows are looked for (khhf.services.hotline)
SWEEP_SECONDS = 60


# how long a thread may hold the GIL while another waits for it: the event
# loop must not wait the default 5 ms behind a database write in the pool.
# It waits this long again at each socket call and SQLite step it makes
# (each one releases the GIL), so a call routed while the previous one's
# hang-up (~9 ms of ORM work) runs waited 0.5 ms some ten times
GIL_SWITCH_SECONDS = 0.0001


async def serve(settings) -> None:
    from agi.server import make_server
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    server = make_server(settings)
    await server.start(settings.agi_host, settings.agi_port)
    logging.getLogger("agi").info("FastAGI service on %s:%s, routes: %s", settings.agi_host,
                                  settings.agi_port, ", ".join(sorted(server.routes)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sd_notify("READY=1")
    heartbeat = asyncio.create_task(watchdog())
    sweeper = asyncio.create_task(sweep(server))
    # khhf.health's view of it, beaten from this same event loop
    beat = daemon.Heartbeat(settings, "agi")
    beating = asyncio.create_task(beat.keep_async())
    try:
        await stop.wait()
    finally:
        heartbeat.cancel()
        sweeper.cancel()
        beating.cancel()
        beat.clear()
        await server.aclose()


async def sweep(server, interval: float = SWEEP_SECONDS) -> None:
    """Close inbound call rows whose hang-up never reached us, now and then."""
    while True:
        try:
            await server.sweep()
        except Exception:  # the database may be away for a while: try again later
            logging.getLogger("agi").exception("sweeping stale inbound call rows failed")
        await asyncio.sleep(interval)


def sd_notify(message: str) -> bool:
    """Tell systemd (if it started us with NOTIFY_SOCKET) how we are."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)
    return True


async def watchdog() -> None:
    """WATCHDOG=1 at half the interval systemd asked for, from the event loop."""
    usec = int(os.environ.get("WATCHDOG_USEC") or 0)
    if not usec:
        return
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(usec / 2e6)


def main(argv=None) -> int:
    return daemon.main("agi", "KHHF FastAGI service",
                       lambda settings: asyncio.run(serve(settings)), argv)


if __name__ == "__main__":
    sys.exit(main())
