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
list when filed.

The type's own cells (name, attempts, description, script) may be given on
one of its rows or repeated alike on several; left empty, an existing
type keeps its values. A type named by its code is created, or changed to
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

from khhf.models import TaskKind, TaskType, User
from khhf.services import N_, ValidationError, campaigns, imports

KIND = "task_types"
TYPE_CELLS = ("type_name", "max_attempts", "description", "script", "kind", "requires_consent")
CODE_FLAGS = ("is_success", "is_final", "stops_calls")
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
    for i, c in enumerate(sorted(task_type.result_codes, key=lambda c: c.code.zfill(2))):
        rows.append([task_type.code, *(own if i == 0 else [""] * len(own)), c.code, c.label,
                     *(YES_WORD if getattr(c, flag) else NO_WORD for flag in CODE_FLAGS),
                     *(own_last if i == 0 else [])])
    return rows


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
    if not types and not problems:
        raise imports.FileError(N_("The file has a header but no rows to import."))
    saved = []
    for spec in types.values():
        existing = session.scalar(select(TaskType).where(TaskType.code == spec.code))
        try:
            row = campaigns.save_task_type(session, by, ip, existing, **_fields(spec, existing))
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
        spec.codes.append({"code": values["code"], "label": values["label"], **flags})
        spec.code_rows.append(number)
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
    else:
        row = spec.cells.get(_TYPE_FIELD.get(problem.field, problem.field),
                             (None, spec.first_row))[1]
    return RowProblem(row, spec.code, problem.message, problem.params)
