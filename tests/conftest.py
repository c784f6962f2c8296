"""Shared fixtures. Real parts only: PostgreSQL, Asterisk and SIPp are
started for real (see simkit/harness.py); nothing is mocked.

Markers, so that `-m "not pbx"` is a quick run: a test that uses a fixture
starting Asterisk (pbx_harness, or one built on PbxHarness/RunningDemo) gets
the `pbx` marker, one that uses pg_database the `postgres` marker, at
collection. A test that still starts Asterisk without the marker fails: a
watcher sees every Asterisk this run starts (they inherit RUN_TOKEN)."""

import functools
import inspect
import os
import threading
import time
import uuid

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from khhf import db
from simkit.browser import CHROMIUM, CHROMIUM_ARGS, csp_problems, serve
from simkit.web import make_app

# property-based tests (hypothesis): no example database left in the tree
hypothesis_settings.register_profile("khhf", database=None, deadline=None)
hypothesis_settings.load_profile("khhf")


# -- markers -----------------------------------------------------------------------------
PBX_FIXTURES = {"pbx_harness"}
POSTGRES_FIXTURES = {"pg_database", "pg_admin_url"}
# a fixture or test whose own code has one of these starts Asterisk
PBX_STARTERS = ("PbxHarness(", "RunningDemo(")
RUN_TOKEN = "KHHF_TEST_RUN"


@functools.cache
def _starts_pbx(func) -> bool:
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return False
    return any(starter in source for starter in PBX_STARTERS)


def pytest_collection_modifyitems(config, items):
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        names = set(info.names_closure) if info else set()
        defs = [d for ds in (info.name2fixturedefs.values() if info else ()) for d in ds]
        if names & PBX_FIXTURES or any(_starts_pbx(d.func) for d in defs) or \
                _starts_pbx(getattr(item, "function", None)):
            item.add_marker(pytest.mark.pbx)
        if names & POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)


class AsteriskWatcher(threading.Thread):
    """Notes each Asterisk process this test run starts (its environment
    carries RUN_TOKEN) and the test that was running when it appeared."""

    def __init__(self, token: str):
        super().__init__(name="asterisk-watcher", daemon=True)
        self.needle = f"{RUN_TOKEN}={token}".encode()
        self.current: str | None = None
        self.seen: dict[int, str | None] = {}
        self.stop = threading.Event()

    def scan(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in self.seen:
                continue
            try:
                with open(f"/proc/{entry.name}/comm", "rb") as fh:
                    if fh.read().strip() != b"asterisk":
                        continue
                with open(f"/proc/{entry.name}/environ", "rb") as fh:
                    ours = self.needle in fh.read().split(b"\0")
            except OSError:
                continue
            if ours:
                self.seen[int(entry.name)] = self.current

    def run(self) -> None:
        while not self.stop.wait(0.5):   # Asterisk takes longer to boot
            self.scan()

    def started_during(self, nodeid: str) -> list[int]:
        self.scan()
        return [pid for pid, test in self.seen.items() if test == nodeid]


def pytest_configure(config):
    token = uuid.uuid4().hex
    os.environ[RUN_TOKEN] = token   # inherited by every process the tests start
    config._khhf_asterisk_watcher = watcher = AsteriskWatcher(token)
    watcher.start()


def pytest_unconfigure(config):
    watcher = getattr(config, "_khhf_asterisk_watcher", None)
    if watcher is not None:
        watcher.stop.set()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.config._khhf_asterisk_watcher.current = item.nodeid


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    watcher = item.config._khhf_asterisk_watcher
    started = watcher.started_during(item.nodeid)
    watcher.current = None
    if started and item.get_closest_marker("pbx") is None:
        pytest.fail(f"{item.nodeid} started Asterisk (pid {started}) without the pbx marker: "
                    f"mark it @pytest.mark.pbx, so that -m 'not pbx' stays a quick run",
                    pytrace=False)


@pytest.fixture(scope="session")
def pg_admin_url():
    url = os.environ.get("KHHF_TEST_PG_URL")
    if not url:
        pytest.fail("KHHF_TEST_PG_URL is not set: scripts/test starts PostgreSQL and sets it; "
                    "set it to a database URL whose user may CREATE DATABASE.")
    return url


@pytest.fixture
def pg_database(pg_admin_url):
    """A factory of fresh PostgreSQL databases, dropped after the test."""
    admin = db.make_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    created, engines = [], []

    def make(label="t"):
        name = f"khhf_test_{label}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        engine = db.make_engine(admin.url.set(database=name).render_as_string(hide_password=False))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()
    for name in created:
        drop_database(admin, name)
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def each_engine(request, tmp_path):
    """An empty database of each engine, in turn: a SQLite file, a fresh
    PostgreSQL database."""
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'k.db'}")
    else:
        engine = request.getfixturevalue("pg_database")("each")
    yield engine
    engine.dispose()


@pytest.fixture
def each_schema(each_engine):
    """each_engine with KHHF's schema created."""
    db.create_schema(each_engine)
    return each_engine


def drop_database(admin, name: str, tries: int = 10) -> None:
    """DROP DATABASE ... WITH (FORCE), tried again for a moment: the server's
    own autovacuum may be on it, and a role outside pg_signal_backend (a
    developer's) may not end that worker."""
    for attempt in range(tries):
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except sa_exc.DBAPIError:
            if attempt == tries - 1:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="session")
def pbx_harness(tmp_path_factory):
    """One real Asterisk for the test session, on free loopback ports."""
    from simkit.harness import SIPP, PbxHarness
    if SIPP is None:
        pytest.fail("sipp is not installed: scripts/install installs Debian's sip-tester.")
    with PbxHarness(tmp_path_factory.mktemp("pbx")) as harness:
        yield harness


@pytest.fixture(autouse=True)
def _trunk_freed_after_each_test(request):
    """A test that failed half-way leaves its carrier SIPp running on the
    session PBX's one trunk address, and every later test's carrier then
    fails to bind it ("Address already in use"): stop what a test started
    there once it ends."""
    if "pbx_harness" not in request.fixturenames:
        yield
        return
    harness = request.getfixturevalue("pbx_harness")
    before = len(harness.parties)
    yield
    trunk = (harness.settings.trunk_host, harness.settings.trunk_port)
    for party in harness.parties[before:]:
        if (party.local_ip, party.port) == trunk:
            party.stop()


# -- the web UI in a real browser (Debian's chromium; simkit/browser.py) ----------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app, seeded = make_app(tmp_path_factory.mktemp("browser"))
    with serve(app) as base:
        yield base, seeded


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A page; the test fails if any page it opened broke the CSP."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    problems = csp_problems(context)
    page = context.new_page()
    yield page
    context.close()
    assert not problems, problems
