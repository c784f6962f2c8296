"""Imports of customers, managers and tasks, from files as users save them
(khhf.services.imports), the background job (khhf.services.import_jobs)
and `khhf import` (khhfcli.imports): on SQLite and PostgreSQL."""

import csv
import io
import threading
import zipfile

import openpyxl
import psycopg
import pytest
from sqlalchemy import func, select, text

from khhf import config, db
from khhf.models import AuditLog, Customer, CustomerAssignment, ImportJob, Manager, Task, User
from khhf.services import accounts, hotline, import_jobs, imports
from khhfcli import main as cli
from simkit import factories


def _seed(factory):
    with factory() as s:
        anji = factories.county(s, "anji", "安吉县", unified="13900000000")
        other = factories.county(s, "deqing", "德清县")
        factories.manager(s, anji, "m1", employee_no="A001", desk="8001")
        factories.manager(s, anji, "m2", employee_no="A002", desk="8002", on_duty=True)
        factories.manager(s, other, "m9", employee_no="D009")
        factories.customer(s, anji, "13700000000", name="老客户")
        factories.user(s, "admin", "admin")
        s.commit()


@pytest.fixture
def factory(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'i.db'}")
    db.create_schema(engine)
    factory = db.session_factory(engine)
    _seed(factory)
    yield factory
    engine.dispose()


@pytest.fixture
def pg_factory(pg_database):
    engine = pg_database("imports")
    db.create_schema(engine)
    factory = db.session_factory(engine)
    _seed(factory)
    return factory


def xlsx(path, rows, merge=()):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    for cells in merge:
        sheet.merge_cells(cells)
    workbook.save(path)
    return path


def count(factory, model, *where):
    with factory() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def reasons(report):
    return {r.row: [(col, value, message % params if params else message)
                    for col, value, message, params in r.problems] for r in report.rejects}


def commit_run(factory, kind, path, options=None, **kw):
    with factory() as s:
        db.begin_write(s)
        report = imports.run(s, kind, path, options, commit=True, **kw)
        s.commit()
        return report


# -- reading files as users save them ------------------------------------------

def test_gb18030_csv_with_title_row_floats_and_full_width_digits(tmp_path, factory):
    path = tmp_path / "客户.csv"
    path.write_bytes(("2026年11月 客户回访名单,,\n"
                      " 客户姓名 ,联系电话,客户经理工号\n"
                      "张三,1.3800138001E10,A001\n"
                      "李四,１３８ ００１３-８００２,\n"
                      ",,\n"
                      "王五,138-0013-8003,a002\n").encode("gb18030"))
    report = commit_run(factory, "customers", path, imports.Options(county_code="anji"))
    assert (report.header_row, report.rows, report.empty_rows) == (2, 3, 1)
    assert report.accepted == 3 and not report.rejects
    with factory() as s:
        rows = {c.phone: (c.name, c.manager.employee_no if c.manager else None)
                for c in s.scalars(select(Customer).where(Customer.name != "老客户"))}
    assert rows == {"13800138001": ("张三", "A001"), "13800138002": ("李四", None),
                    "13800138003": ("王五", "A002")}


def test_utf8_bom_csv_semicolons_and_header_variants(tmp_path, factory):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeff姓名;手机;县区;备注\n赵六;13800138004;安吉县;老人\n".encode("utf-8"))
    report = imports.check(factory(), "customers", path)
    assert report.columns == {"name": 0, "phone": 1, "county": 2, "note": 3}
    assert report.accepted == 1 and not report.rejects


def test_xlsx_float_numbers_merged_and_empty_rows(tmp_path, factory):
    path = xlsx(tmp_path / "c.xlsx", [
        ["安吉县客户名单"],
        ["客户姓名", "手机号码", "县区", "客户经理工号"],
        ["甲", 13800138011.0, "anji", "A001"],
        ["乙", 13800138012, None, "A001"],      # county merged with the row above
        [],
        [None, None, None, None],
        ["丙", "13800138013", "安吉县", None],
    ], merge=["A1:D1", "C3:C4"])
    report = commit_run(factory, "customers", path)
    assert report.header_row == 2 and report.empty_rows == 2
    assert report.accepted == 3, reasons(report)
    with factory() as s:
        assert s.scalar(select(Customer.county_id).where(Customer.phone == "13800138012")) == \
            s.scalar(select(Customer.county_id).where(Customer.phone == "13700000000"))


