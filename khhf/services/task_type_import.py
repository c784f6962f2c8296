"""Task types from a spreadsheet (`khhf types import FILE`), for sites that
keep their result codes in Excel or WPS.

One row per result code (CSV or XLSX, read as khhf.services.imports reads
customer lists; headers as in `khhf types show`):

    类型代码  类型名称  最多尝试次数  说明  通话话术  结果代码  结果名称  成功  结束  不再联系  类别  需客户同意
    care      关怀回访  3                     您好…    1         关怀成功  是    是    否        回访  否
    care                                               3         无人接听  否    否    否
    care                                               9         不再联系  否    是    是

类别 is 回访, 营销, 调查 or 其他 (or revisit, marketing, survey, other);
需客户同意 (calls ring only customers who consented) is refused for 回访;
不再联系 marks a result code that puts the customer on the do-not-call
list when filed. For the automatic outcomes, four more columns on a
code's row:

    自动结果        重拨间隔（分钟）  最多重拨次数  结案代码
    无人接听、忙线  60                2             9          (on code 3's row)

The type's own cells (name, attempts, description, script) may be given on
one of its rows or repeated alike on several; left empty, an existing
type keeps its values. 自动结果 names the unreached outcomes (无人接听, 忙线,
无法接通, 空号, 呼叫被拒) the system files with the row's code, with the
row's retry rule; a code may be repeated on a further row (same label) to
give other outcomes another rule. Without the 自动结果 column an existing
type keeps its rules. A type named by its code is created, or changed to
exactly the file's result codes (a code tasks already used cannot go).

Every row is checked, each type by campaigns.save_task_type (the web
form's rules, so there is no second set); one problem anywhere and the
caller rolls everything back, so nothing is written. Problems name the
row and what to do, as msgids marked with N_ (the caller's catalog
translates them).
"""

from __future__ import annotations

import dataclasses
import itertools
import unicodedata
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from khhf.calls.states import UNREACHED_OUTCOMES
from khhf.models import TaskKind, TaskType, User
from khhf.services import N_, ValidationError, campaigns, imports

KIND = "task_types"
TYPE_CELLS = ("type_name", "max_attempts", "description", "script", "kind", "requires_consent")
CODE_FLAGS = ("is_success", "is_final", "stops_calls")
RULE_CELLS = ("retry_minutes", "max_retries", "close_code")
OUTCOME_SEPARATORS = "、,，;；"
# 类别 as written in the file: the Chinese words as_rows writes, or the codes
KIND_WORDS = {"回访": TaskKind.REVISIT, "营销": TaskKind.MARKETING, "调查": TaskKind.SURVEY,
              "其他": TaskKind.OTHER, **{k.value: k for k in TaskKind}}
YES, NO = imports.YES, imports.NO
YES_WORD, NO_WORD = "是", "否"   # what as_rows writes


@dataclasses.dataclass(frozen=True)
class RowProblem:
    row: int            # as the spreadsheet numbers it (1 = first row)
    type_code: str      # the type the row belongs to ("" when it names none)
    message: str        # msgid
    params: dict


class Refused(ValueError):
    """The file was refused as a whole: nothing was written (once the
    caller rolls back); `problems` says which rows and why."""

    def __init__(self, problems: list[RowProblem]):
        self.problems = problems
        super().__init__("; ".join(f"row {p.row}: {p.message % p.params}" for p in problems))


@dataclasses.dataclass(frozen=True)
class Saved:
    task_type: TaskType
    created: bool


@dataclasses.dataclass
class _Type:
    code: str
    first_row: int
    cells: dict = dataclasses.field(default_factory=dict)   # field -> (value, row)
    codes: list = dataclasses.field(default_factory=list)   # result code dicts
    code_rows: list = dataclasses.field(default_factory=list)
    kind: str | None = None                 # None: the type keeps its own (new: revisit)
    requires_consent: bool | None = None
    rules: list = dataclasses.field(default_factory=list)   # automatic outcome dicts
    rule_rows: list = dataclasses.field(default_factory=list)


