"""Read the CEL file Asterisk appends to (cel_custom.conf), incrementally.

The file is the record of truth: written by Asterisk whether or not the
bridge is connected. The reader remembers how far it got (by inode and
offset, in a small state file), so a restart does not read it all again,
and a rotated file is read from its start.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from khhf.calls.events import CEL_COLUMNS


class CelReader:
    def __init__(self, path: Path, state_path: Path):
        self.path = Path(path)
        self.state_path = Path(state_path)

    def _load_state(self) -> tuple[int, int]:
        try:
            data = json.loads(self.state_path.read_text())
            return int(data["inode"]), int(data["offset"])
        except (OSError, ValueError, KeyError):
            return 0, 0

    def read_new(self) -> tuple[list[dict], callable]:
        """New complete rows since the last commit, and a function that
        commits the new offset (call it once the rows are stored)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return [], lambda: None
        inode, offset = self._load_state()
        if inode != stat.st_ino or offset > stat.st_size:
            offset = 0
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # only whole lines: Asterisk may be mid-write
        text = data[:end].decode("utf-8", errors="replace")
        rows = [dict(zip(CEL_COLUMNS, fields)) for fields in csv.reader(io.StringIO(text)) if fields]

        def commit():
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"inode": stat.st_ino, "offset": offset + end}))
            os.replace(tmp, self.state_path)
        return rows, commit
