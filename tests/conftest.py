"""Shared fixtures. Real parts only: PostgreSQL, Asterisk and SIPp are
started for real (see tests/harness.py); nothing is mocked."""

import os
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
