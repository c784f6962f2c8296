"""The AMI events the bridge holds while the database cannot take them.

Asterisk goes on sending events while the database is away (PostgreSQL
stopped or restarting, SQLite's write lock held by another process). The
bridge's one consumer keeps them here, oldest first: up to `memory_events`
in memory; past that bound the whole memory part is appended to a file of
JSON lines under the bridge's state directory, so memory stays bounded
however long the outage lasts. When the database is back the consumer
writes them, the file's first, then memory's.

The file outlives the process: a bridge stopped during an outage leaves its
held events there, and the next one writes them. Writing an event twice is
harmless (events are stored once, keyed: khhf.calls.store), so a crash
between a write and its `drop` only repeats work.
"""

from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path

# about 2 KB an event in memory: 20,000 events is tens of MB, at 5 calls/s
# (about 30 events each) a minute and more of outage before anything spills
MEMORY_EVENTS = 20_000


class Backlog:
    def __init__(self, path: Path, memory_events: int = MEMORY_EVENTS):
        self.path = Path(path)
        self.memory_events = memory_events
        self.memory: deque[dict] = deque()
        self.spilled = 0          # events in the file not yet written to the database
        self.spills = 0           # how often memory overflowed into the file
        self._offset = 0          # where the file's unwritten events begin
        self._peeked: tuple[int, int] = (0, 0)  # (events, file offset after them)
        if self.path.exists():   # left by a bridge that stopped during an outage
            with open(self.path, "rb") as fh:
                self.spilled = sum(1 for line in fh if line.strip())
            if not self.spilled:
                self.path.unlink()

    def __len__(self) -> int:
        return self.spilled + len(self.memory)

    def add(self, events: list[dict]) -> None:
        """Hold `events` after those already held."""
        self.memory.extend(events)
        if len(self.memory) > self.memory_events:
            self.spill()

    def spill(self) -> None:
        """Move every event held in memory to the end of the file."""
        if not self.memory:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            for event in self.memory:
                fh.write(json.dumps(event, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.spilled += len(self.memory)
        self.spills += 1
        self.memory.clear()

    def peek(self, n: int) -> list[dict]:
        """The oldest up to `n` held events, still held until `drop`."""
        if not self.spilled:
            batch = [self.memory[i] for i in range(min(n, len(self.memory)))]
            self._peeked = (len(batch), self._offset)
            return batch
        batch, offset = [], self._offset
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            while len(batch) < n:
                line = fh.readline()
                if not line:
                    break
                offset += len(line)
                if line.strip():
                    batch.append(json.loads(line))
        self._peeked = (len(batch), offset)
        return batch

    def drop(self) -> None:
        """Forget the events the last `peek` returned: they are stored."""
        count, offset = self._peeked
        self._peeked = (0, self._offset)
        if not self.spilled:
            for _ in range(min(count, len(self.memory))):
                self.memory.popleft()
            return
        self._offset, self.spilled = offset, self.spilled - count
        if self.spilled <= 0:
            self.spilled, self._offset = 0, 0
            self.path.unlink(missing_ok=True)
