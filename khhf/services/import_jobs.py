"""Imports run in the background: a thread in the web process per job,
its row in import_jobs, its files under <home>/imports/<job id>/.

    job = import_jobs.create(session, user, "customers", "客户.xlsx", stream, root, options)
    session.commit()
    import_jobs.start(session_factory, job.id, root)              # check (preview)
    import_jobs.start(session_factory, job.id, root, commit=True)  # then commit

The page polls `progress(job_id)` (kept in memory: the committing
transaction holds SQLite's write lock, so progress cannot be written to the
database meanwhile) and reads the report (counts and rejected rows) from
report.json when the job is done. A job whose thread is gone while its row
says it runs was interrupted by a restart: `status_of` reports it failed.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from khhf import db
from khhf.models import ImportJob, User, utcnow
from khhf.services import N_, imports

log = logging.getLogger(__name__)

SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods", ".csv", ".txt")
_lock = threading.Lock()
_running: dict[int, threading.Thread] = {}
_progress: dict[int, tuple[int, int]] = {}
# the status each thread wrote last, committed before the thread ended: a
# page that read the row just before that commit knows the job is done
_final: dict[int, str] = {}


def job_dir(root: Path, job_id: int) -> Path:
    return Path(root) / str(job_id)


def source_path(root: Path, job: ImportJob) -> Path:
    suffix = Path(job.filename).suffix.lower()
    return job_dir(root, job.id) / f"source{suffix if suffix in SUFFIXES else '.bin'}"


def create(session: Session, by: User | None, kind: str, filename: str, stream, root: Path,
           options: imports.Options, county_id: int | None = None) -> ImportJob:
    """A job for the uploaded `stream`: the row (flushed) and the file saved."""
    if kind not in imports.KINDS:
        raise ValueError(f"kind must be one of {imports.KINDS}")
    job = ImportJob(kind=kind, filename=(Path(filename or "upload").name or "upload")[:255],
                    county_id=county_id, campaign_id=options.campaign_id,
                    options=json.dumps(_options_json(options), ensure_ascii=False),
                    status="checking", created_by=by.id if by else None)
    session.add(job)
    session.flush()
    path = source_path(root, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)
    return job


def _options_json(options: imports.Options) -> dict:
    return {"county_code": options.county_code, "campaign_id": options.campaign_id,
            "mapping": options.mapping, "only_county_id": options.only_county_id}


def options_of(job: ImportJob) -> imports.Options:
    return imports.Options(**json.loads(job.options or "{}"))


def set_mapping(job: ImportJob, mapping: dict[str, str]) -> None:
    """The user's column mapping; the job is to be checked again."""
    options = options_of(job)
    options.mapping = {h: f for h, f in mapping.items() if h}
    job.options = json.dumps(_options_json(options), ensure_ascii=False)
    job.status, job.error = "checking", ""


def start(factory: sessionmaker, job_id: int, root: Path, *, commit: bool = False,
          wait: bool = False) -> threading.Thread:
    """Check (or commit) the job in a thread; `wait` joins it (CLI, tests).
    The caller sets the job's status first (`mark`), so a page rendered
    before the thread's first statement already shows it running."""
    with _lock:
        if job_id in _running and _running[job_id].is_alive():
            raise RuntimeError(f"import job {job_id} is already running")
        _final.pop(job_id, None)
        thread = threading.Thread(target=_work, args=(factory, job_id, Path(root), commit),
                                  name=f"import-{job_id}", daemon=True)
        _running[job_id] = thread
        _progress[job_id] = (0, 0)
        thread.start()  # inside the lock: is_running() is never false in between
    if wait:
        thread.join()
    return thread


def mark(job: ImportJob, *, commit: bool) -> None:
    """The job is about to be checked (or committed): shown as running."""
    job.status, job.error = ("committing" if commit else "checking"), ""


def is_running(job_id: int) -> bool:
    thread = _running.get(job_id)
    return thread is not None and thread.is_alive()


def progress(job_id: int) -> tuple[int, int]:
    """(rows done, rows estimated) of a running job."""
    return _progress.get(job_id, (0, 0))


def status_of(job: ImportJob) -> str:
    """The job's status, 'failed' for one that a restart interrupted."""
    if job.status in ("checking", "committing") and not is_running(job.id):
        return _final.get(job.id, "failed")
    return job.status


def report_of(root: Path, job_id: int) -> imports.Report | None:
    path = job_dir(root, job_id) / "report.json"
    if not path.exists():
        return None
    return imports.Report.from_json(json.loads(path.read_text(encoding="utf-8")))


def _work(factory: sessionmaker, job_id: int, root: Path, commit: bool) -> None:
    try:
        with factory() as session:
            db.begin_write(session)  # SQLite: a read cannot turn into a write later
            job = session.get(ImportJob, job_id)
            options, kind, filename = options_of(job), job.kind, job.filename
            path, by_id = source_path(root, job), job.created_by
            job.status = "committing" if commit else "checking"
            session.commit()
        with factory() as session:
            if commit:
                db.begin_write(session)
            by = session.get(User, by_id) if by_id else None

            def note(done, total):
                _progress[job_id] = (done, total)
            try:
                report = imports.run(session, kind, path, options, commit=commit, by=by,
                                     filename=filename, progress=note)
            except imports.FileError as exc:
                session.rollback()
                if exc.report is not None:
                    _save_report(root, job_id, exc.report)  # the headers, to map
                _finish(factory, job_id, "failed", error=json.dumps(
                    [exc.message, exc.params], ensure_ascii=False))
                return
            _save_report(root, job_id, report)
            if commit:
                # the job's status goes with the rows, in the same transaction
                _set(session.get(ImportJob, job_id), "committed", report)
                session.commit()
                _final[job_id] = "committed"
                return
        _finish(factory, job_id, "checked", report=report)
    except Exception as exc:  # the page must learn that the job died, and why
        log.exception("import job %s failed", job_id)
        _finish(factory, job_id, "failed", error=json.dumps(
            [N_("The import failed and nothing was written: %(reason)s"),
             {"reason": str(exc)[:300]}], ensure_ascii=False))
    finally:
        _progress.pop(job_id, None)


def _save_report(root: Path, job_id: int, report: imports.Report) -> None:
    path = job_dir(root, job_id) / "report.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report.to_json(), ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def _set(job: ImportJob, status: str, report: imports.Report | None = None,
         error: str = "") -> None:
    job.status, job.error, job.finished_at = status, error, utcnow()
    if report is not None:
        job.total_rows, job.accepted_rows = report.rows, report.accepted
        job.rejected_rows = report.rejected


def _finish(factory, job_id, status, report=None, error="") -> None:
    with factory() as session:
        db.begin_write(session)
        _set(session.get(ImportJob, job_id), status, report, error)
        session.commit()
    _final[job_id] = status


def error_of(job: ImportJob) -> tuple[str, dict] | None:
    """The job's error as (msgid, params), or None."""
    if status_of(job) == "failed" and not job.error:
        return N_("The import was interrupted (the server restarted); start it again."), {}
    if not job.error:
        return None
    message, params = json.loads(job.error)
    return message, params
