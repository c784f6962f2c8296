"""Versioned migrations (khhf.migrations), on real SQLite and PostgreSQL.

The upgrade matrix: a database made as main made it before migrations
existed (the baseline DDL, no alembic_version), filled with customers,
tasks in every status, calls with events and recordings, results by web,
SMS and keypad, SMS in and out of every kind and reply outcome, audit
entries and the reports' sums, is upgraded to head: every row of every
table is still there with the same values, the SMS kinds are split as
revision 0002 says, the report figures are equal, and the database matches
the models. Downgrading to the baseline gives back exactly the rows it had.
A fresh install is at head; `khhf db check` is red and green as it should;
a database that is not the baseline is refused, unchanged.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, Table, func, inspect, select, text

from khhf import audit, db, migrations
from khhf.models import (
    Base,
    Call,
    CallEvent,
    Manager,
    OutcomeRule,
    ResultCode,
    SmsKind,
    SmsMessage,
    SmsReplyOutcome,
    TaskStatus,
    TaskType,
    routing_trigger_names,
)
from khhf.services import campaigns, reports, tasks
from simkit import factories, report_data

ZONE = "Asia/Shanghai"
START = dt.datetime(2026, 10, 31, 16, 0)
DAYS = 6
NOW = START + dt.timedelta(days=DAYS + 2)
# (direction, status, kind as the baseline stored it)
# tables later revisions add: empty after an upgrade of rows that predate them
NEW_TABLES = {"outcome_rules"}
BASELINE_SMS = ([("out", "sent", k) for k in SmsKind]
                + [("out", "queued", None), ("out", "failed", SmsKind.PROMPT)]
                + [("in", "processed", o) for o in SmsReplyOutcome]
                + [("in", "received", None)])
# columns later revisions add to tables the baseline already had (nullable,
# no data to move): present while the head models seed the baseline, then
# dropped; after the upgrade they are there and empty
@pytest.fixture
def engine(each_engine):
    return each_engine


def baseline_revision():
    """Revision 0001's module: its DDL is what main's `khhf init` ran."""
    return ScriptDirectory(str(migrations.SCRIPT_DIR)).get_revision(migrations.BASELINE).module


def make_premigration(engine) -> None:
    """A database as main made it: the baseline's tables, no alembic_version."""
    with engine.begin() as conn:
        for statement in baseline_revision().statements(engine.dialect.name):
            conn.exec_driver_sql(statement)