def as_rows(task_type: TaskType) -> list[list[str]]:
    """The type as import_file reads it: the header, then a row per result
    code (the type's own cells on the first)."""
    words = {kind: word for word, kind in KIND_WORDS.items() if not word.isascii()}
    own = [task_type.name, str(task_type.max_attempts), task_type.description,
           task_type.script]
    # the newer type cells come last, so files written before them still read
    own_last = [words[TaskKind(task_type.kind)],
                YES_WORD if task_type.requires_consent else NO_WORD]
    rows = [[f.label for f in imports.FIELDS[KIND]]]
    # a code's rules, one row per distinct retry rule (the first on the code's own row)
    groups: dict[str, dict[tuple, list[str]]] = {}
    for rule in task_type.outcome_rules:
        r = campaigns.rule_fields(rule)
        key = tuple(str(r[k]) if not rule.result_code.is_final else "" for k in RULE_CELLS)
        groups.setdefault(r["code"], {}).setdefault(key, []).append(campaigns.outcome_word(r["outcome"]))
    first = True
    for c in sorted(task_type.result_codes, key=lambda c: c.code.zfill(2)):
        flags = [YES_WORD if getattr(c, flag) else NO_WORD for flag in CODE_FLAGS]
        for key, outcomes in (groups.get(c.code) or {("", "", ""): []}).items():
            rows.append([task_type.code, *(own if first else [""] * len(own)), c.code,
                         c.label, *flags, *(own_last if first else [""] * len(own_last)),
                         "、".join(outcomes), *key])
            first = False
    return rows


def _outcomes_by_word() -> dict[str, str]:
    """What a 自动结果 cell may call each outcome: its Chinese or English label, its code."""
    return {_word(word): str(outcome) for outcome in UNREACHED_OUTCOMES
            for word in (campaigns.outcome_word(outcome), campaigns.outcome_word(outcome, "en"), outcome)}


