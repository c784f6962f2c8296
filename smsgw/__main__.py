"""`python -m smsgw [--config PATH]`: run the SMS gateway until SIGTERM/SIGINT
(exit codes: khhf.daemon). With no smsc_host set there is nothing to bind
to: the daemon says so and idles, the outbox and inbox stay in the database
(the embedded default: the web UI and `khhf sms` show and feed them)."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from khhf import daemon, db
from khhf.config import Settings

from .gateway import Gateway
from .transport import SmppTransport

log = logging.getLogger("smsgw")


def serve(settings: Settings) -> None:
    """Run the gateway (or idle, embedded) until a signal."""
    engine = db.open_database(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if not settings.smsc_host:
        log.info("no smsc_host set: SMS stay in the database (web UI: SMS; `khhf sms outbox`)")
        beat = daemon.Heartbeat(settings, "smsgw")
        beat.keep(lambda: {"smsc": "none"})
        try:
            stop.wait()
        finally:
            beat.clear()
        return
    if settings.sms_rate_per_second < 1:
        raise daemon.StartError("sms_rate_per_second must be at least 1.")
    gateway = Gateway(db.session_factory(engine, writer=True),
                      SmppTransport(settings.smsc_host, settings.smsc_port,
                                    settings.smsc_system_id, settings.smsc_password),
                      source_addr=settings.sms_source_addr,
                      rate_per_second=settings.sms_rate_per_second,
                      max_attempts=settings.sms_max_attempts, settings=settings)
    gateway.stop = stop
    log.info("SMS gateway for %s:%s, %s submits/s", settings.smsc_host, settings.smsc_port,
             settings.sms_rate_per_second)
    beat = daemon.Heartbeat(settings, "smsgw")
    beat.keep(lambda: {"smsc": gateway.link[0],
                       "smsc_since": f"{gateway.link[1]:%Y-%m-%dT%H:%M:%SZ}"})
    try:
        gateway.run()
    finally:
        beat.clear()


def main(argv=None) -> int:
    return daemon.main("smsgw", "KHHF SMS gateway: the outbox to the SMSC, replies back",
                       serve, argv)


if __name__ == "__main__":
    sys.exit(main())