def seed_baseline(engine, recordings) -> None:
    """Fill a baseline database. The models are at head, so everything but
    sms_messages goes through the factories and services into a scratch
    database at head, whose rows are copied, the baseline's columns only,
    into `engine`; the SMS rows are written as the baseline stored them,
    `kind` holding what a message is or what a reply did."""
    scratch = db.make_engine(f"sqlite:///{recordings.parent / 'head.db'}")
    db.create_schema(scratch)
    factory = db.session_factory(scratch)
    with db.unit_of_work(factory) as s:
        made = report_data.generate(s, start=START, days=DAYS, tasks_per_manager=6)
        county, revisit = made["counties"][0], made["task_types"][0]
        manager = s.scalars(select(Manager).where(Manager.county_id == county.id)).first()
        manager.mobile = "13700000001"
        for n, status in enumerate(TaskStatus):
            customer = factories.customer(s, county, f"1390000{n:04d}", manager)
            made_status = TaskStatus.DIALING if status == TaskStatus.CONNECTED else status
            task = factories.task(s, customer, manager, revisit, status=made_status)
            if status == TaskStatus.CONNECTED:
                call = Call(direction="outbound", task_id=task.id, customer_id=customer.id,
                            manager_id=manager.id, county_id=county.id,
                            customer_number=customer.phone, state="connected",
                            uniqueid=f"1700000000.{n}", linkedid=f"1700000000.{n}")
                s.add(call)
                s.flush()
                tasks.follow_call(s, task, call)
                for k, event in enumerate(("Newchannel", "DialEnd", "BridgeEnter")):
                    s.add(CallEvent(dedup_key=f"ami:{call.uniqueid}:{k}", source="ami",
                                    event=event, uniqueid=call.uniqueid, linkedid=call.linkedid,
                                    call_id=call.id, event_at=START, payload="{}"))
            elif status == TaskStatus.DONE:
                factories.recorded_call(s, recordings, manager, customer, task_=task,
                                        requested_at=START + dt.timedelta(hours=n))
        assert {t for t in s.scalars(select(text("status")).select_from(text("tasks")))} \
            == set(TaskStatus)
        audit.record(s, None, "update", "sms", 1, {"changes": {"sms_kind": [None, "filed"]}},
                     object_name="137****0001")
        audit.record(s, None, "create", "county", county.id, {"fields": {"name": county.name}},
                     object_name=county.name)
        # a customer flagged before the do-not-call register existed (0004)
        factories.customer(s, county, "13911112222", manager).do_not_call = True
        reports.refresh_due(s, ZONE, now=NOW)
        call_id = s.scalar(select(func.min(Call.id)))
        manager_id = manager.id
    copy_rows(scratch, engine)
    scratch.dispose()
    with engine.begin() as conn:
        for n, (direction, status, kind) in enumerate(BASELINE_SMS, start=1):
            conn.execute(text(
                "INSERT INTO sms_messages (direction, peer_number, manager_id, body, status, "
                "kind, call_id, ref, reply_to_id, client_ref, parts) VALUES (:d, '13700000001', "
                ":m, :body, :st, :kind, :call, :ref, :reply, :cref, 1)"),
                dict(d=direction, m=manager_id, body=f"短信{n}", st=status,
                     kind=None if kind is None else str(kind),
                     call=call_id if kind == SmsKind.PROMPT and status == "sent" else None,
                     ref="1" if kind == SmsKind.PROMPT else None,
                     reply=1 if direction == "in" and n > 1 else None,
                     cref=f"r{n}" if direction == "out" else None))
        conn.execute(text("INSERT INTO sms_parts (sms_id, part_no, smpp_message_id, "
                          "receipt_status) VALUES (1, 1, 'm1', 'DELIVRD')"))


def copy_rows(source, target) -> None:
    """Every row of `source` (at head) into `target`'s tables, the columns
    `target` has; PostgreSQL's identities then continue after the rows."""
    with source.connect() as src, target.begin() as dst:
        for table in Base.metadata.sorted_tables:
            if not inspect(dst).has_table(table.name):
                continue
            kept = Table(table.name, MetaData(), autoload_with=dst)
            rows = [{c: v for c, v in row._mapping.items() if c in kept.c}
                    for row in src.execute(select(table))]
            if rows:
                dst.execute(kept.insert(), rows)
            if target.dialect.name == "postgresql" and "id" in kept.c and rows:
                dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                 f"(SELECT max(id) FROM {table.name}))"))


def dump(engine) -> dict[str, list[dict]]:
    """Every row of every KHHF table, as column -> value, in a stable order."""
    out = {}
    with engine.connect() as conn:
        for table in sorted(inspect(conn).get_table_names()):
            if table == migrations.VERSION_TABLE:
                continue
            rows = [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table}"))]
            out[table] = sorted(rows, key=lambda r: repr(sorted(r.items())))
    return out


