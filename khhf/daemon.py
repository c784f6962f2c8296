"""How the daemons start: `python -m agi`, `python -m ami_bridge`,
`python -m webui`, `python -m smsgw`, `python -m jobs`. One way for all:
`--config PATH` (default $KHHF_CONFIG, then /etc/khhf/khhf.conf), one log
format on stderr, and one exit-code convention that systemd units rely on:

    0  stopped when asked (SIGTERM/SIGINT)
    1  failed while running (a port taken, a crash): systemd restarts it
    2  cannot start as configured (bad or missing setting, no database, a
       database not at the newest revision): restarting will not help
       (RestartPreventExitStatus=2)

Logs: one line per event with its level (journald keeps each line as an
entry, so a traceback is folded into its record's line), and no customer
number whole: every line passes khhf.phones.mask_numbers on its way out,
whatever a message or an exception's text carried.

Heartbeats: each running daemon keeps a small JSON file in the home's run
directory (`<home>/run/<daemon>.json`: pid, start time, last beat and what
the daemon wants health to know), rewritten atomically every
HEARTBEAT_SECONDS from the loop that does its work and removed when it
stops. khhf.health reads them: no file, a dead pid or a stale beat means
the daemon is not working.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from khhf import config
from khhf.config import ConfigError, Settings
from khhf.phones import mask_numbers

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


HEARTBEAT_SECONDS = 5.0


class OneLineFormatter(logging.Formatter):
    """LOG_FORMAT on one line per record (a traceback's lines joined with
    " | "), with every customer number in it masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_numbers(" | ".join(super().format(record).splitlines()))


# loggers (comma-separated) a daemon logs at DEBUG, e.g. khhf.db.lock
DEBUG_LOGGERS_ENV = "KHHF_DEBUG_LOGGERS"


def setup_logging(level: int = logging.INFO) -> None:
    """The daemons' logging: OneLineFormatter on stderr (the journal); the
    loggers named in $KHHF_DEBUG_LOGGERS at DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for name in os.environ.get(DEBUG_LOGGERS_ENV, "").split(","):
        if name.strip():
            logging.getLogger(name.strip()).setLevel(logging.DEBUG)


def run_dir(settings: Settings) -> Path:
    """Where the daemons' heartbeat files are."""
    return Path(settings.home) / "run"


def _utc_iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Heartbeat:
    """A daemon's heartbeat file (see the module's doc). `beat(state)`
    writes it now; `keep(state)` (a thread) or `keep_async(state)` (a task
    in the daemon's event loop) write it every `interval`; `clear()`
    removes it when the daemon stops."""

    def __init__(self, settings: Settings, name: str, interval: float = HEARTBEAT_SECONDS):
        self.name, self.interval = name, interval
        self.path = run_dir(settings) / f"{name}.json"
        self.started_at = _utc_iso(dt.datetime.now(dt.timezone.utc))
        self._stop = threading.Event()

    def beat(self, state: dict | None = None) -> None:
        record = {"daemon": self.name, "pid": os.getpid(), "started_at": self.started_at,
                  "beat_at": _utc_iso(dt.datetime.now(dt.timezone.utc)),
                  "interval": self.interval, "state": state or {}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, self.path)   # readers see the old beat or the new, never half

    def _beat_safely(self, state: Callable[[], dict]) -> None:
        try:
            self.beat(state())
        except Exception:  # a full disk must not stop the daemon; health sees it stale
            logging.getLogger("khhf.daemon").warning("heartbeat %s not written", self.path,
                                                     exc_info=True)

    def keep(self, state: Callable[[], dict] = dict) -> threading.Thread:
        """Beat now and then every `interval` from a thread, until clear()."""
        def run():
            while True:
                self._beat_safely(state)
                if self._stop.wait(self.interval):
                    return
        thread = threading.Thread(target=run, name=f"heartbeat-{self.name}", daemon=True)
        thread.start()
        return thread

    async def keep_async(self, state: Callable[[], object] = dict) -> None:
        """Beat now and then every `interval` from the event loop: a loop that
        hangs stops beating. `state` may be a coroutine function."""
        while True:
            try:
                value = state()
                if asyncio.iscoroutine(value):
                    value = await value
                self.beat(value if isinstance(value, dict) else {})
            except Exception:
                logging.getLogger("khhf.daemon").warning("heartbeat %s not written", self.path,
                                                         exc_info=True)
            await asyncio.sleep(self.interval)

    def clear(self) -> None:
        """The daemon stops: no beat left behind (only our own file)."""
        self._stop.set()
        try:
            if json.loads(self.path.read_text(encoding="utf-8")).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


class StartError(Exception):
    """The daemon cannot start as configured; the message says what to do."""


def main(prog: str, description: str, run: Callable[[Settings], object],
         argv: list[str] | None = None) -> int:
    """Parse --config, load the settings, run `run(settings)`; map failures
    to the exit codes above with one line on stderr naming what to do."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description)
    parser.add_argument("--config", help="config file (default $KHHF_CONFIG or "
                                         f"{config.DEFAULT_CONFIG_PATH})")
    args = parser.parse_args(argv)
    setup_logging()
    # reading the schema's revision (khhf.db.open_database) is no event of ours
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        run(settings)
    except (ConfigError, StartError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        pass
    return EXIT_OK
