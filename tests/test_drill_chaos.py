"""Drill 7, short form: the AMI bridge and the web UI SIGKILLed at random
moments (seeded) for 40 s while managers dial and file results
in the web UI and customers call the hotline; afterwards every call has
exactly one final row with the right outcome, every recording is complete,
no result is doubled, and `khhf status` named each dead daemon."""

import pytest

from simkit.drills.chaos import chaos

pytestmark = pytest.mark.pbx


def test_bridge_and_web_killed_at_random_lose_and_double_nothing(tmp_path):
    row = chaos(short=True, seed=7, workdir=tmp_path, seconds=40)
    assert row.placed >= 10, row
    assert row.violations() == [], row