def figures(engine) -> dict:
    """The report figures over the whole seeded period: the summary, per
    county, per day, per manager and per result code."""
    first, last = START.date(), (START + dt.timedelta(days=DAYS + 1)).date()
    flt = reports.Filter(first, last)
    with db.session_factory(engine)() as s:
        counties = s.scalars(select(text("id")).select_from(text("counties"))).all()
        return {
            "summary": {k: reports.summary(s, flt).value(k) for k in reports.FIGURE_KEYS},
            "counties": [{k: reports.summary(s, reports.Filter(first, last, county_id=c))
                          .value(k) for k in reports.FIGURE_KEYS} for c in sorted(counties)],
            "trend": [(day, f.value("calls_out"), f.value("results_filed"))
                      for day, f in reports.trend(s, flt)],
            "ranking": [(m, f.value("feedback_rate")) for m, f in reports.ranking(s, flt)],
            "codes": sorted(reports.results_by_code(s, flt)),
            "check": reports.check(s, ZONE, first, last),
        }


# revision 0004's new columns, and their values on existing rows
ADDED_0004 = {"customers": {"consent": False, "consent_at": None, "consent_source": ""},
              "result_codes": {"stops_calls": False},
              "task_types": {"requires_consent": False}}


def assert_0004(before: dict, after: dict) -> None:
    """Revision 0004: the old columns kept, the new ones at their defaults,
    each type's kind read from its code, flagged customers on the register."""
    for table, added in ADDED_0004.items():
        assert [{k: v for k, v in r.items() if k not in added and k != "kind"}
                for r in after[table]] == before[table], table
        assert all(bool(r[k]) == v if isinstance(v, bool) else r[k] == v
                   for r in after[table] for k, v in added.items()), table
    kinds = {r["code"]: r["kind"] for r in after["task_types"]}
    assert kinds["revisit"] == "revisit" and set(kinds.values()) <= {
        "revisit", "marketing", "survey", "other"}
    flagged = {r["phone"] for r in before["customers"] if r["do_not_call"]}
    assert flagged and {r["number"] for r in after["dnc_entries"]} == flagged
    assert {r["channel"] for r in after["dnc_entries"]} == {"manual"}


def split(before: list[dict]) -> list[dict]:
    """sms_messages as revision 0002 makes them from the baseline's rows."""
    out = []
    for row in before:
        row = dict(row)
        inbound = row["direction"] == "in"
        row["reply_outcome"] = row["kind"] if inbound else None
        row["kind"] = None if inbound else row["kind"]
        out.append(row)
    return sorted(out, key=lambda r: repr(sorted(r.items())))


def judged(before: list[dict]) -> list[dict]:
    """calls as revision 0007 makes them: a recording the bridge finished is
    complete when its length is the talk time within a second, else partial."""
    out = []
    for row in before:
        row = dict(row, recording_status=None, sip_code=None)  # 0008 adds sip_code empty
        if row["recording_sha256"] is not None:
            complete = row["recording_seconds"] >= (row["talk_seconds"] or 0) - 1
            row["recording_status"] = "complete" if complete else "partial"
        out.append(row)
    return sorted(out, key=lambda r: repr(sorted(r.items())))


