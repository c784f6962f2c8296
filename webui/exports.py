"""Exports as downloads: a file written by khhf.services.exports into a
temporary file (bounded memory however many rows), then sent from there.
The reports answer with `download`; the exports of whole lists, which
are audited, with `audited_download`."""

from __future__ import annotations

import os
import tempfile

from flask import Response, current_app
from flask_login import current_user

from khhf.models import utcnow
from khhf.services import exports
from webui.access import client_ip
from webui.db import get_db, read_session

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MIMETYPES = {"xlsx": XLSX_TYPE, "csv": "text/csv; charset=utf-8"}


def download(fmt: str, tables, filename: str, *, titles: bool = True
             ) -> tuple[Response, int]:
    """(the response that sends `tables` as `fmt`, the rows written);
    `titles`: see khhf.services.exports.write_csv."""
    handle, path = tempfile.mkstemp(suffix=f".{fmt}", prefix="khhf-export-")
    os.close(handle)
    try:
        rows = exports.write(fmt, tables, path, titles=titles)
        # unlinked at once: the open handle keeps the data until it has been sent
        stream = open(path, "rb")
    finally:
        os.unlink(path)
    size = os.fstat(stream.fileno()).st_size

    def chunks():
        with stream:
            while chunk := stream.read(256 * 1024):
                yield chunk
    return Response(chunks(), mimetype=MIMETYPES[fmt], headers={
        "Content-Disposition": f"attachment; filename={filename}",
        "Content-Length": str(size)}), rows


def audited_download(fmt: str, build) -> Response:
    """The tables `build(session)` returns with what they are (a dict for
    khhf.services.exports.record: kind, county or campaign), sent as `fmt`
    with the headers on the first line, and the operation log's entry for
    it. A POST view's answer, since it writes that entry.

    Read through a reading session: a writing request's own session holds
    SQLite's write lock from its first query (the log-in's), and an export
    of many rows must not keep the AMI bridge and the AGI service waiting.
    """
    db = get_db()
    user = current_user._get_current_object()
    db.expunge(user)  # stays loaded for the access rules and the audit entry
    db.rollback()     # releases the write lock until the entry is written
    with read_session() as reading:
        tables, what = build(reading)
        response, rows = download(fmt, tables, _filename(fmt, **what), titles=False)
    exports.record(db, user, client_ip(), fmt=fmt, rows=rows, **what)
    db.commit()
    return response


def _filename(fmt: str, kind: str, county=None, campaign=None) -> str:
    settings = current_app.extensions["khhf_settings"]
    today = settings.local(utcnow()).date()
    if campaign is not None:
        return f"campaign-{campaign.id}-{kind}-{today:%Y%m%d}.{fmt}"
    return f"{kind}-{county.code if county is not None else 'all'}-{today:%Y%m%d}.{fmt}"

