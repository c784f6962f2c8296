"""The Chinese UI speaks Chinese: every page, as every role, shows neither an
English message left untranslated nor a raw internal code.

The data is what a county really has after a while: hotline calls answered
at the desk, on the mobile and by a colleague, missed calls turned into
call-backs, outgoing calls with every kind of outcome, tasks in every state,
a departed manager, a second county, and an operation log with log-ins,
failures and edits. Every GET route of app.url_map is walked with real ids
(every manager, user and county), as admin, supervisor and manager, and
what a person would read is checked: the text of the page, the title,
placeholder, aria-label and alt attributes, and the options of each list.
"""

from __future__ import annotations

import datetime as dt
import html.parser
import inspect
import re

import pytest
from babel.messages.pofile import read_po
from flask import url_for
from sqlalchemy import func, select, update

from khhf import audit, config
from khhf.i18n import TRANSLATIONS
from khhf.models import AuditLog, Call, Campaign, County, Customer, Manager, Task, TaskType, User
from khhf.phones import mask_phone
from khhf.services import accounts, counties, hotline, tasks
from simkit.web import log_in_as, make_app, session_for

# codes kept in the data and URLs; a page showing one has skipped its label
INTERNAL_CODES = (
    "desk", "mobile", "group", "missed", "answered", "not_placed", "manager_unavailable",
    "manager_busy", "manager_no_answer", "customer_ringing", "requested", "ended", "failed",
    "pending", "dialing", "connected", "not_reached", "done", "cancelled", "callback",
    "active", "departed", "outbound", "inbound", "admin", "manager", "supervisor",
    "ringall", "hunt", "login_failed", "login_refused", "set_on_duty", "wrong_password",
    "unknown_user", "Asia/Shanghai", "True", "False", "None",
    # why a customer has their manager; the log's address of the command line
    "import", "reassign", "departure", "cli",
)
# ASCII word boundaries: a code may stand right next to Chinese text
RAW_PATTERNS = tuple(re.compile(p, re.ASCII) for p in (
    r"#\d+",                  # 'manager #3'
    r"\b[a-z_]+=",            # 'username=…; county=demo'
    r"\b[a-z]+_[a-z_]+\b",    # any snake_case identifier
    r"\{\"|\"\w+\":",         # JSON shown as it is stored
))
# usernames are data, but the demo's equal role codes: give them people's names
RENAMED = {"admin": "xitong", "supervisor": "zhaozr"}
# GET routes answering page scripts with JSON (their labels are checked below)
SCRIPT_JSON = ("workspace.next_task", "workspace.reminders", "live.state")
AS = {"admin": "xitong", "supervisor": "zhaozr", "manager": "manager1"}


class VisibleText(html.parser.HTMLParser):
    """What a person reads on a page: text outside script and style, the
    attributes that are read or spoken, and each option of a list."""

    SPOKEN = ("title", "placeholder", "aria-label", "alt")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._hidden += 1
        for name, value in attrs:
            if name in self.SPOKEN and value:
                self.parts.append(value)
        if tag == "input" and dict(attrs).get("type") in ("submit", "button"):
            self.parts.append(dict(attrs).get("value") or "")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self._hidden:
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden and data.strip():
            self.parts.append(data.strip())


def visible_text(page: str) -> str:
    parser = VisibleText()
    parser.feed(page)
    return "\n".join(parser.parts)


def translated_msgids() -> list[tuple[str, re.Pattern]]:
    """Each English msgid that the zh catalog translates, as a pattern that
    finds it (or, with placeholders, its longest literal part) in a text."""
    with open(TRANSLATIONS / "zh" / "LC_MESSAGES" / "messages.po", "rb") as fh:
        catalog = read_po(fh)
    out = []
    for message in catalog:
        if not message.id or not message.string or message.string == message.id:
            continue
        msgid = message.id if isinstance(message.id, str) else message.id[0]
        literal = max(re.split(r"%\(\w+\)[sd]", msgid), key=len).strip(" .,:;()")
        if not re.search(r"[A-Za-z]{2}", literal):
            continue  # only placeholders and punctuation: nothing to see
        out.append((msgid, re.compile(r"(?<![A-Za-z])" + re.escape(literal) + r"(?![A-Za-z])")))
    return out


def problems_in(text: str, msgids) -> list[str]:
    found = [f"untranslated: {msgid!r}" for msgid, pattern in msgids if pattern.search(text)]
    found += [f"raw code: {code!r}" for code in INTERNAL_CODES
              if re.search(r"(?<![\w/])" + re.escape(code) + r"(?![\w/])", text, re.ASCII)]
    found += [f"raw text: {m.group(0)!r}" for p in RAW_PATTERNS for m in p.finditer(text)]
    return found


