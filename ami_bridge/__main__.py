"""`python -m ami_bridge [--config PATH]`: run the AMI bridge daemon until
SIGTERM/SIGINT (exit codes: khhf.daemon)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from khhf import daemon
from khhf.config import Settings

from .bridge import Bridge
from .commands import CommandServer


async def serve(settings: Settings) -> None:
    settings.require("ami_secret")
    settings.require("bridge_token")
    bridge = Bridge(settings)
    server = await CommandServer(bridge).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger(__name__).info("AMI bridge commands on %s:%s", settings.bridge_host,
                                     settings.bridge_port)
    # khhf.health's view of it, beaten from this same event loop
    beat = daemon.Heartbeat(settings, "bridge")
    beating = asyncio.create_task(beat.keep_async(bridge.health_state))
    try:
        await bridge.run(stop)
    finally:
        beating.cancel()
        beat.clear()
        server.close()
        await server.wait_closed()


def main(argv=None) -> int:
    return daemon.main("ami_bridge", "KHHF AMI bridge: call events into the database",
                       lambda settings: asyncio.run(serve(settings)), argv)


if __name__ == "__main__":
    sys.exit(main())