def test_the_upgrade_matrix_keeps_every_row_and_report(engine, tmp_path):
    make_premigration(engine)
    seed_baseline(engine, tmp_path / "recordings")
    before, report_before = dump(engine), figures(engine)
    assert report_before["summary"]["calls_out"] > 0 and report_before["check"] == []
    assert before["call_events"] and before["audit_log"] and before["sms_parts"]
    assert any(c["recording_path"] for c in before["calls"])
    assert {f["channel"] for f in before["feedback"]} == {"web", "sms", "keypad"}
    assert migrations.state(engine) == "unversioned"

    assert migrations.upgrade(engine) == (None, migrations.head())
    assert migrations.current(engine) == migrations.head()
    assert migrations.check(engine) is None
    after = dump(engine)
    # tables a later revision adds start empty (0006: the API's), but for
    # the do-not-call register, which 0004 fills from the flagged customers
    added = set(after) - set(before) - {"dnc_entries", "routing_generation"}
    assert {t: len(after[t]) for t in added} == dict.fromkeys(added, 0)
    # 0010: the hotline's one counter row, and the triggers that raise it
    assert after["routing_generation"] == [{"id": 1, "generation": 0}]
    assert routing_triggers_in(engine) == routing_trigger_names(engine.dialect.name)
    assert {t: len(after[t]) for t in before} == {t: len(r) for t, r in before.items()}
    for table in before:
        if table not in ("sms_messages", "calls", *ADDED_0004):
            assert after[table] == before[table], table
    assert after["sms_messages"] == split(before["sms_messages"])
    assert after["calls"] == judged(before["calls"])
    assert {c["recording_status"] for c in after["calls"]} >= {"complete", None}
    assert_0004(before, after)
    assert figures(engine) == report_before
    # and the code reads the split as the baseline's rows meant it
    with db.session_factory(engine)() as s:
        kinds = {(m.direction, m.kind, m.reply_outcome) for m in s.scalars(select(SmsMessage))}
    assert {(d, k, o) for d, k, o in kinds if d == "out"} == \
        {("out", k, None) for k in SmsKind} | {("out", None, None)}
    assert {(d, k, o) for d, k, o in kinds if d == "in"} == \
        {("in", None, o) for o in SmsReplyOutcome} | {("in", None, None)}

    # downgrade to the baseline: exactly the rows it had, then up again
    migrations.downgrade(engine, migrations.BASELINE)
    assert migrations.current(engine) == migrations.BASELINE
    assert dump(engine) == before
    assert migrations.upgrade(engine) == (migrations.BASELINE, migrations.head())
    assert dump(engine) == after and migrations.check(engine) is None


def routing_triggers_in(engine) -> set[str]:
    sql = ("SELECT name FROM sqlite_master WHERE type = 'trigger'" if engine.dialect.name ==
           "sqlite" else "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
    with engine.connect() as conn:
        return set(conn.scalars(text(sql)))


def test_0005_gives_the_standard_types_their_automatic_outcomes(engine):
    """A standard type still with its standard codes gets the codes 7-9 and
    the rules `khhf init` gives a new one; a type a site changed keeps its own."""
    make_premigration(engine)
    with engine.begin() as conn:
        for type_id, code, label_3 in ((1, "revisit", "无人接听"), (2, "survey", "没人接")):
            conn.execute(text("INSERT INTO task_types (id, code, name, max_attempts) "
                              "VALUES (:i, :c, :c, 3)"), dict(i=type_id, c=code))
            for value, label, final in (("1", "成功", True), ("2", "客户拒绝", True),
                                        ("3", label_3, False), ("4", "关机/停机", False),
                                        ("5", "空号", True), ("6", "预约再拨", False)):
                conn.execute(text("INSERT INTO result_codes (task_type_id, code, label, "
                                  "is_success, is_final) VALUES (:t, :c, :l, :s, :f)"),
                             dict(t=type_id, c=value, l=label, s=False, f=final))
    migrations.upgrade(engine)
    with db.session_factory(engine)() as s:
        revisit, survey = (s.get(TaskType, 1), s.get(TaskType, 2))
        assert campaigns.describe_rules(revisit.outcome_rules) == campaigns.describe_rules(
            [OutcomeRule(outcome=o, result_code=ResultCode(code=c), retry_minutes=m,
                         max_retries=n, close_code=ResultCode(code=z) if z else None)
             for o, c, m, n, z in campaigns.STANDARD_RULES])
        assert {c.code for c in revisit.result_codes} == set("123456789")
        assert survey.outcome_rules == [] and len(survey.result_codes) == 6
    migrations.downgrade(engine, migrations.BASELINE)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM result_codes")) == 15


def test_a_fresh_install_is_at_head_and_matches_the_models(engine):
    assert migrations.state(engine) == "empty"
    assert "run `khhf init`" in migrations.problem(engine)
    db.create_schema(engine)
    assert migrations.state(engine) == "head" and migrations.check(engine) is None
    assert migrations.upgrade(engine) == (migrations.head(), migrations.head())


def test_the_new_checks_hold_after_the_upgrade(engine):
    """Revision 0002's CHECKs: each vocabulary in its column, each column for
    its direction."""
    db.create_schema(engine)
    bad = [("out", "filed", None), ("in", None, "prompt"), ("out", None, "filed"),
           ("in", "prompt", None)]
    for direction, kind, outcome in bad:
        with pytest.raises(Exception, match="(?i)check"):
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO sms_messages (direction, peer_number, body, kind, "
                                  "reply_outcome) VALUES (:d, '1', 'x', :k, :o)"),
                             dict(d=direction, k=kind, o=outcome))


