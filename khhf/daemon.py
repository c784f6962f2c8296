"""How the three daemons start: `python -m agi`, `python -m ami_bridge`,
`python -m webui`. One way for all: `--config PATH` (default $KHHF_CONFIG,
then /etc/khhf/khhf.conf), one log format on stderr, and one exit-code
convention that systemd units rely on:

    0  stopped when asked (SIGTERM/SIGINT)
    1  failed while running (a port taken, a crash): systemd restarts it
    2  cannot start as configured (bad or missing setting, no database, a
       database not at the newest revision): restarting will not help
       (RestartPreventExitStatus=2)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from khhf import config
from khhf.config import ConfigError, Settings

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
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