def _word(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().lower()


def import_file(session: Session, by: User | None, ip: str, path: str | Path) -> list[Saved]:
    """Create or change every task type the file names, in the caller's
    transaction (the caller commits, or rolls back for a dry run). Raises
    imports.FileError for a file that cannot be read or lacks a required
    column, Refused (the caller rolls back) for any row's problem."""
    rows, _estimate = imports.open_table(path)
    _header_row, headers, buffered = imports.find_header(rows, KIND, {})
    columns, _unmapped = imports.map_columns(KIND, headers, {})
    for f in imports.FIELDS[KIND]:
        if f.required and f.name not in columns:
            raise imports.FileError(N_("No column for %(column)s: name a column %(column)s "
                                       "(`khhf types show revisit` prints a type with every "
                                       "column)."), column=f.label)
    problems: list[RowProblem] = []
    types = _group(itertools.chain(buffered, rows), columns, problems)
    with_rules = "auto_outcomes" in columns
    if not types and not problems:
        raise imports.FileError(N_("The file has a header but no rows to import."))
    saved = []
    for spec in types.values():
        existing = session.scalar(select(TaskType).where(TaskType.code == spec.code))
        try:
            row = campaigns.save_task_type(session, by, ip, existing, **_fields(spec, existing),
                                           rules=spec.rules if with_rules else None)
        except ValidationError as error:
            problems += [_on_row(spec, p) for p in error.problems]
        else:
            saved.append(Saved(row, existing is None))
    if problems:
        raise Refused(sorted(problems, key=lambda p: p.row))
    return saved


def _group(rows, columns, problems) -> dict[str, _Type]:
    """The file's rows as task types, by type code, in the file's order."""
    types: dict[str, _Type] = {}
    labels = {f.name: f.label for f in imports.FIELDS[KIND]}
    for number, row in rows:
        cells = [imports.cell_text(c) for c in row]
        if not any(cells):
            continue
        values = {name: cells[i] if i < len(cells) else "" for name, i in columns.items()}
        code = values["type_code"].strip().lower()
        if not code:
            problems.append(RowProblem(number, "", N_("The type code is empty: write the task "
                                                      "type's code (e.g. revisit) on every "
                                                      "row."), {}))
            continue
        spec = types.setdefault(code, _Type(code, number))
        for name in TYPE_CELLS:
            value = values.get(name, "")
            if not value:
                continue
            given = spec.cells.setdefault(name, (value, number))
            if given[0] != value:
                problems.append(RowProblem(number, code, N_(
                    "%(column)s differs from row %(row)s of the same type: give it once, or "
                    "alike on every row."), {"column": labels[name], "row": given[1]}))
        flags = {name: _yes(values.get(name, ""), labels[name], number, code, problems)
                 for name in CODE_FLAGS}
        entry = {"code": values["code"], "label": values["label"], **flags}
        if entry not in spec.codes:  # a code repeated alike: a further row of its rules
            spec.codes.append(entry)
            spec.code_rows.append(number)
        _rules(spec, number, values, problems)
    for spec in types.values():
        if "kind" in spec.cells:
            raw, row = spec.cells["kind"]
            spec.kind = KIND_WORDS.get(unicodedata.normalize("NFKC", raw).strip().lower())
            if spec.kind is None:
                problems.append(RowProblem(row, spec.code, N_(
                    "%(column)s is %(value)s: write 回访, 营销, 调查 or 其他."),
                    {"column": labels["kind"], "value": raw}))
        if "requires_consent" in spec.cells:
            raw, row = spec.cells["requires_consent"]
            spec.requires_consent = _yes(raw, labels["requires_consent"], row, spec.code,
                                         problems)
    return types


def _yes(raw: str, column: str, row: int, code: str, problems: list[RowProblem]) -> bool:
    """A 是/否 cell as a flag (empty: 否); a problem for anything else."""
    word = unicodedata.normalize("NFKC", raw).strip().lower()
    if word not in YES | NO:
        problems.append(RowProblem(row, code, N_(
            "%(column)s is %(value)s: write 是 or 否 (or leave it empty for 否)."),
            {"column": column, "value": raw}))
    return word in YES


def _rules(spec: _Type, number: int, values: dict, problems: list) -> None:
    """The automatic outcomes a row gives its code."""
    cell = values.get("auto_outcomes", "")
    words = _outcomes_by_word()
    for part in cell.translate({ord(c): " " for c in OUTCOME_SEPARATORS}).split():
        outcome = words.get(_word(part))
        if outcome is None:
            problems.append(RowProblem(number, spec.code, N_(
                "%(column)s names %(value)s, which is not an outcome the system files: write "
                "some of %(choices)s, separated by 、."), {
                    "column": imports.field(KIND, "auto_outcomes").label, "value": part,
                    "choices": "、".join(campaigns.outcome_word(o) for o in UNREACHED_OUTCOMES)}))
            continue
        spec.rules.append({"outcome": outcome, "code": values["code"],
                           **{k: values.get(k, "") for k in RULE_CELLS}})
        spec.rule_rows.append(number)


def _fields(spec: _Type, existing: TaskType | None) -> dict:
    """save_task_type's arguments: the file's cells, else the type's own."""
    def cell(name, current, default):
        if name in spec.cells:
            return spec.cells[name][0]
        return current if existing is not None else default
    return {"code": spec.code,
            "name": cell("type_name", existing and existing.name, ""),
            "max_attempts": cell("max_attempts", existing and existing.max_attempts, 3),
            "description": cell("description", existing and existing.description, ""),
            "script": cell("script", existing and existing.script, ""),
            "kind": spec.kind, "requires_consent": spec.requires_consent,
            "codes": spec.codes}


_TYPE_FIELD = {"code": "type_code", "name": "type_name"}


def _on_row(spec: _Type, problem) -> RowProblem:
    """A problem of save_task_type, on the row it concerns: a result code's
    own row, the row that gave a type cell, else the type's first row."""
    if "entry" in problem.params:
        row = spec.code_rows[problem.params["entry"]]
    elif "rule" in problem.params:
        row = spec.rule_rows[problem.params["rule"]]
    else:
        row = spec.cells.get(_TYPE_FIELD.get(problem.field, problem.field),
                             (None, spec.first_row))[1]
    return RowProblem(row, spec.code, problem.message, problem.params)
