"""`khhf types list|show|import`: task types kept in a spreadsheet, through
the web form's rules (khhf.services.campaigns.save_task_type); an import
is checked whole, names each bad row in Chinese and writes nothing unless
every row is good and --commit is given."""

import json
import os
import subprocess
import sys

import openpyxl
import pytest
from sqlalchemy import func, select

from khhf import config, db
from khhf.models import AuditLog, ResultCode, TaskType
from khhf.services import campaigns, hotline, tasks
from khhfcli import main as cli
from simkit import factories

FIVE_CODES = [  # 类型代码, 类型名称, 最多尝试次数, 说明, 通话话术, 结果代码, 结果名称, 成功, 结束
    ["类型代码", "类型名称", "最多尝试次数", "说明", "通话话术", "结果代码", "结果名称", "成功",
     "结束"],
    ["care", "关怀回访", 2, "老年客户关怀", "您好，我是客户经理{经理}。", 1, "关怀成功", "是", "是"],
    ["care", "", "", "", "", 2, "客户拒绝", "否", "是"],
    ["care", "", "", "", "", 3, "无人接听", "", ""],
    ["care", "", "", "", "", 7, "预约再拨", "否", "否"],
    ["care", "", "", "", "", 12, "号码有误", "", "√"],
]


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request, tmp_path):
    """(config path, session factory) of a database with the standard types."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'types.db'}"
        engine = db.make_engine(url)
    else:
        engine = request.getfixturevalue("pg_database")("types")
        url = engine.url.render_as_string(hide_password=False)
    db.create_schema(engine)
    factory = db.session_factory(engine)
    with db.unit_of_work(factory) as s:
        campaigns.ensure_standard_types(s)
        factories.user(s, "admin", "admin")
    config.write_new(tmp_path / "khhf.conf", home=tmp_path, database_url=url)
    yield str(tmp_path / "khhf.conf"), factory
    engine.dispose()


def khhf(conf, *args):
    return cli.main(["--config", conf, "types", *args])


def xlsx(path, rows):
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    book.save(path)
    return str(path)


def snapshot(factory):
    with factory() as s:
        return (s.scalar(select(func.count()).select_from(TaskType)),
                sorted((c.task_type_id, c.code, c.label, c.is_success, c.is_final)
                       for c in s.scalars(select(ResultCode))),
                s.scalar(select(func.count()).select_from(AuditLog)))


def test_a_new_type_with_five_codes_from_xlsx_dry_run_then_commit(site, tmp_path, capsys):
    conf, factory = site
    path = xlsx(tmp_path / "关怀.xlsx", FIVE_CODES)
    before = snapshot(factory)
    assert khhf(conf, "import", path) == 0
    out = capsys.readouterr().out
    assert "关怀回访（care）：新增，5 个结果代码。" in out and "未写入" in out
    assert snapshot(factory) == before
    assert khhf(conf, "import", path, "--commit", "--by", "admin") == 0
    assert "已写入。" in capsys.readouterr().out
    with factory() as s:
        care = s.scalar(select(TaskType).where(TaskType.code == "care"))
        assert (care.name, care.max_attempts, care.description, care.script) == \
            ("关怀回访", 2, "老年客户关怀", "您好，我是客户经理{经理}。")
        assert sorted((c.code, c.label, c.is_success, c.is_final)
                      for c in care.result_codes) == [
            ("1", "关怀成功", True, True), ("12", "号码有误", False, True),
            ("2", "客户拒绝", False, True), ("3", "无人接听", False, False),
            ("7", "预约再拨", False, False)]
        entry = s.scalar(select(AuditLog).where(AuditLog.object_type == "task_type",
                                                AuditLog.object_id == str(care.id)))
        assert (entry.action, entry.username, entry.ip) == ("create", "admin", "cli")
        assert "12 号码有误*" in json.loads(entry.detail)["fields"]["result_codes"]
    assert khhf(conf, "list") == 0
    assert "care\t关怀回访\t2\t1 关怀成功*, 2 客户拒绝*, 3 无人接听, 7 预约再拨, 12 号码有误*" \
        in capsys.readouterr().out


def test_show_prints_what_import_reads_and_a_changed_copy_updates_the_type(site, tmp_path,
                                                                              capsys):
    conf, factory = site
    assert khhf(conf, "show", "回访") == 0
    shown = capsys.readouterr().out
    lines = [line.split("\t") for line in shown.splitlines()]
    assert lines[0] == [*FIVE_CODES[0], "不再联系", "类别", "需客户同意", "自动结果",
                        "重拨间隔（分钟）", "最多重拨次数", "结案代码"]
    assert [line[5:] for line in lines[1:3]] == [
        ["1", "回访成功", "是", "是", "否", "回访", "否", "", "", "", ""],
        ["2", "客户拒绝", "否", "是", "否", "", "", "", "", "", ""]]
    # the automatic outcomes on their codes' rows, with their retry rules
    assert [line[5:10] + line[12:] for line in lines[1:] if line[12]] == [
        ["3", "无人接听", "否", "否", "否", "无人接听", "60", "2", "9"],
        ["4", "关机/停机", "否", "否", "否", "无法接通", "120", "2", "9"],
        ["5", "空号", "否", "是", "否", "空号", "", "", ""],
        ["7", "忙线", "否", "否", "否", "忙线", "30", "2", "9"],
        ["8", "呼叫被拒", "否", "否", "否", "呼叫被拒", "240", "1", "9"]]
    with factory() as s:
        rules_before = campaigns.describe_rules(s.scalar(select(TaskType).where(
            TaskType.code == "revisit")).outcome_rules)
    # the same file imports as it is: nothing changes but an audit entry
    (tmp_path / "回访.tsv").write_text(shown, encoding="utf-8")
    assert khhf(conf, "import", str(tmp_path / "回访.tsv"), "--commit") == 0
    assert "回访（revisit）：已保存，9 个结果代码。" in capsys.readouterr().out
    with factory() as s:
        assert campaigns.describe_rules(s.scalar(select(TaskType).where(
            TaskType.code == "revisit")).outcome_rules) == rules_before
    # renamed code 3, code 4 gone (and its rule), code 10 new, fewer attempts, and
    # busy filed as 3 too, by a further row of code 3
    rows = [line for line in lines if line[5] != "4"]
    rows[1][2] = "4"
    rows = [[*r[:6], "暂时无人接听", *r[7:]] if r[5] == "3" else r for r in rows]
    rows = [[*r[:12], "", "", "", ""] if r[5] == "7" else r for r in rows]
    rows.append(["revisit", "", "", "", "", "10", "改号", "否", "是"])
    rows.append(["revisit", "", "", "", "", "3", "暂时无人接听", "否", "否", "否", "", "", "忙线",
                 "15", "1", "9"])
    path = xlsx(tmp_path / "回访.xlsx", rows)
    assert khhf(conf, "import", path, "--commit") == 0
    with factory() as s:
        revisit = s.scalar(select(TaskType).where(TaskType.code == "revisit"))
        assert revisit.max_attempts == 4
        assert {c.code: c.label for c in revisit.result_codes} == {
            "1": "回访成功", "2": "客户拒绝", "3": "暂时无人接听", "5": "空号", "6": "预约再拨",
            "7": "忙线", "8": "呼叫被拒", "9": "多次未接通", "10": "改号"}
        assert campaigns.describe_rules(revisit.outcome_rules) == (
            "无人接听→3 60分钟×2→9, 忙线→3 15分钟×1→9, 空号→5, 呼叫被拒→8 240分钟×1→9")
        entry = s.scalars(select(AuditLog).where(AuditLog.object_type == "task_type",
                                                 AuditLog.action == "update")).all()[-1]
        assert entry.ip == "cli" and "暂时无人接听" in entry.detail


def test_every_bad_row_is_named_in_chinese_and_nothing_is_written(site, tmp_path, capsys):
    conf, factory = site
    with db.unit_of_work(factory) as s:   # code 5 of 调查 has been filed: it must stay
        survey = s.scalar(select(TaskType).where(TaskType.code == "survey"))
        customer = factories.customer(s, factories.county(s, "demo", "示范县"), "13800000001",
                                      None)
        tasks.file_result(factories.task(s, customer, None, survey),
                          next(c for c in survey.result_codes if c.code == "5"))
    before = snapshot(factory)
    path = xlsx(tmp_path / "错误.xlsx", [
        ["任务类型说明"],                       # a title row above the header
        FIVE_CODES[0],
        *FIVE_CODES[1:],                         # good on its own: not written either
        ["Bad!", "坏", "", "", "", "123", "x", "也许", "是"],
        ["", "", "", "", "", "1", "无类型", "", "是"],
        ["new", "新类型", "", "", "", "1", "", "", ""],
        ["new", "另一个名字", "", "", "", "1", "重复", "", "是"],
        ["survey", "", "", "", "", "1", "调查成功", "是", "是"],
    ])
    assert khhf(conf, "import", path, "--commit") == 3
    err = capsys.readouterr().err.splitlines()
    expected = [
        "第 8 行（类型 bad!）：成功为“也许”：请填写 是 或 否（留空即为 否）。",
        "第 8 行（类型 bad!）：结果代码 123：请填写 1 到 2 位数字",
        "第 9 行：类型代码为空：请在每一行填写任务类型的代码（如 revisit）。",
        "第 10 行（类型 new）：结果代码 1 需要名称",
        "第 11 行（类型 new）：类型名称与同一类型第 10 行的不同：只填一次，或每行填写相同的内容。",
        "第 11 行（类型 new）：结果代码 1 重复",
        "第 12 行（类型 survey）：结果代码 5（空号）已被任务使用",
    ]
    for text in expected:
        assert any(text in line for line in err), (text, err)
    assert all(line.startswith("khhf types import: ") for line in err)
    assert "未写入任何内容" in err[-1]
    assert snapshot(factory) == before


def test_unreadable_files_unknown_types_and_users(site, tmp_path, capsys):
    conf, factory = site
    (tmp_path / "空.csv").write_bytes(b"")
    assert khhf(conf, "import", str(tmp_path / "空.csv")) == 2
    assert "文件是空的" in capsys.readouterr().err
    (tmp_path / "无代码.csv").write_text("类型代码,结果名称\ncare,成功\n", encoding="gb18030")
    assert khhf(conf, "import", str(tmp_path / "无代码.csv")) == 2
    assert "缺少“结果代码”列" in capsys.readouterr().err
    (tmp_path / "表头.csv").write_text("类型代码,结果代码,结果名称\n", encoding="utf-8")
    assert khhf(conf, "import", str(tmp_path / "表头.csv")) == 2
    assert "没有可导入的数据行" in capsys.readouterr().err
    assert khhf(conf, "import", xlsx(tmp_path / "a.xlsx", FIVE_CODES), "--by", "nobody") == 1
    assert "没有用户 nobody（--by）" in capsys.readouterr().err
    assert khhf(conf, "show", "营销活动") == 1
    assert "没有任务类型 营销活动" in capsys.readouterr().err
    assert khhf(conf, "show", "2") == 0 and "marketing\t营销" in capsys.readouterr().out
    with db.unit_of_work(factory) as s:
        s.scalar(select(TaskType).where(TaskType.code == "survey")).name = "营销"
    assert khhf(conf, "show", "营销") == 1
    assert "有多个任务类型名为 营销：请给出其中一个的代码" in capsys.readouterr().err


def test_init_makes_the_standard_types_beside_the_hotlines_own(tmp_path):
    """A database whose only type is the hotline's call-back type (the
    standard ones used to come from a first visit of the web page) gets
    them from `khhf init`, the command that makes them now; `khhf types
    list` shows them, in Chinese, from a real process."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    with db.unit_of_work(db.session_factory(engine)) as s:
        hotline._callback_type(s)
    engine.dispose()
    env = dict(os.environ, KHHF_CONFIG=str(tmp_path / "khhf.conf"), KHHF_HOME=str(tmp_path),
               KHHF_DATABASE_URL=url)

    def khhf_run(*args):
        done = subprocess.run([sys.executable, "-m", "khhfcli.main", *args], env=env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout
    assert "created the standard task types" in khhf_run("init", "--no-admin")
    listed = khhf_run("types", "list")
    assert listed.splitlines()[0] == "编号\t类型代码\t类型名称\t最多尝试次数\t结果代码"
    assert [line.split("\t")[1] for line in listed.splitlines()[1:5]] == \
        ["callback", "revisit", "marketing", "survey"]
