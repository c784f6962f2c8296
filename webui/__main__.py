"""Serve the web UI: `python -m webui` (waitress, on web_host:web_port).

Settings come from khhf.config (the config file, then KHHF_* variables):
secret_key and database_url must be set, e.g. by `khhf init`.
"""

from __future__ import annotations

import logging
import sys

from waitress import serve

from khhf import config, db
from webui import create_app


def main() -> int:
    try:
        settings = config.load()
        app = create_app()
    except config.ConfigError as error:
        print(f"webui: {error}", file=sys.stderr)
        return 2
    if not db.has_schema(db.make_engine(settings.database_url)):
        print(f"webui: the database {settings.database_url} has no tables: run `khhf init`.",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(f"KHHF web UI on http://{settings.web_host}:{settings.web_port}/", flush=True)
    # ident="": no Server header; a banner only helps whoever looks for a known flaw
    serve(app, host=settings.web_host, port=settings.web_port, threads=8, ident="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
