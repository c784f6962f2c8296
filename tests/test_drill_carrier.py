"""Drill 4 (issue 19), short form: the carrier trunk answers 503, then
swallows INVITEs, then is gone, then returns (simkit/drills/carrier.py).
The drill itself checks every promise on the way (outcomes, /healthz,
progressive dial, the manager's pages, one INVITE per dial) and notes each
one broken; here the row must hold none, and the call rows are read back."""

import pytest
from sqlalchemy import select

from khhf import db
from khhf.models import Call
from simkit.drills.carrier import carrier_failure

pytestmark = pytest.mark.pbx


def test_the_carrier_fails_and_returns(tmp_path):
    row = carrier_failure(short=True, workdir=tmp_path)
    assert row.violations() == [], row
    assert row.lost == 0 and row.doubled == 0 and row.placed == row.rows
    assert row.rec_ok == 3 and row.rec_silent == 0
    assert "carrier_rejected (SIP 503)" in row.operator_saw
    assert "down" in row.operator_saw and "green" in row.operator_saw
    engine = db.make_engine(f"sqlite:///{tmp_path / 'bridge.db'}")
    with db.session_factory(engine)() as s:
        outcomes = [(c.state, c.outcome, c.sip_code) for c in
                    s.scalars(select(Call).order_by(Call.id))]
    engine.dispose()
    # 503 x3, one swallowed INVITE, no call while the PBX knew the trunk gone, 3 answered
    assert outcomes == [("failed", "carrier_rejected", 503)] * 3 + [
        ("failed", "carrier_unreachable", 408)] + [("ended", "answered", 200)] * 3