@pytest.mark.parametrize("content, expected", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200), "not a spreadsheet"),
    # pictures and PDFs, even cut short (the first bytes of a PNG alone read as
    # GB18030 text, and were refused as a CSV with "no header row")
    (b"\x89PNG", "not a spreadsheet"),
    (b"\xff\xd8\xff\xe0 JFIF", "not a spreadsheet"),
    (b"GIF89a,,", "not a spreadsheet"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "not a spreadsheet"),
    (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "not a spreadsheet"),
    ("姓名,手机\n".encode("utf-16"), "not a spreadsheet"),
    (b"\xff\xfe\xfd garbage \x81\x30 \xff\xff,\n", "neither UTF-8 nor GB18030"),
    (b"zip", "ZIP archive"),
    ("姓名,手机号码\n".encode(), "no rows"),
])
def test_a_file_that_cannot_be_read_is_refused_with_a_reason(tmp_path, factory, content,
                                                              expected):
    path = tmp_path / "bad.xlsx"
    if content == b"zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("hello.txt", "hi")
    else:
        path.write_bytes(content)
    with pytest.raises(imports.FileError) as caught:
        imports.check(factory(), "customers", path, imports.Options(county_code="anji"))
    assert expected in str(caught.value)


def test_an_unrecognised_column_is_refused_until_mapped(tmp_path, factory):
    path = tmp_path / "m.csv"
    path.write_text("姓名,用户号码xx\n甲,13800138021\n", encoding="utf-8")
    options = imports.Options(county_code="anji")
    with pytest.raises(imports.FileError) as caught:
        imports.check(factory(), "customers", path, options)
    assert "No column for 手机号码" in str(caught.value) and "用户号码xx" in str(caught.value)
    options.mapping = {"用户号码xx": "phone"}
    report = imports.check(factory(), "customers", path, options)
    assert report.columns["phone"] == 1 and report.accepted == 1


def test_a_missing_column_says_what_to_do_without_an_empty_list(tmp_path, factory):
    """No county anywhere: the refusal names the import page's county list and
    --county; a missing column with nothing to map names only the column."""
    path = tmp_path / "c.csv"
    path.write_text("姓名,手机号码\n甲,13800138031\n", encoding="utf-8")
    with pytest.raises(imports.FileError) as caught:
        imports.check(factory(), "customers", path, imports.Options())
    message = str(caught.value)
    assert "County list" in message and "--county" in message and "县区" in message
    assert "(—)" not in message and "map one of the columns" not in message
    path.write_text("姓名\n甲\n", encoding="utf-8")
    with pytest.raises(imports.FileError) as caught:
        imports.check(factory(), "customers", path, imports.Options(county_code="anji"))
    assert str(caught.value) == "No column for 手机号码: add a column named 手机号码."


# -- validation -------------------------------------------------------------------

def test_every_bad_row_is_reported_with_row_column_value_and_reason(tmp_path, factory):
    path = xlsx(tmp_path / "bad.xlsx", [
        ["姓名", "手机号码", "县区", "客户经理工号"],
        ["好", "13800138031", "anji", "A001"],
        ["重复", "13800138031", "anji", ""],
        ["老", "137 0000 0000", "anji", ""],
        ["无县", "13800138034", "nowhere", ""],
        ["外县经理", "13800138035", "anji", "D009"],
        ["无经理", "13800138036", "anji", "Z999"],
        ["坏号", "12345", "anji", ""],
        ["截断", "1.38001E+10", "anji", ""],
    ])
    report = imports.check(factory(), "customers", path)
    assert report.accepted == 1 and report.rejected == 7
    found = reasons(report)
    assert found[3] == [("手机号码", "13800138031", "Duplicate of row 2 in this file.")]
    assert found[4][0][2].startswith("Customer 13700000000 already exists")
    assert found[5] == [("县区", "nowhere", "Unknown county nowhere; use a county code or "
                                           "name from the counties page.")]
    assert found[6] == [("客户经理工号", "D009", "Manager D009 works in another county.")]
    assert found[7][0][:2] == ("客户经理工号", "Z999")
    assert found[8][0][:2] == ("手机号码", "12345")
    assert found[9][0][:2] == ("手机号码", "1.38001E+10")  # Excel dropped digits: refused
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 1  # a dry run


