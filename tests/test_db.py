"""SQLite under concurrent writers: a unit of work that reads, then writes,
must wait for its turn, not fail with "database is locked" (seen at 300
simultaneous calls before units of work began with BEGIN IMMEDIATE)."""

import fcntl
import os
import sqlite3
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


def test_a_processs_writers_take_sqlites_lock_in_turn_first_come_first_served(tmp_path):
    """db.WriterGate: writers of one process queue in order of arrival and
    are woken as the one before ends (SQLite's busy handler polls, and a
    writer that waited long lost to newcomers until refused); a wait that
    times out gives up its place; every unit of work leaves the gate, by
    commit or by rollback."""
    gate = db.WriterGate()
    assert gate.enter(0)
    order = []

    def writer(name):
        assert gate.enter(10)
        order.append(name)
        gate.leave()

    threads = []
    for name in ("first", "second", "third"):
        threads.append(threading.Thread(target=writer, args=(name,)))
        threads[-1].start()
        time.sleep(0.05)  # in this order at the gate
    assert not gate.enter(0.05)  # held: a timed-out wait goes on to SQLite's own
    gate.leave()
    for t in threads:
        t.join(10)
    assert order == ["first", "second", "third"]
    assert gate.enter(0)
    gate.leave()

    url = f"sqlite:///{tmp_path / 'g.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    factory = db.session_factory(engine)
    with db.unit_of_work(factory) as s:
        s.add(County(code="g1", name="甲"))
    try:
        with db.unit_of_work(factory) as s:
            s.add(County(code="g2", name="乙"))
            s.flush()
            raise ValueError("refused")
    except ValueError:
        pass
    same_file = db._gate(url)
    assert same_file is not None and same_file.enter(0)  # free after both
    same_file.leave()


def test_the_bridges_writes_go_first_at_sqlites_write_lock(tmp_path):
    """db.UrgentWriters: while an urgent writer (the AMI bridge's batches)
    waits for the write lock, the writers of other processes hold back
    instead of taking it before it; once it has the lock they go on."""
    path = tmp_path / "u.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.create_schema(engine)
    urgent = db.session_factory(engine, urgent=True)
    outside = sqlite3.connect(path, isolation_level=None)
    outside.execute("BEGIN IMMEDIATE")  # another program holds the lock
    began = []

    def bridge():
        with db.unit_of_work(urgent) as s:
            s.add(County(code="bridge", name="甲"))

    def web():  # another process's writer: its own descriptor and connection
        db.UrgentWriters(path.with_name("u.db-urgent")).hold_back(30)
        began.append("web")
        web = sqlite3.connect(path, isolation_level=None, timeout=30)
        web.execute("BEGIN IMMEDIATE")
        web.execute("INSERT INTO counties (code, name) VALUES ('web', '乙')")
        web.execute("COMMIT")
        web.close()

    waits = threading.Thread(target=bridge)
    waits.start()
    while not flock_taken(path.with_name("u.db-urgent")):
        time.sleep(0.01)
    held_back = threading.Thread(target=web)
    held_back.start()
    time.sleep(0.2)
    assert began == []  # the web's writer holds back while the bridge waits
    outside.rollback()
    for t in (waits, held_back):
        t.join(30)
    with db.session_factory(engine)() as s:
        assert list(s.scalars(select(County.code).order_by(County.id))) == ["bridge", "web"]
    outside.close()
    engine.dispose()


def flock_taken(path) -> bool:
    """True if some descriptor holds a flock on `path`."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