# -- a county after a few weeks -------------------------------------------------

def _seed_history(app) -> None:
    now = dt.datetime(2026, 11, 20, 2, 0)
    with session_for(app) as s:
        for old, new in RENAMED.items():  # as if they had been made with these names
            s.execute(update(User).where(User.username == old).values(username=new))
            s.execute(update(AuditLog).where(AuditLog.username == old).values(username=new))
            s.execute(update(AuditLog).values(detail=func.replace(
                AuditLog.detail, f'"username": "{old}"', f'"username": "{new}"')))
        s.commit()
        admin = s.scalar(select(User).where(User.username == "xitong"))
        m1, m2, m3 = (s.scalar(select(Manager).join(User).where(User.username == u))
                      for u in ("manager1", "manager2", "manager3"))
        county = s.get(County, m1.county_id)
        m1.on_duty = m2.on_duty = True

        # the hotline: answered at the desk, on the mobile, by a colleague; missed
        own = s.scalars(select(Customer).where(Customer.manager_id == m1.id)
                        .order_by(Customer.id)).all()
        for i, (stage, status, by) in enumerate((
                ("desk", "ANSWER", "8001"), ("mobile", "ANSWER", "13800138001@carrier"),
                ("group", "ANSWER", "8002"), ("message", "NOANSWER", ""))):
            uniqueid = f"1763600000.{i}"
            routing = hotline.start_call(s, caller=own[0].phone, uniqueid=uniqueid,
                                         unified_number=county.primary_number,
                                         now=now + dt.timedelta(minutes=i))
            hotline.finish_call(s, uniqueid=uniqueid, call_id=routing.call_id,
                                hangup=hotline.Hangup(stage=stage, dial_status=status,
                                                      answered_seconds=30, answered_by=by),
                                now=now + dt.timedelta(minutes=i, seconds=40))
        # an unknown caller nobody answered: a new customer and a call-back
        hotline.start_call(s, caller="13912340000", uniqueid="1763600000.9",
                           unified_number=county.primary_number, now=now)
        hotline.finish_call(s, uniqueid="1763600000.9",
                            hangup=hotline.Hangup(stage="message", dial_status="NOANSWER"),
                            now=now + dt.timedelta(seconds=50))

        # outgoing calls, each on its own task: each kind of ending, and one
        # still ringing; the tasks follow them through the state machine
        own_tasks = s.scalars(select(Task).where(Task.manager_id == m1.id)
                              .order_by(Task.id)).all()
        for i, (task, (state, outcome)) in enumerate(zip(own_tasks, (
                ("ended", "answered"), ("ended", "busy"), ("failed", "not_placed"),
                ("failed", "manager_unavailable"), ("customer_ringing", None)))):
            tasks.dial(task, now)
            call = Call(direction="outbound", task_id=task.id, customer_id=task.customer_id,
                        manager_id=m1.id, county_id=m1.county_id,
                        customer_number=task.customer.phone, state=state, outcome=outcome,
                        requested_at=now + dt.timedelta(hours=1, minutes=i))
            s.add(call)
            s.flush()
            tasks.follow_call(s, task, call, now)
            # as khhf.services.dialing writes it
            audit.record(s, m1.user, "create", "call", call.id, {"task": task.id}, "10.0.0.8",
                         object_name=f"{task.customer.name} {mask_phone(task.customer.phone)}")
        assert {t.status for t in own_tasks} >= {"connected", "not_reached", "pending",
                                                 "dialing"}
        # closed tasks: a result filed, a task cancelled
        done, cancelled = s.scalars(select(Task).where(Task.manager_id == m2.id)
                                    .order_by(Task.id)).all()[:2]
        tasks.file_result(done, done.task_type.result_codes[0], now=now)
        tasks.cancel(cancelled, now)

        # the operation log: log-ins, failures, refusals, edits, a departure
        _failed_log_in(s, "manager1", "10.0.0.8")
        _failed_log_in(s, "zhangsan9", "10.0.0.9")  # no such user
        for _ in range(config.Settings.login_max_failures + 1):  # the last one is refused
            _failed_log_in(s, "manager2", "10.0.0.10")
        accounts.set_on_duty(s, m1.user, "10.0.0.8", m1, False)
        accounts.set_on_duty(s, m1.user, "10.0.0.8", m1, True)
        accounts.set_password(s, admin, "10.0.0.1", m2.user, "a-new-password")
        # as `khhf users password` does it
        accounts.set_password(s, None, audit.CLI_ADDRESS, m2.user, "another-password")
        other = counties.create_county(s, admin, "10.0.0.1", code="other", name="邻县",
                                       fallback_strategy="hunt", numbers=["13900000001"],
                                       primary="")
        counties.update_county(s, admin, "10.0.0.1", other, code="other", name="邻县",
                               fallback_strategy="ringall", numbers=["13900000001"],
                               primary="13900000001")
        spare = counties.create_county(s, admin, "10.0.0.1", code="spare", name="备用县",
                                       fallback_strategy="hunt", numbers=[], primary="")
        counties.delete_county(s, admin, "10.0.0.1", spare)
        accounts.create_user(s, admin, "10.0.0.1", username="qianzr", display_name="钱主任",
                             password="secret-pass", role="supervisor", county_id=other.id)
        sun = accounts.create_manager(
            s, admin, "10.0.0.1", username="manager9", display_name="孙经理",
            password="secret-pass", county_id=other.id, employee_no="O009",
            desk_extension="8009", mobile="13600000009")
        accounts.update_user(s, admin, "10.0.0.1", sun.user, display_name="孙经理",
                             role="manager", county_id=other.id, is_active=True)
        accounts.update_manager(s, admin, "10.0.0.1", m3, display_name="李娜",
                                county_id=m3.county_id, employee_no="D003",
                                desk_extension="8003", mobile="", status="departed")
        m3.user.password_hash = accounts.hash_password("her-old-password")
        _failed_log_in(s, "manager3", "10.0.0.11", "her-old-password")  # disabled
        s.commit()