def test_rejects_download_keeps_the_columns_and_adds_the_reason(tmp_path, factory):
    path = tmp_path / "r.csv"
    path.write_text("姓名,手机号码,县区\n好,13800138041,anji\n坏,abc,anji\n", encoding="utf-8")
    report = imports.check(factory(), "customers", path)
    out = tmp_path / "rejects.xlsx"
    from khhf.i18n import translator
    imports.write_rejects(report, out, translator("zh"))
    rows = list(openpyxl.load_workbook(out).active.iter_rows(values_only=True))
    assert rows[0][:3] == ("姓名", "手机号码", "县区") and len(rows) == 2
    assert rows[1][:3] == ("坏", "abc", "anji") and rows[1][3].startswith("手机号码: ")
    assert "13812345678" in rows[1][3]


def test_templates_have_the_chinese_headers_the_import_recognises(tmp_path, factory):
    for kind in imports.KINDS:
        out = tmp_path / f"{kind}.xlsx"
        imports.write_template(kind, out)
        headers = next(openpyxl.load_workbook(out).active.iter_rows(values_only=True))
        columns, unmapped = imports.map_columns(kind, list(headers), {})
        assert set(columns) == {f.name for f in imports.FIELDS[kind]} and not unmapped


# -- committing ---------------------------------------------------------------------

def test_a_customer_naming_a_manager_is_assigned_and_the_hotline_rings_them(tmp_path,
                                                                            factory):
    path = tmp_path / "c.csv"
    path.write_text("姓名,手机号码,工号\n甲,13800138051,A002\n", encoding="utf-8")
    report = commit_run(factory, "customers", path, imports.Options(county_code="anji"),
                        by=None, filename="c.csv")
    assert report.committed and report.accepted == 1
    with factory() as s:
        customer = s.scalar(select(Customer).where(Customer.phone == "13800138051"))
        assignment = s.scalar(select(CustomerAssignment).where(
            CustomerAssignment.customer_id == customer.id))
        assert customer.manager.employee_no == "A002"
        assert (assignment.manager_id, assignment.ended_at, assignment.reason) == \
            (customer.manager_id, None, "import")
        routing = hotline.start_call(s, caller="+8613800138051", unified_number="13900000000",
                                     uniqueid="u-1")
        assert routing.manager_id == customer.manager_id and routing.desk == "8002"
        entry = s.scalar(select(AuditLog).where(AuditLog.action == "import"))
        from khhf import audit
        assert audit.load_detail(entry) == {"kind": "customers", "file": "c.csv", "rows": 1,
                                            "imported": 1, "rejected": 0}


def test_managers_are_created_through_accounts_with_random_passwords(tmp_path, factory):
    path = xlsx(tmp_path / "m.xlsx", [
        ["工号", "姓名", "县区", "座机分机号", "手机号码", "用户名"],
        ["A101", "周经理", "anji", 8101, 13700008101, ""],
        ["A102", "吴经理", "anji", "8101", "", "wujl"],          # extension twice
        ["A001", "重号", "anji", "", "", "dup"],              # employee no taken
        ["A103", "郑经理", "anji", "123", "", ""],            # bad extension
        ["A104", "", "anji", "", "", ""],                     # no name
    ])
    report = commit_run(factory, "managers", path)
    assert report.accepted == 1, reasons(report)
    found = reasons(report)
    assert found[3][0][0] == "座机分机号" and "8101" in str(found[3])
    assert found[4][0][0] == "工号" and "belongs to another manager" in found[4][0][2]
    assert found[5][0][0] == "座机分机号" and found[6][0][0] == "姓名"
    (employee_no, username, password), = report.passwords
    assert (employee_no, username) == ("A101", "a101")
    with factory() as s:
        user = accounts.log_in(s, "a101", password, "127.0.0.1")
        assert user.manager.desk_extension == "8101" and user.manager.mobile == "13700008101"


