"""Serve the web UI: `python -m webui [--config PATH]` (waitress, on
web_host:web_port; exit codes: khhf.daemon).

Settings come from khhf.config (the config file, then KHHF_* variables):
secret_key and database_url must be set, e.g. by `khhf init`.
"""

from __future__ import annotations

import logging
import signal
import sys

from waitress import serve

from khhf import daemon
from khhf.config import Settings
from webui import create_app


def run(settings: Settings) -> None:
    app = create_app(settings)  # refuses a missing database (khhf.db.open_database)
    logging.getLogger("webui").info("KHHF web UI on http://%s:%s/", settings.web_host,
                                    settings.web_port)
    # SIGTERM (systemd's stop) ends the server like Ctrl-C: exit 0 (khhf.daemon)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    beat = daemon.Heartbeat(settings, "web")
    beat.keep()
    try:
        # ident="": no Server header; a banner only helps whoever looks for a known flaw
        serve(app, host=settings.web_host, port=settings.web_port, threads=8, ident="")
    finally:
        beat.clear()


def main(argv=None) -> int:
    return daemon.main("webui", "KHHF web UI", run, argv)


if __name__ == "__main__":
    sys.exit(main())
