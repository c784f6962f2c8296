"""SQLite under concurrent writers: a unit of work that reads, then writes,
must wait for its turn, not fail with "database is locked" (seen at 300
simultaneous calls before units of work began with BEGIN IMMEDIATE)."""

import threading
import time

from sqlalchemy import func, select

from khhf import db
from khhf.models import County


def test_read_then_write_units_of_work_wait_for_each_other(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    db.create_schema(engine)
    factory = db.session_factory(engine)
    first_has_read = threading.Event()
    errors = []

    def first():
        try:
            with db.unit_of_work(factory) as s:
                n = s.scalar(select(func.count()).select_from(County))
                first_has_read.set()
                time.sleep(0.3)  # the second writer comes in now
                s.add(County(code=f"c{n}-a", name="甲"))
        except Exception as exc:  # pragma: no cover - the failure being tested
            errors.append(exc)

    def second():
        first_has_read.wait(5)
        try:
            with db.unit_of_work(factory) as s:
                n = s.scalar(select(func.count()).select_from(County))
                s.add(County(code=f"c{n}-b", name="乙"))
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    with factory() as s:
        # serialised: the second saw the first's row
        assert sorted(s.scalars(select(County.code))) == ["c0-a", "c1-b"]
    engine.dispose()