def _failed_log_in(session, username, ip, password="not-the-password"):
    with pytest.raises(accounts.LoginRefused):
        accounts.log_in(session, username, password, ip)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app, _ = make_app(tmp_path_factory.mktemp("i18n"), WTF_CSRF_ENABLED=False)
    _seed_history(app)
    _seed_imports(app)
    return app


# downloads (XLSX) and the import's JSON status: no page to read
NOT_PAGES = {"imports.template", "imports.rejects", "imports.status",
             # downloads (XLSX, CSV)
             "reports.export_xlsx", "reports.export_csv", "reports.drill_xlsx",
             "reports.drill_csv",
             # the health check's JSON for monitors (no text a person reads)
             "health.healthz"}


def _seed_imports(app) -> None:
    """A checked import with rejected rows (its preview in Chinese) and one
    of a file that could not be read."""
    import io
    from pathlib import Path

    from khhf.services import import_jobs, imports
    root = Path(app.extensions["khhf_settings"].home) / "imports"
    files = {"好坏.csv": "姓名,手机号码,客户经理工号\n甲,13811112222,D001\n乙,bad,X1\n",
             "图片.xlsx": b"\x89PNG"}  # a picture (cut short), named as a workbook
    with session_for(app) as s:
        county = s.scalar(select(County))
        for name, content in files.items():
            job = import_jobs.create(s, None, "customers", name,
                                     io.BytesIO(content if isinstance(content, bytes)
                                                else content.encode("gb18030")), root,
                                     imports.Options(county_code=county.code),
                                     county_id=county.id)
            s.commit()
            import_jobs.start(app.extensions["khhf_sessions"], job.id, root, wait=True)


def _pages(app):
    """Every GET route, with every id it can take; the log's every page."""
    from khhf.models import Customer, ImportJob
    with session_for(app) as s:
        ids = {"manager_id": s.scalars(select(Manager.id)).all(),
               "task_id": s.scalars(select(Task.id)).all(),
               "user_id": s.scalars(select(User.id)).all(),
               "county_id": s.scalars(select(County.id)).all(),
               "campaign_id": s.scalars(select(Campaign.id)).all(),
               "type_id": s.scalars(select(TaskType.id)).all(),
               "customer_id": s.scalars(select(Customer.id).order_by(Customer.id)
                                        .limit(5)).all(),
               "job_id": s.scalars(select(ImportJob.id)).all()}
    urls = []
    with app.test_request_context():
        for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
            if "GET" not in rule.methods or rule.endpoint == "static":
                continue
            if rule.endpoint in NOT_PAGES or rule.endpoint.startswith("api."):
                continue  # the integration API answers machines, in JSON (tests/test_api.py)
            missing = set(rule.arguments) - set(ids) - {"call_id"}
            assert not missing, f"{rule.rule}: add ids for {missing} to this test"
            if rule.arguments == {"call_id"} or rule.endpoint in SCRIPT_JSON:
                continue  # JSON for scripts, checked below
            if not rule.arguments:
                urls.append(url_for(rule.endpoint))
                continue
            [name] = rule.arguments
            urls += [url_for(rule.endpoint, **{name: value}) for value in ids[name]]
        urls += [url_for("audit.index", page=n) for n in (2, 3)]
        urls += [url_for("audit.index", q="李娜"), url_for("audit.index", action="update")]
        # the rows behind a figure: calls, tasks and results
        urls += [url_for("reports.drill", figure=f)
                 for f in ("calls_out", "tasks_assigned", "results_filed")]
    return urls