def test_tasks_are_created_by_the_state_machine_for_known_customers(tmp_path, factory):
    with factories_session(factory) as s:
        revisit = factories.task_type(s, "revisit", "回访")
        factories.task_type(s, "survey", "调查", codes=())
        anji = s.scalar(select(Customer).where(Customer.phone == "13700000000")).county
        dnc = factories.customer(s, anji, "13700000001")
        dnc.do_not_call = True
        busy = factories.customer(s, anji, "13700000002")
        factories.task(s, busy, None, revisit)
        s.commit()
    path = tmp_path / "t.csv"
    path.write_text("客户手机号码,任务类型,客户经理工号\n"
                    "13700000000,回访,A001\n"
                    "13700000000,revisit,\n"
                    "13700000001,回访,\n"
                    "13700000002,回访,\n"
                    "13799999999,回访,\n"
                    "13700000000,调查,A009\n"
                    "13700000000,营销,\n", encoding="utf-8")
    report = commit_run(factory, "tasks", path)
    assert report.accepted == 1, reasons(report)
    found = {row: problems[0][2] for row, problems in reasons(report).items()}
    assert found[3] == "Duplicate of row 2 in this file."
    assert "do-not-call" in found[4]
    assert found[5] == "The customer already has an open 回访 task."
    assert found[6].startswith("No customer has the number 13799999999")
    assert found[7].startswith("Unknown manager employee number A009")
    assert found[8].startswith("Unknown task type 营销")
    with factory() as s:
        task = s.scalar(select(Task).join(Customer).where(Customer.phone == "13700000000"))
        assert (task.status, task.manager.employee_no, task.task_type.code) == \
            ("pending", "A001", "revisit")


def factories_session(factory):
    return factory()


def test_tasks_of_a_campaign_take_its_type_and_stay_in_its_county(tmp_path, factory):
    import datetime as dt

    from khhf.models import Campaign, County
    with factory() as s:
        revisit = factories.task_type(s, "revisit", "回访")
        factories.task_type(s, "survey", "调查", codes=())
        anji = s.scalar(select(County).where(County.code == "anji"))
        deqing = s.scalar(select(County).where(County.code == "deqing"))
        factories.customer(s, deqing, "13700000009")
        campaign = Campaign(county_id=anji.id, task_type_id=revisit.id, name="十一月回访",
                            starts_on=dt.date(2026, 11, 1))
        s.add(campaign)
        s.commit()
        campaign_id = campaign.id
    path = tmp_path / "t.csv"
    path.write_text("手机号码,任务类型\n13700000000,\n13700000009,\n13700000000,调查\n",
                    encoding="utf-8")
    report = commit_run(factory, "tasks", path, imports.Options(campaign_id=campaign_id))
    found = {row: problems[0][2] for row, problems in reasons(report).items()}
    assert report.accepted == 1
    assert found == {3: "The customer belongs to another county than the campaign.",
                     4: "The campaign's task type is 回访, not 调查."}
    with factory() as s:
        task = s.scalar(select(Task))
        assert (task.campaign_id, task.task_type.code, task.manager_id) == \
            (campaign_id, "revisit", None)


def test_a_supervisor_imports_for_their_own_county_only(tmp_path, factory):
    from khhf.models import County
    with factory() as s:
        anji_id = s.scalar(select(County.id).where(County.code == "anji"))
    path = tmp_path / "c.csv"
    path.write_text("姓名,手机号码,县区\n甲,13800138071,\n乙,13800138072,deqing\n",
                    encoding="utf-8")
    report = imports.check(factory(), "customers", path,
                           imports.Options(only_county_id=anji_id))
    assert report.accepted == 1
    assert reasons(report)[3][0][2].startswith("County deqing is not yours")
    with pytest.raises(imports.FileError, match="own county only"):
        imports.check(factory(), "customers", path,
                      imports.Options(county_code="deqing", only_county_id=anji_id))


