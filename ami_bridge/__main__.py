"""`python -m ami_bridge`: run the AMI bridge daemon until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from khhf import config
from khhf.config import ConfigError

from .bridge import Bridge
from .commands import CommandServer


async def main() -> None:
    settings = config.load()
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
    try:
        await bridge.run(stop)
    finally:
        server.close()
        await server.wait_closed()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(main())
    except (ConfigError, OSError) as exc:
        print(f"ami_bridge: {exc}", file=sys.stderr)
        sys.exit(1)
