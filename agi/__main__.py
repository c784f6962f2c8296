"""`python -m agi`: the FastAGI service on settings.agi_host:agi_port."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from khhf import config
from khhf.config import ConfigError


async def serve(settings) -> None:
    from agi.server import make_server
    server = make_server(settings)
    await server.start(settings.agi_host, settings.agi_port)
    logging.getLogger("agi").info("FastAGI service on %s:%s, routes: %s", settings.agi_host,
                                  settings.agi_port, ", ".join(sorted(server.routes)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agi", description="KHHF FastAGI service")
    parser.add_argument("--config", help="config file (default $KHHF_CONFIG or /etc/khhf/khhf.conf)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = config.load(args.config)
        asyncio.run(serve(settings))
    except (ConfigError, OSError) as exc:
        print(f"agi: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
