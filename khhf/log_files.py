"""Retention of the log files KHHF's daemons do not write themselves.

The daemons log to stderr, that is to the journal under systemd, whose own
retention applies (journald.conf). The only files are Asterisk's, in the
PBX's log directory: `console.log` (its output), `messages.log` (its
logger: notices, warnings, errors) and the CDR CSV (`cdr-custom/`, kept
for audits; nobody reads it); and, on the SIP edge's machine (edge_nodes
set), Kamailio's `kamailio.log` in the edge's directory. The timed-jobs
daemon of each machine rotates its own once over MAX_BYTES, keeping KEEP
gzip generations (`messages.log.1.gz` newest), every hour.

Rotation copies the file, then truncates it in place, as logrotate's
copytruncate does: Asterisk and Kamailio keep writing to the same open file
(opened to append), so they need no signal; a line written between the
copy and the truncation is lost, which is acceptable for these files.

The CEL CSV (`cel-custom/khhf-cel.csv`) is not rotated: the AMI bridge
reads it by offset to complete calls it missed, and rotating it under the
bridge could lose those rows. It is the PBX's call record, as the
database's call rows are, and is kept with them.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from khhf.config import Settings

MAX_BYTES = 50 * 2**20
KEEP = 5


def pbx_log_files(settings: Settings) -> list[Path]:
    """The PBX's log files that are rotated (see the module's doc)."""
    log = Path(settings.pbx_dir) / "log"
    return [log / "console.log", log / "messages.log", log / "cdr-custom" / "khhf-cdr.csv"]


def edge_log_files(settings: Settings) -> list[Path]:
    """The SIP edge's log file, on the machine that runs the edge (edge_nodes set)."""
    return [Path(settings.edge_dir) / "kamailio.log"] if settings.edge_nodes.strip() else []


def _generation(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}.gz")


def rotate(path: Path, max_bytes: int, keep: int) -> bool:
    """If `path` is larger than `max_bytes`: shift its generations
    (.1.gz -> .2.gz, ..., dropping those past `keep`), copy it to .1.gz
    and truncate it. Returns whether it was rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(keep, 0, -1):
        older = _generation(path, n)
        if n == keep:
            older.unlink(missing_ok=True)
        elif older.exists():
            os.replace(older, _generation(path, n + 1))
    if keep:
        newest = _generation(path, 1)
        tmp = newest.with_name(f".{newest.name}.tmp")
        with open(path, "rb") as src, gzip.open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, newest)
    with open(path, "r+b") as fh:
        fh.truncate(0)
    return True


def rotate_logs(settings: Settings, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> list[Path]:
    """Rotate the PBX's and the edge's log files that are over the limit;
    returns those rotated."""
    return [path for path in pbx_log_files(settings) + edge_log_files(settings)
            if rotate(path, max_bytes, keep)]
