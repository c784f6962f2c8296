"""One database session per request, closed (and so rolled back unless a
view committed) when the request ends; see create_app."""

from flask import current_app, g
from sqlalchemy.orm import Session


def get_db() -> Session:
    """This request's session; views commit it after a successful write."""
    if "db" not in g:
        g.db = current_app.extensions["khhf_sessions"]()
    return g.db
