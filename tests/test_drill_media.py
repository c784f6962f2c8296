"""Fault drills 3 and 5 (issue 19), short forms, against a real Asterisk,
SIPp parties and the bridge (simkit/drills/media.py says what each does).

3. The recordings disk fills during recorded calls: the calls are not cut,
   every row says its recording is complete, partial or missing (never a
   silent half file), the disk check is red before the first damage, and
   the recordings page says 录音不完整 / 无录音.
5. `core restart gracefully` with calls up: dials are refused before
   anything rings with the restart's message, the calls in progress finish
   and their rows complete, the bridge logs in again, a new call works."""

from __future__ import annotations

import os

import pytest

from simkit.drills import media, table

pytestmark = [pytest.mark.pbx,
              pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs and runs Asterisk: root")]


def test_recordings_disk_full(tmp_path):
    row = media.recordings_disk_full(short=True, workdir=tmp_path)
    print(table([row]))
    assert row.violations() == []
    assert row.placed == row.rows == 12 and row.lost == row.doubled == 0
    assert row.rec_ok >= 3 and row.rec_partial >= 1 and row.rec_missing >= 3
    assert row.rec_silent == 0
    assert "disk check red before any recording was damaged" in row.operator_saw


def test_pbx_graceful_restart(tmp_path):
    row = media.pbx_graceful_restart(short=True, workdir=tmp_path)
    print(table([row]))
    assert row.violations() == []
    assert row.placed == row.rows == 3 and row.lost == row.doubled == 0
    assert row.rec_ok == 3 and row.rec_silent == 0
    assert "dials refused before ringing" in row.operator_saw
