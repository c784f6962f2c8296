"""One writer per status: a task's status changes only in its state machine
(khhf/services/tasks.py), an SMS message's only in the outbox's
(khhf/services/sms.py). The scan reads every module of ours (ast) and sees
each way to write a status: an attribute assignment, a constructor, an ORM
insert/update with status in its values, and raw SQL in any string literal
(INSERT INTO tasks (..., status ...), UPDATE sms_messages SET status = ...,
a column list for COPY or a bulk insert)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from khhf.models import SmsMessage, SmsStatus, Task, TaskStatus
from khhf.services import sms, tasks

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("khhf", "agi", "ami_bridge", "webui", "smsgw", "jobs", "khhfcli", "pbxctl",
            "amiclient", "simkit", "bench")
# table: (model, the one module that writes its status)
WRITERS = {
    "tasks": ("Task", "khhf/services/tasks.py"),
    "sms_messages": ("SmsMessage", "khhf/services/sms.py"),
}
# `x.status = ...` outside the two homes is allowed only on these other
# entities (each has its own rules in its service)
OTHER_STATUS_OWNERS = {"manager", "campaign", "job", "self"}
# raw writes that stay outside a home, each with its reason; a listed write
# that is gone fails too, so the list cannot outlive its reason
KNOWN_WRITERS = {
    # benchmarks fabricate up to a million rows of history in one statement,
    # each in a throw-away database: no live row moves there
    ("bench/reports.py", "tasks"): "benchmark seed",
    ("bench/sms_feedback.py", "tasks"): "benchmark seed",
    ("bench/tasks.py", "tasks"): "benchmark seed",
    ("bench/workspace_list.py", "tasks"): "benchmark seed",
}


def _sql_writes(text: str) -> set[str]:
    """The tables of WRITERS whose status this SQL text writes."""
    found = set()
    for table in WRITERS:
        t = re.escape(table)
        # INSERT INTO t (...status...), COPY t (...), or a bare column list "t (...)"
        for m in re.finditer(rf"(?:\bINSERT\s+INTO\s+|\bCOPY\s+|^\s*){t}\s*\(([^)]*)\)",
                             text, re.I):
            if re.search(r"\bstatus\b", m.group(1), re.I):
                found.add(table)
        # UPDATE t SET ... status = ... (before FROM/WHERE)
        for m in re.finditer(rf"\bUPDATE\s+{t}\s+SET\s+(.*?)(?:\bFROM\b|\bWHERE\b|$)",
                             text, re.I | re.S):
            if re.search(r"(?:^|[\s,.])status\s*=", m.group(1), re.I):
                found.add(table)
    return found


def _literal(node: ast.AST) -> str | None:
    """The text of a string literal (an f-string's fixed parts, '{}' between)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def _writes_status(node: ast.AST) -> bool:
    """Does this statement put a value into a status column: status=... as a
    keyword, or "status" / X.status as a dict key?"""
    for n in ast.walk(node):
        if isinstance(n, ast.keyword) and n.arg == "status":
            return True
        if isinstance(n, ast.Dict) and any(
                (isinstance(k, ast.Constant) and k.value == "status")
                or (isinstance(k, ast.Attribute) and k.attr == "status") for k in n.keys):
            return True
    return False


def scan(source: str) -> list[tuple[int, str]]:
    """(line, table) for every write of a status in `source` ('?' for an
    attribute assignment on an object the scan cannot tell)."""
    hits = []
    tree = ast.parse(source)
    models = {model: table for table, (model, _) in WRITERS.items()}
    for node in ast.walk(tree):
        # x.status = ... (also in a tuple target, or augmented/annotated)
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute) and t.attr == "status":
                        owner = ast.unparse(t.value).split(".")[-1].lower()
                        if owner not in OTHER_STATUS_OWNERS:
                            table = "tasks" if "task" in owner else "?"
                            hits.append((node.lineno, table))
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            # Task(status=...), SmsMessage(status=...)
            for model, table in models.items():
                if (name == model or name.endswith("." + model)) and any(
                        k.arg == "status" for k in node.keywords):
                    hits.append((node.lineno, table))
            # insert(Task)/update(SmsMessage.__table__)/pg_insert(...), then
            # .values(status=...) or rows with a "status" key
            if name.split(".")[-1].endswith(("insert", "update")) and node.args:
                first = ast.unparse(node.args[0])
                for model, table in models.items():
                    if first.split(".")[0] in (model, table) or _literal(node.args[0]) == table:
                        statement = _statement_of(tree, node)
                        if _writes_status(statement):
                            hits.append((node.lineno, table))
        text = _literal(node)
        if text is not None:
            hits.extend((node.lineno, table) for table in sorted(_sql_writes(text)))
    return sorted(set(hits))