def test_the_walk_covers_what_it_should(app):
    """The seed really has what the walk is meant to see."""
    client = app.test_client()
    log_in_as(client, app, "manager1")
    # the workspace's first tab, and the call-backs tab (hotline call-back tasks)
    home = "\n".join(visible_text(client.get(url).get_data(as_text=True))
                     for url in ("/manager/", "/manager/?tab=callback"))
    for label in ("座机接听", "手机接听", "王芳接听（分机 8002）", "未接：已生成回电任务",
                  "热线来电", "外呼", "已接听", "未能发起", "热线回电", "时间均为北京时间"):
        assert label in home, label
    log_in_as(client, app, "xitong")
    log = visible_text(client.get("/audit/").get_data(as_text=True))
    assert "系统管理员 将客户经理 李娜设为已离职" in log
    assert int(re.search(r"共 (\d+) 条", log).group(1)) >= 30


@pytest.mark.parametrize("role", ["nobody", *AS])
def test_no_page_of_the_chinese_ui_shows_english_or_a_code(app, role):
    msgids = translated_msgids()
    client = app.test_client()
    if role != "nobody":
        log_in_as(client, app, AS[role])
    seen, problems = 0, {}
    for url in _pages(app) + ["/login"]:
        response = client.get(url)
        if response.status_code in (301, 302):
            continue  # a redirect shows nothing; where it leads is walked itself
        assert response.mimetype == "text/html", url
        found = problems_in(visible_text(response.get_data(as_text=True)), msgids)
        if found:
            problems[f"{url} ({response.status_code})"] = found
        seen += 1
    assert seen >= (1 if role == "nobody" else 3)
    assert not problems, problems


def _zh_catalog() -> dict[str, str]:
    with open(TRANSLATIONS / "zh" / "LC_MESSAGES" / "messages.po", "rb") as fh:
        return {m.id: m.string for m in read_po(fh) if m.id and isinstance(m.id, str)}


def test_one_chinese_word_for_each_thing(app):
    """A campaign is a 批次 everywhere (never 活动); a running campaign is
    进行中 and an active manager 在职; a thing's name is 名称, a person's 姓名."""
    zh = _zh_catalog()
    assert [m for m, text in zh.items() if "活动" in text] == []
    assert (zh["Campaign"], zh["All campaigns"]) == ("批次", "全部批次")
    from webui import i18n
    with app.test_request_context("/"):
        assert str(i18n.CAMPAIGN_STATUS_LABELS["active"]) == "进行中"
        assert str(i18n.MANAGER_STATUS_LABELS["active"]) == "在职"


def test_the_words_people_read_on_the_pages(app):
    client = app.test_client()
    log_in_as(client, app, "xitong")
    campaigns = visible_text(client.get("/campaigns/").get_data(as_text=True))
    assert "进行中" in campaigns and "在职" not in campaigns
    types = visible_text(client.get("/campaigns/types").get_data(as_text=True))
    assert "名称" in types and "姓名" not in types
    type_id = re.search(r"/campaigns/types/(\d+)", client.get("/campaigns/types")
                        .get_data(as_text=True)).group(1)
    form = visible_text(client.get(f"/campaigns/types/{type_id}").get_data(as_text=True))
    assert "名称" in form and "姓名" not in form
    # where a customer's manager came from, and what was done on the command line
    with session_for(app) as s:
        customer_id = s.scalar(select(Customer.id).order_by(Customer.id))
    history = client.get(f"/customers/{customer_id}").get_data(as_text=True)
    assert "文件导入" in visible_text(history.split('id="history"')[1].split("</table>")[0])
    log = visible_text(client.get("/audit/").get_data(as_text=True))
    assert "命令行" in log
    # an import's page leads back to the list of imports, not to "import all"
    from khhf.models import ImportJob
    with session_for(app) as s:
        picture = s.scalar(select(ImportJob.id).where(ImportJob.filename == "图片.xlsx"))
    page = visible_text(client.get(f"/imports/{picture}").get_data(as_text=True))
    assert "导入记录" in page and "全部导入" not in page
    # a picture is not a table: said so, not "no header row"
    assert "不是电子表格或 CSV 文件" in page and "表头" not in page