def test_a_database_that_is_not_the_baseline_is_refused_unchanged(engine):
    make_premigration(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE report_type_results")
        conn.exec_driver_sql("ALTER TABLE customers ADD COLUMN wechat VARCHAR(32)")
    with pytest.raises(migrations.SchemaError) as refused:
        migrations.upgrade(engine)
    message = str(refused.value)
    assert "missing report_type_results" in message and "unexpected customers.wechat" in message
    assert migrations.state(engine) == "unversioned"
    assert "sms_messages" in inspect(engine).get_table_names()
    assert "reply_outcome" not in {c["name"] for c in inspect(engine).get_columns("sms_messages")}


def khhf(home, *args, database_url=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KHHF_")}
    env.update(KHHF_CONFIG=str(home / "khhf.conf"), KHHF_HOME=str(home))
    if database_url:
        env["KHHF_DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "khhfcli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_khhf_db_check_red_and_green_and_the_adoption(engine, tmp_path):
    """From the command line: a database made before migrations is adopted
    by `khhf db upgrade` (stamped 0001, then upgraded) and its rows kept;
    `khhf db check` is green only at head and matching the models."""
    url = engine.url.render_as_string(hide_password=False)
    make_premigration(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO counties (code, name) VALUES ('c1', '一县')")
    red = khhf(tmp_path, "db", "check", database_url=url)
    assert red.returncode == 1
    assert one_line(red).endswith("is made before versioned migrations, this version needs "
                                  f"revision {migrations.head()}: run `khhf db upgrade`.")
    assert "revision none (made before" in khhf(tmp_path, "db", "current",
                                                 database_url=url).stdout
    # `khhf init` never makes an existing database again: it says what to do
    init = khhf(tmp_path, "init", "--no-admin", database_url=url)
    assert init.returncode == 1 and one_line(init).endswith("run `khhf db upgrade`.")

    up = khhf(tmp_path, "db", "upgrade", database_url=url)
    assert up.returncode == 0, up.stderr
    assert f"stamped as the baseline {migrations.BASELINE}" in up.stdout
    assert f"upgraded from revision {migrations.BASELINE} to {migrations.head()}" in up.stdout
    green = khhf(tmp_path, "db", "check", database_url=url)
    assert green.returncode == 0, green.stderr
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT name FROM counties").scalar() == "一县"
    again = khhf(tmp_path, "db", "upgrade", database_url=url)
    assert "already at the newest revision" in again.stdout

    # changed by hand: at head, but not the models' shape
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_calls_linkedid")
    red = khhf(tmp_path, "db", "check", database_url=url)
    assert red.returncode == 1
    assert "differs from the models in 1 place(s), first: missing index calls.ix_calls_linkedid" \
        in one_line(red)


def test_khhf_db_schema_is_the_checked_in_schema_sql(tmp_path):
    """schema.sql is documentation generated from the models: regenerate it
    with `khhf db schema > schema.sql` after changing a model."""
    printed = khhf(tmp_path, "db", "schema")
    assert printed.returncode == 0, printed.stderr
    checked_in = (migrations.SCRIPT_DIR.parent.parent / "schema.sql").read_text(encoding="utf-8")
    assert printed.stdout == checked_in, "schema.sql is stale: run `khhf db schema > schema.sql`"
