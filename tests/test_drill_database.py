"""Drills 1 and 2 of issue 19, short forms (simkit/drills/database.py):
the database goes away while calls are up and managers click 呼叫. Every
call the web accepted has one final row with the right outcome and a
complete recording; refused clicks got a 503 in Chinese and left no row;
the operator was told (/healthz, `khhf status`, the staff banner); the
bridge held the events of the fault and stored them after."""

import json

from ami_bridge.backlog import Backlog
from simkit.drills import database


def test_postgresql_stopped_during_calls(pbx_harness, tmp_path):
    row = database.postgres_outage(short=True, harness=pbx_harness, workdir=tmp_path)
    print(row)
    assert row.violations() == [], row
    assert row.placed >= 3 and row.rows == row.placed
    assert row.rec_ok + row.rec_partial + row.rec_missing == row.placed
    assert "spills to disk" in row.operator_saw and "0 spills" not in row.operator_saw


def test_sqlite_held_by_an_outside_writer(pbx_harness, tmp_path):
    row = database.sqlite_held(short=True, harness=pbx_harness, workdir=tmp_path)
    print(row)
    assert row.violations() == [], row
    assert row.placed >= 3 and row.rows == row.placed
    assert row.rec_ok + row.rec_partial + row.rec_missing == row.placed


def test_backlog_spills_past_its_bound_and_keeps_the_order(tmp_path):
    path = tmp_path / "held.jsonl"
    backlog = Backlog(path, memory_events=3)
    backlog.add([{"n": i} for i in range(5)])   # past the bound: all to the file
    backlog.add([{"n": 5}])
    assert (len(backlog), backlog.spilled, len(backlog.memory)) == (6, 5, 1)
    assert [json.loads(x)["n"] for x in path.read_text().splitlines()] == [0, 1, 2, 3, 4]
    assert backlog.peek(2) == [{"n": 0}, {"n": 1}]
    backlog.drop()
    # a bridge stopped now leaves the rest in the file: the next one writes it all
    # (the two already stored again too: harmless, events are stored once)
    backlog.spill()
    again = Backlog(path)
    seen = []
    while again:
        seen += [e["n"] for e in again.peek(2)]
        again.drop()
    assert seen == [0, 1, 2, 3, 4, 5] and not path.exists()