def _statement_of(tree: ast.AST, node: ast.AST) -> ast.AST:
    """The smallest simple statement holding `node` (its chained .values()
    and the rows passed beside it are in there)."""
    best = node
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.stmt) and not hasattr(stmt, "body") and any(
                n is node for n in ast.walk(stmt)):
            best = stmt
    return best


def writes_outside_their_home() -> dict[tuple[str, str], list[int]]:
    """{(file, table): lines} for every status write outside its home."""
    homes = {home for _, home in WRITERS.values()}
    found: dict[tuple[str, str], list[int]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for line, table in scan(path.read_text(encoding="utf-8")):
                if rel in homes and (table == "?" or WRITERS[table][1] == rel):
                    continue
                found.setdefault((rel, table), []).append(line)
    return found


# -- the house ---------------------------------------------------------------------------
def test_only_the_state_machines_write_a_status():
    strays = {k: v for k, v in writes_outside_their_home().items() if k not in KNOWN_WRITERS}
    assert strays == {}, "a status written outside its state machine (tasks.py, sms.py): " + \
        "; ".join(f"{path}:{lines} ({table})" for (path, table), lines in strays.items())


def test_each_known_writer_is_still_there():
    """The listed raw writes are real and the scan sees them (raw SQL in
    bench/): one that is gone leaves the list."""
    found = writes_outside_their_home()
    assert [k for k in KNOWN_WRITERS if k not in found] == []


def test_the_homes_write_their_status():
    homes = {table: [line for line, t in scan((ROOT / home).read_text()) if t in (table, "?")]
             for table, (_, home) in WRITERS.items()}
    assert all(homes.values()), homes


# -- the scan can fail -------------------------------------------------------------------
@pytest.mark.parametrize("source,table", [
    ("task.status = 'done'", "tasks"),
    ("self.task.status = x", "tasks"),
    ("row.status, row.error = 'failed', str(exc)", "?"),
    ("message.status = 'queued'", "?"),
    ("s.add(Task(status='done'))", "tasks"),
    ("s.add(models.SmsMessage(direction='out', status='sent'))", "sms_messages"),
    ("s.execute(update(Task).where(Task.id == 1).values(status='done'))", "tasks"),
    ("db.execute(update(SmsMessage)\n  .where(SmsMessage.status == 'queued')\n"
     "  .values(status='sending', attempts=2))", "sms_messages"),
    ("conn.execute(insert(Task.__table__), [{'id': 1, 'status': 'done'}])", "tasks"),
    ("s.execute(update(Task), [{'id': 1, Task.status: 'done'}])", "tasks"),
    ("conn.execute(pg_insert(SmsMessage).values(rows))\nrows = 1", None),
    ("conn.execute(text('UPDATE tasks SET status = :s WHERE id = :id'), p)", "tasks"),
    ("x('update sms_messages set error = NULL, status=\\'queued\\' where id = 1')",
     "sms_messages"),
    ("cur.executemany('INSERT INTO tasks (id, customer_id, status) VALUES (?, ?, ?)', r)",
     "tasks"),
    ("conn.exec_driver_sql(f'UPDATE tasks SET manager_id = {m}, status = {s}')", "tasks"),
    ("q.insert('tasks (id, manager_id, status, created_at)', n, select_sql)", "tasks"),
    ("cur.copy('COPY sms_messages (id, body, status) FROM STDIN')", "sms_messages"),
    # not writes of a status
    ("x = text('UPDATE tasks SET manager_id = 1 FROM m WHERE tasks.status = 1')", None),
    ("s.execute(update(Task).where(Task.status == 'pending').values(priority=1))", None),
    ("manager.status = 'departed'", None),
    ("campaign.status = 'closed'", None),
    ("q = select(Task).where(Task.status == 'done')", None),
    ("'SELECT status FROM tasks'", None),
])
def test_the_scan_sees_each_form_of_a_write(source, table):
    hits = {t for _, t in scan(source)}
    assert hits == ({table} if table else set()), source


def test_the_transition_tables_name_real_statuses():
    schema = (ROOT / "schema.sql").read_text()
    for statuses, transitions in ((tuple(TaskStatus), tasks.TRANSITIONS),
                                  (tuple(SmsStatus), sms.TRANSITIONS)):
        for status in statuses:
            assert f"'{status}'" in schema, status
        for (frm, _), targets in transitions.items():
            assert {frm, *targets} <= set(statuses)
    assert Task.__tablename__ in WRITERS and SmsMessage.__tablename__ in WRITERS