def _inject_failure(engine, phone):
    """A real database failure in the middle of the commit: a trigger
    refuses one row that comes after thousands of others were inserted."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text(f"CREATE TRIGGER boom BEFORE INSERT ON customers "
                              f"WHEN NEW.phone = '{phone}' "
                              f"BEGIN SELECT RAISE(ABORT, 'injected failure'); END"))
        else:
            conn.execute(text("CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN "
                              f"IF NEW.phone = '{phone}' THEN RAISE EXCEPTION 'injected failure'; "
                              "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"))
            conn.execute(text("CREATE TRIGGER boom BEFORE INSERT ON customers "
                              "FOR EACH ROW EXECUTE FUNCTION boom()"))


def _numbers_csv(path, n, manager="A001"):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["客户姓名", "手机号码", "客户经理工号"])
        for i in range(n):
            writer.writerow([f"客户{i}", f"1380000{i:04d}", manager])
    return path


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_a_failure_mid_commit_writes_nothing(tmp_path, request, monkeypatch, backend):
    factory = request.getfixturevalue("factory" if backend == "sqlite" else "pg_factory")
    # PostgreSQL's writer thread: batches of 1,000, so the failure comes
    # while the reading goes on, after batches that were written
    monkeypatch.setattr(imports._CustomerStream, "BATCH", 1000)
    path = _numbers_csv(tmp_path / "c.csv", 9000)
    _inject_failure(factory.kw["bind"], "13800001500")
    before = count(factory, Customer), count(factory, CustomerAssignment)
    with factory() as s:
        db.begin_write(s)
        with pytest.raises(Exception, match="injected failure"):
            imports.run(s, "customers", path, imports.Options(county_code="anji"), commit=True)
        s.rollback()
    assert (count(factory, Customer), count(factory, CustomerAssignment)) == before
    assert count(factory, AuditLog, AuditLog.action == "import") == 0


@pytest.mark.postgres
def test_import_on_postgresql(tmp_path, pg_factory):
    path = _numbers_csv(tmp_path / "c.csv", 3000)
    report = commit_run(pg_factory, "customers", path, imports.Options(county_code="anji"))
    assert report.accepted == 3000
    assert count(pg_factory, CustomerAssignment, CustomerAssignment.reason == "import") == 3000
    with pg_factory() as s:  # written by the writer thread's COPYs: each customer's own, open
        pairs = s.execute(select(Customer.manager_id, CustomerAssignment.manager_id,
                                 CustomerAssignment.ended_at)
                          .join(CustomerAssignment,
                                CustomerAssignment.customer_id == Customer.id)).all()
    assert len(pairs) == 3000 and all(c == a and c is not None and ended is None
                                      for c, a, ended in pairs)
    again = imports.check(pg_factory(), "customers", path, imports.Options(county_code="anji"))
    assert again.accepted == 0 and again.rejected == 3000


@pytest.mark.postgres
def test_postgresql_stream_rejects_numbers_already_there_and_ends_cleanly(tmp_path,
                                                                           pg_factory):
    """PostgreSQL commits customers by COPY from a writer thread and answers
    "is this number a customer already?" on a second connection: both must hold."""
    seeded = count(pg_factory, Customer)
    commit_run(pg_factory, "customers", _numbers_csv(tmp_path / "a.csv", 2500),
               imports.Options(county_code="anji"))
    path = tmp_path / "b.csv"  # 0..4999: the first 2,500 are customers already
    _numbers_csv(path, 5000)
    report = commit_run(pg_factory, "customers", path, imports.Options(county_code="anji"))
    assert (report.accepted, report.rejected) == (2500, 2500)
    assert reasons(report)[2][0][2].startswith("Customer 13800000000 already exists")
    assert count(pg_factory, Customer) == seeded + 5000
    assert count(pg_factory, CustomerAssignment, CustomerAssignment.reason == "import") == 5000
    # a file that stops before its end (a header, no rows): the writer is
    # stopped, the transaction rolls back, the session goes on, no connection is left
    empty = tmp_path / "empty.csv"
    empty.write_text("姓名,手机号码,工号\n", encoding="utf-8")
    engine = pg_factory.kw["bind"]
    with pg_factory() as s:
        db.begin_write(s)
        with pytest.raises(imports.FileError, match="no rows") as stopped:
            imports.run(s, "customers", empty, imports.Options(county_code="anji"),
                        commit=True)
        # no COPY left open on the import's connection, no writer thread left,
        # and the second connection is back in the pool while the error is still held
        status = s.connection().connection.driver_connection.info.transaction_status
        assert status in (psycopg.pq.TransactionStatus.INTRANS,
                          psycopg.pq.TransactionStatus.INERROR)
        assert not [t for t in threading.enumerate() if t.name == "import-writer"]
        assert engine.pool.checkedout() == 1 and stopped.value
        s.rollback()
        assert s.scalar(select(func.count()).select_from(Customer)) == seeded + 5000


def test_100000_rows_through_the_background_job(tmp_path, factory):
    path = tmp_path / "big.xlsx"
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(["客户名单（十万行）"])
    sheet.append(["客户姓名", "手机号码", "客户经理工号"])
    for i in range(100_000):
        phone = 13000000000 + i * 7
        # the last ten rows repeat a number: rejected
        sheet.append([f"客户{i}", float(phone) if i < 99_990 else 13000000000,
                      "A001" if i % 2 else ""])
    workbook.save(path)
    root = tmp_path / "imports"
    seen = []
    with factory() as s, open(path, "rb") as upload:
        job = import_jobs.create(s, None, "customers", "big.xlsx", upload, root,
                                 imports.Options(county_code="anji"))
        s.commit()
        job_id = job.id
    thread = import_jobs.start(factory, job_id, root)
    while thread.is_alive():
        seen.append(import_jobs.progress(job_id))
        thread.join(0.2)
    with factory() as s:
        job = s.get(ImportJob, job_id)
        assert (job.status, job.total_rows, job.accepted_rows, job.rejected_rows) == \
            ("checked", 100_000, 99_990, 10)
    assert any(0 < done < total for done, total in seen)  # progress moved while it ran
    import_jobs.start(factory, job_id, root, commit=True, wait=True)
    with factory() as s:
        assert s.get(ImportJob, job_id).status == "committed"
    assert count(factory, Customer) == 1 + 99_990
    assert count(factory, CustomerAssignment, CustomerAssignment.reason == "import") == 49_995
    report = import_jobs.report_of(root, job_id)
    assert report.committed and [r.row for r in report.rejects] == list(range(99_993, 100_003))


@pytest.mark.postgres
def test_two_imports_of_the_same_new_numbers_at_once_one_wins_whole(tmp_path, pg_factory):
    """Each import's duplicate check sees only committed customers, so two
    imports of the same new numbers at the same moment both pass it; the
    unique index then makes the later one fail whole, saying so in words
    (not the database's): nothing of it is written, and the winner's rows
    and assignments are all there."""
    path = _numbers_csv(tmp_path / "c.csv", 3000)
    before = count(pg_factory, Customer), count(pg_factory, CustomerAssignment)
    start, outcomes = threading.Barrier(2), []

    def one():
        with pg_factory() as s:
            db.begin_write(s)
            start.wait()
            try:
                report = imports.run(s, "customers", path, imports.Options(county_code="anji"),
                                     commit=True)
                s.commit()
                outcomes.append(report.accepted)
            except Exception as exc:  # noqa: BLE001 - the loser's error is the point
                s.rollback()
                outcomes.append(exc)
    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(outcomes) == 2 and 3000 in outcomes
    lost = next(o for o in outcomes if o != 3000)
    assert isinstance(lost, imports.FileError), lost
    assert lost.message.startswith("Another import added some of these customers")
    assert isinstance(lost.__cause__, psycopg.errors.UniqueViolation)
    assert (count(pg_factory, Customer), count(pg_factory, CustomerAssignment)) == \
        (before[0] + 3000, before[1] + 3000)


@pytest.mark.postgres
def test_background_job_commits_through_the_writer_thread_on_postgresql(tmp_path, pg_factory,
                                                                         monkeypatch):
    """The web's path on PostgreSQL: the job's thread reads, the import's
    writer thread writes batches (1,000 here, so several), and the job
    ends committed with every customer and its open assignment."""
    monkeypatch.setattr(imports._CustomerStream, "BATCH", 1000)
    path = _numbers_csv(tmp_path / "c.csv", 6500)
    root = tmp_path / "imports"
    before = count(pg_factory, Customer)
    with pg_factory() as s, open(path, "rb") as upload:
        job = import_jobs.create(s, None, "customers", "c.csv", upload, root,
                                 imports.Options(county_code="anji"))
        s.commit()
        job_id = job.id
    import_jobs.start(pg_factory, job_id, root, wait=True)
    import_jobs.start(pg_factory, job_id, root, commit=True, wait=True)
    with pg_factory() as s:
        job = s.get(ImportJob, job_id)
        assert (job.status, job.accepted_rows, job.rejected_rows) == ("committed", 6500, 0)
        manager_of = dict(s.execute(select(Customer.phone, Customer.manager_id)
                                    .where(Customer.phone.like("1380000%"))).all())
        open_of = dict(s.execute(select(Customer.phone, CustomerAssignment.manager_id)
                                 .join(CustomerAssignment,
                                       CustomerAssignment.customer_id == Customer.id)
                                 .where(CustomerAssignment.ended_at.is_(None),
                                        Customer.phone.like("1380000%"))).all())
    assert count(pg_factory, Customer) == before + 6500
    assert len(manager_of) == 6500 and open_of == manager_of
    assert not [t for t in threading.enumerate() if t.name == "import-writer"]


# -- the command line ---------------------------------------------------------------

@pytest.fixture
def conf(tmp_path, factory):
    url = str(factory.kw["bind"].url)
    config.write_new(tmp_path / "khhf.conf", home=tmp_path, database_url=url)
    return str(tmp_path / "khhf.conf")


def test_cli_dry_run_commit_and_exit_statuses(tmp_path, conf, factory, capsys):
    good = tmp_path / "good.csv"
    good.write_text("姓名,手机号码\n甲,13800138061\n", encoding="utf-8")
    assert cli.main(["--config", conf, "import", "customers", str(good), "--county", "anji"]) == 0
    assert "1 good, 0 rejected" in capsys.readouterr().out
    assert count(factory, Customer) == 1
    assert cli.main(["--config", conf, "import", "customers", str(good), "--county", "anji",
                     "--commit", "--by", "admin"]) == 0
    assert count(factory, Customer) == 2

    mixed = tmp_path / "mixed.csv"
    mixed.write_bytes("姓名,手机号码\n乙,13800138062\n丙,bad\n".encode("gb18030"))
    rejects = tmp_path / "rejects.xlsx"
    assert cli.main(["--config", conf, "import", "customers", str(mixed), "--county", "anji",
                     "--commit", "--rejects", str(rejects)]) == 3
    out = capsys.readouterr().out
    assert "row 3, 手机号码 'bad'" in out and "written" in out
    assert count(factory, Customer) == 3
    rows = list(openpyxl.load_workbook(rejects).active.iter_rows(values_only=True))
    assert rows[1][:2] == ("丙", "bad")
    # the same file again: every row rejected, nothing written, and it says so
    assert cli.main(["--config", conf, "import", "customers", str(mixed), "--county", "anji",
                     "--commit"]) == 3
    assert "0 good, 2 rejected" in (out := capsys.readouterr().out)
    assert "nothing written: no good rows" in out
    assert count(factory, Customer) == 3

    png = tmp_path / "photo.xlsx"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert cli.main(["--config", conf, "import", "customers", str(png)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a spreadsheet" in err[0]
    assert cli.main(["--config", conf, "import", "tasks", str(tmp_path / "missing.csv")]) == 2


def test_cli_managers_write_the_initial_passwords_for_the_admin(tmp_path, conf, factory):
    path = tmp_path / "m.csv"
    path.write_text("工号,姓名,县区\nA201,冯经理,anji\n", encoding="utf-8")
    out = tmp_path / "passwords.csv"
    assert cli.main(["--config", conf, "import", "managers", str(path), "--commit",
                     "--passwords", str(out)]) == 0
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert rows[1][:2] == ["A201", "a201"]
    with factory() as s:
        assert accounts.log_in(s, "a201", rows[1][2], "").manager.employee_no == "A201"
        assert s.scalar(select(func.count()).select_from(Manager)) == 4
        assert s.scalar(select(User.role).where(User.username == "a201")) == "manager"
