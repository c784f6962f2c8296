"""One database session per request, closed (and so rolled back unless a
view committed) when the request ends; see create_app.

A request that may write (POST, PUT, PATCH, DELETE) gets a session whose
transactions begin as writers (SQLite: BEGIN IMMEDIATE). On SQLite a
transaction that has read cannot start writing once another connection
(the AMI bridge, the AGI service, another worker) has committed: it fails
at once with "database is locked", whatever the busy timeout. Declared up
front, it waits for its turn instead. GET and HEAD requests only read
(tests/test_web_routes.py checks that they never write).
"""

from flask import current_app, g, request
from sqlalchemy.orm import Session

WRITING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def read_session() -> Session:
    """A separate session that only reads, for the slow part of a writing
    request that need not hold the write lock (checking a password); use it
    as a context manager."""
    return current_app.extensions["khhf_sessions"]()


def get_db() -> Session:
    """This request's session; views commit it after a successful write."""
    if "db" not in g:
        writer = request.method in WRITING_METHODS
        factory = current_app.extensions["khhf_write_sessions" if writer else "khhf_sessions"]
        g.db = factory()
    return g.db