def test_flash_messages_after_writes_are_chinese_too(app):
    msgids = translated_msgids()
    client = app.test_client()
    log_in_as(client, app, "manager1")
    with session_for(app) as s:
        manager_id = s.scalar(select(Manager.id).join(User).where(User.username == "manager1"))
    for on_duty in ("0", "1"):
        response = client.post(f"/manager/{manager_id}/duty", data={"on_duty": on_duty},
                               follow_redirects=True)
        text = visible_text(response.get_data(as_text=True))
        assert "您已离岗" in text or "您已在岗" in text
        assert not problems_in(text, msgids)


def test_the_call_status_for_scripts_carries_a_label(app):
    client = app.test_client()
    log_in_as(client, app, "manager1")
    with session_for(app) as s:
        call = s.scalar(select(Call).where(Call.outcome == "mobile"))
    data = client.get(f"/calls/{call.id}").get_json()
    assert (data["outcome"], data["label"]) == ("mobile", "手机接听")


def test_the_english_ui_says_the_same_in_english(app):
    client = app.test_client()
    log_in_as(client, app, "manager1")
    text = visible_text(client.get("/manager/?lang=en").get_data(as_text=True))
    text += visible_text(client.get("/manager/?tab=callback").get_data(as_text=True))
    for label in ("Answered at the desk phone", "Answered on the mobile",
                  "Answered by 王芳 (extension 8002)", "Hotline call-back",
                  "Times are shown in Beijing time."):
        assert label in text, label
    # English words may be codes too ('desk phone'); the raw forms may not
    assert not [m for p in RAW_PATTERNS for m in p.finditer(text)]


def test_the_checker_catches_what_it_is_for():
    """The walk would fail on the complaints that started it."""
    msgids = translated_msgids()
    for page in ("<td>desk</td>", "<p>客户经理 #3</p>", "<td>username=li; county=demo</td>",
                 "<span>时间均为Asia/Shanghai。</span>", "<td>Hotline call-back</td>",
                 "<td>状态由“active”改为“departed”</td>",
                 '<input placeholder="a person\'s name, user name, county, IP address">',
                 '<select><option value="x">Ring in turn</option></select>',
                 '<a aria-label="Menu" href="#">菜单</a>', "<p>状态：active → departed</p>"):
        assert problems_in(visible_text(page), msgids), page
    for page in ('<option value="hunt">轮流振铃</option>', "<script>let s = 'desk';</script>",
                 '<a href="/manager/3" class="nav-link">李娜</a>'):
        assert not problems_in(visible_text(page), msgids), page


def test_every_code_the_domain_knows_has_a_label():
    from khhf.calls.states import CallOutcome, CallState
    from khhf.models import ASSIGNMENT_REASONS, IMPORT_KINDS, IMPORT_STATUSES, ROLES, TaskStatus
    from khhf.services import customers, handover
    from khhf.services.accounts import MANAGER_STATUSES
    from khhf.services.counties import FALLBACK_STRATEGIES
    from webui import i18n
    for codes, labels in ((ROLES, i18n.ROLE_LABELS), (TaskStatus, i18n.TASK_STATUS_LABELS),
                          (CallState, i18n.CALL_OUTCOME_LABELS),
                          (CallOutcome, i18n.CALL_OUTCOME_LABELS),
                          (MANAGER_STATUSES, i18n.MANAGER_STATUS_LABELS),
                          (FALLBACK_STRATEGIES, i18n.FALLBACK_STRATEGY_LABELS),
                          (audit.ACTIONS, i18n.ACTION_LABELS),
                          (audit.OBJECT_TYPES, i18n.OBJECT_TYPE_LABELS),
                          ((hotline.CALLBACK_TASK_TYPE,), i18n.TASK_TYPE_LABELS),
                          (IMPORT_STATUSES, i18n.IMPORT_STATUS_LABELS),
                          (IMPORT_KINDS, i18n.IMPORT_KIND_LABELS),
                          (ASSIGNMENT_REASONS, i18n.ASSIGNMENT_REASON_LABELS),
                          ((audit.CLI_ADDRESS,), i18n.AUDIT_ADDRESS_LABELS)):
        assert set(codes) <= set(labels), set(codes) - set(labels)
    # the reasons the services write are the ones labelled
    assert handover.REASON in ASSIGNMENT_REASONS
    assert inspect.signature(customers.reassign).parameters["reason"].default in \
        ASSIGNMENT_REASONS
