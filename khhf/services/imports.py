"""Import customers, customer managers and task lists from XLSX and CSV.

Files come as users really save them: from Excel or WPS on Chinese
Windows (CSV in GB18030 or UTF-8 with a BOM), Chinese headers with the
usual variants (姓名/客户姓名, 手机/手机号码/联系电话, stray spaces), a title
row above the header, numbers stored as floats (1.3800138001E10) or as
text with spaces, dashes or full-width digits, empty and merged rows.

    report = check(session, "customers", path, Options(county_code="anji"))
    report = run(session, "customers", path, options, commit=True, by=user)
    session.commit()     # the caller's: one transaction, all accepted rows or none

`run` streams: it reads, validates and (when committing) writes the file
in chunks, so a 1,000,000-row file needs neither its rows nor its records
in memory at once; only the rejected rows are kept (to show and to
download). Customers are written with bulk INSERTs (on PostgreSQL, by
COPY from a writer thread, so the server writes while this process reads
the next rows: _CustomerStream); managers through
khhf.services.accounts.create_manager; tasks only through
khhf.services.tasks.new_task.

Messages are msgids marked with N_ (translated by the caller's catalog).
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import decimal
import queue
import re
import threading
import unicodedata
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from sqlalchemy import Connection, String, and_, any_, bindparam, exists, func, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from khhf import audit, numbering
from khhf.models import Campaign, County, Customer, CustomerAssignment, DncEntry, Manager, Task, TaskType, User, utcnow
from khhf.services import N_, ValidationError, accounts, customers, tasks

KINDS = ("customers", "managers", "tasks")
CHUNK = 2000            # rows validated (and written) per round trip
HEADER_SCAN_ROWS = 10   # a header is looked for in the first rows (title rows above it)
REASON_COLUMN = N_("Reason rejected")


class FileError(ValueError):
    """The file cannot be read as a table (or lacks a required column);
    `message` (a msgid) and `params` say why and what to do."""

    report: "Report | None" = None

    def __init__(self, message: str, **params):
        self.message, self.params = message, params
        super().__init__(message % params)


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    label: str          # the template's Chinese header
    aliases: tuple[str, ...]
    required: bool = False


_PHONE = ("手机", "手机号", "手机号码", "移动电话", "联系电话", "电话", "电话号码", "联系方式",
          "客户电话", "客户手机", "客户手机号", "客户手机号码", "客户号码", "用户号码", "号码",
          "服务号码", "phone", "mobile")
_COUNTY = ("县区", "区县", "县区编码", "县区代码", "所属县区", "县区名称", "县", "分公司",
           "county")
_MANAGER = ("客户经理工号", "经理工号", "工号", "客户经理编号", "employee_no", "manager")

FIELDS: dict[str, tuple[Field, ...]] = {
    "customers": (
        Field("phone", "手机号码", _PHONE, required=True),
        Field("name", "客户姓名", ("姓名", "客户姓名", "客户名称", "名称", "客户名", "客户",
                                   "name")),
        Field("county", "县区", _COUNTY),
        Field("manager", "客户经理工号", _MANAGER),
        Field("note", "备注", ("备注", "说明", "note")),
        # consent to marketing calls (task types that require it ring only these)
        Field("consent", "同意营销", ("营销同意", "是否同意营销", "同意营销来电", "consent")),
    ),
    "managers": (
        Field("employee_no", "工号", ("工号", "员工编号", "员工号", "员工工号",
                                    "客户经理工号", "employee_no"), required=True),
        Field("display_name", "姓名", ("姓名", "名字", "客户经理", "客户经理姓名", "员工姓名",
                                     "name", "display_name"), required=True),
        Field("username", "用户名", ("用户名", "登录名", "登录账号", "账号", "username")),
        Field("county", "县区", _COUNTY),
        Field("desk_extension", "座机分机号", ("座机分机号", "座机分机", "分机", "分机号",
                                          "座机", "座机号", "desk_extension")),
        Field("mobile", "手机号码", ("手机", "手机号", "手机号码", "移动电话", "联系电话",
                                    "mobile")),
    ),
    "tasks": (
        Field("phone", "客户手机号码", _PHONE, required=True),
        Field("task_type", "任务类型", ("任务类型", "类型", "任务", "task_type")),
        Field("manager", "客户经理工号", _MANAGER),
    ),
    # the do-not-call register (khhf.services.dnc; all or nothing, as task types)
    "dnc": (
        Field("number", "号码", ("号码", "手机号码", "手机号", "手机", "电话", "电话号码", "联系电话",
                                "客户号码", "用户号码", "number", "phone"), required=True),
        Field("listed_on", "登记日期", ("日期", "登记日期", "加入日期", "listed_on", "date")),
        Field("source", "来源", ("来源", "渠道", "source")),
        Field("reason", "原因", ("原因", "理由", "备注", "说明", "reason")),
    ),
    # one row per result code (khhf.services.task_type_import; not an import
    # job of its own: task types are few and written all or nothing)
    "task_types": (
        Field("type_code", "类型代码", ("任务类型代码", "类型编码", "type_code"), required=True),
        Field("type_name", "类型名称", ("任务类型", "任务类型名称", "type_name")),
        Field("max_attempts", "最多尝试次数", ("尝试次数", "最多拨打次数", "max_attempts")),
        Field("description", "说明", ("类型说明", "description")),
        Field("script", "通话话术", ("话术", "script")),
        Field("code", "结果代码", ("代码", "按键", "code"), required=True),
        Field("label", "结果名称", ("结果", "名称", "label"), required=True),
        Field("is_success", "成功", ("是否成功", "success", "is_success")),
        Field("is_final", "结束", ("是否结束", "final", "is_final")),
        Field("stops_calls", "不再联系", ("加入免打扰", "stops_calls")),
        Field("kind", "类别", ("任务类别", "类型类别", "kind")),
        Field("requires_consent", "需客户同意", ("需同意", "需要同意", "requires_consent")),
        # automatic outcomes (自动结果): the unreached outcomes the system files
        # with this row's code, and the retry rule that goes with them
        Field("auto_outcomes", "自动结果", ("自动结果", "未接通自动结果", "auto_outcomes")),
        Field("retry_minutes", "重拨间隔（分钟）", ("重拨间隔", "重拨间隔分钟", "重拨间隔(分钟)",
                                            "retry_minutes")),
        Field("max_retries", "最多重拨次数", ("最多重拨", "重拨次数", "max_retries")),
        Field("close_code", "结案代码", ("结案结果代码", "close_code")),
    ),
}


# a yes/no cell (empty is no)
YES = frozenset({"是", "y", "yes", "1", "true", "t", "√", "✓", "✔", "对"})
NO = frozenset({"", "否", "n", "no", "0", "false", "f", "×", "✗", "不"})
CONSENT_SOURCE = "文件导入"   # customers.consent_source of consent given in an import


def yes_no(raw: str) -> bool | None:
    """A 是/否 cell as a flag; None when it is neither."""
    word = unicodedata.normalize("NFKC", raw or "").strip().lower()
    return True if word in YES else False if word in NO else None


def field(kind: str, name: str) -> Field:
    return next(f for f in FIELDS[kind] if f.name == name)


@dataclasses.dataclass
class Options:
    """What the file does not say: the default county (its code), the
    campaign of a task list, the user's own column mapping (header -> field
    name, "" to ignore), and the county a supervisor is limited to."""
    county_code: str | None = None
    campaign_id: int | None = None
    mapping: dict[str, str] = dataclasses.field(default_factory=dict)
    only_county_id: int | None = None
    # customers and managers that exist in the row's county are updated, not
    # rejected (the API's upserts: run_records)
    update_existing: bool = False


@dataclasses.dataclass
class Reject:
    row: int                      # as the spreadsheet numbers it (1 = first row)
    cells: list[str]              # the original cells, to download and fix
    problems: list[tuple[str, str, str, dict]]   # (column header, value, msgid, params)


@dataclasses.dataclass
class Report:
    kind: str
    headers: list[str]
    header_row: int
    columns: dict[str, int]        # field name -> column index
    unmapped: list[str]            # headers no field took
    rows: int = 0                  # data rows (empty rows not counted)
    empty_rows: int = 0
    accepted: int = 0
    updated: int = 0               # of the accepted: existing rows updated (update_existing)
    rejects: list[Reject] = dataclasses.field(default_factory=list)
    committed: bool = False
    # managers only: (employee_no, username, initial password) of created accounts
    passwords: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def to_json(self) -> dict:
        return {"kind": self.kind, "headers": self.headers, "header_row": self.header_row,
                "columns": self.columns, "unmapped": self.unmapped, "rows": self.rows,
                "empty_rows": self.empty_rows, "accepted": self.accepted,
                "committed": self.committed,
                "rejects": [[r.row, r.cells, [list(p) for p in r.problems]]
                            for r in self.rejects]}

    @classmethod
    def from_json(cls, data: dict) -> Report:
        report = cls(kind=data["kind"], headers=data["headers"], header_row=data["header_row"],
                     columns=data["columns"], unmapped=data["unmapped"], rows=data["rows"],
                     empty_rows=data["empty_rows"], accepted=data["accepted"],
                     committed=data["committed"])
        report.rejects = [Reject(row, cells, [tuple(p) for p in problems])
                          for row, cells, problems in data["rejects"]]
        return report


# -- reading ------------------------------------------------------------------

_ZIP, _OLE = b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# what people upload by mistake: pictures and PDFs (a short one can look like
# GB18030 text, and would then be read as a CSV without a header)
_NOT_TABLES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"%PDF-")
_NOT_A_TABLE = N_("This is not a spreadsheet or a CSV file; save the list as .xlsx or .csv "
                  "and choose that file.")


def open_table(path: str | Path, reader: str = "calamine") -> tuple[Iterator[list], int]:
    """(rows, estimated row count) of the file's first sheet, or of the CSV.

    Cells are str, int, float, bool or dates as the reader gives them; a
    merged range repeats its top-left value in every cell it covers. Raises
    FileError when the file is not a spreadsheet or a CSV in a known encoding.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as exc:
        raise FileError(N_("The file cannot be opened: %(reason)s."), reason=exc.strerror) from exc
    if not head:
        raise FileError(N_("The file is empty; choose the file with the rows to import."))
    if head.startswith(_NOT_TABLES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        raise FileError(_NOT_A_TABLE)
    if head.startswith(_ZIP) or head.startswith(_OLE):
        if head.startswith(_ZIP) and not _is_workbook_zip(path):
            raise FileError(N_("This is a ZIP archive, not an Excel workbook; save the list "
                               "as .xlsx or .csv and choose that file."))
        return _open_workbook(path, reader)
    return _open_csv(path)


def _is_workbook_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except zipfile.BadZipFile:
        return False
    return "[Content_Types].xml" in names or "mimetype" in names


def _open_workbook(path: Path, reader: str):
    if reader == "openpyxl":
        return _open_openpyxl(path)
    from python_calamine import CalamineWorkbook
    try:
        workbook = CalamineWorkbook.from_path(str(path))
        sheet = workbook.get_sheet_by_index(0)
    except Exception as exc:  # calamine raises its own error types for broken files
        raise FileError(N_("The workbook cannot be read (%(reason)s); open it in Excel or "
                           "WPS, save it again as .xlsx and retry."), reason=str(exc)[:200]) from exc
    first_row = sheet.start[0] if sheet.start else 0
    # a merged range: its top-left cell's value fills the cells it covers
    covered: dict[int, list[tuple[int, tuple[int, int]]]] = {}
    tops_in_row: dict[int, list[tuple[int, int]]] = {}
    for (r0, c0), (r1, c1) in sheet.merged_cell_ranges or ():
        top = (r0 - first_row, c0)
        tops_in_row.setdefault(top[0], []).append(top)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                if (r, c) != (r0, c0):
                    covered.setdefault(r - first_row, []).append((c, top))

    def rows():
        values = {}
        for i, row in enumerate(sheet.iter_rows()):
            for top in tops_in_row.get(i, ()):
                if top[1] < len(row):
                    values[top] = row[top[1]]
            for c, top in covered.get(i, ()):
                if c < len(row) and top in values:
                    row[c] = values[top]
            yield row
    # rows before the sheet's first used row are empty: numbering starts there
    return _numbered(rows(), first_row), sheet.height


def _numbered(rows, offset):
    for i, row in enumerate(rows):
        yield offset + i + 1, row


def _open_openpyxl(path: Path):
    import openpyxl
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:
        raise FileError(N_("The workbook cannot be read (%(reason)s); open it in Excel or "
                           "WPS, save it again as .xlsx and retry."), reason=str(exc)[:200]) from exc
    sheet = workbook.worksheets[0]

    def rows():
        try:
            for row in sheet.iter_rows(values_only=True):
                yield ["" if v is None else v for v in row]
        finally:
            workbook.close()
    return _numbered(rows(), 0), sheet.max_row or 0


def _open_csv(path: Path):
    with open(path, "rb") as f:
        sample = f.read(1 << 16)
    if b"\x00" in sample:
        raise FileError(_NOT_A_TABLE)
    if sample.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif _decodes(path, "utf-8"):
        encoding = "utf-8"
    elif _decodes(path, "gb18030"):
        encoding = "gb18030"  # Excel/WPS "CSV" on Chinese Windows
    else:
        raise FileError(N_("The CSV file is neither UTF-8 nor GB18030 text; save it again "
                           "from Excel or WPS as CSV (UTF-8) and retry."))
    text_sample = sample.decode(encoding, errors="ignore")
    if any(ord(ch) < 32 and ch not in "\r\n\t" for ch in text_sample):
        raise FileError(_NOT_A_TABLE)
    delimiter = max(",\t;", key=lambda d: text_sample.count(d))
    with open(path, "rb") as f:
        estimate = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))

    def rows():
        with open(path, encoding=encoding, newline="") as f:
            for number, row in enumerate(csv.reader(f, delimiter=delimiter), start=1):
                yield number, row
    return rows(), estimate


def _decodes(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def cell_text(value) -> str:
    """A cell as text: a whole float without its '.0', dates in ISO form."""
    if type(value) is str:
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e17:
            return str(int(value))
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return str(value).strip()


def header_key(text_: str) -> str:
    """A header as compared: full-width folded, without spaces, '*' or case."""
    text_ = unicodedata.normalize("NFKC", text_ or "")
    return re.sub(r"[\s*:：()（）]", "", text_).lower()


_SCIENTIFIC = re.compile(r"\d(\.\d+)?[eE]\+?\d+")
_DASHES = str.maketrans("", "", "—–‐－_/")


def phone_number(value: str) -> str:
    """A phone cell as khhf.numbering stores it; raises NumberError.

    Handles full-width digits, dashes and spaces, and numbers that Excel
    turned into floats or scientific notation (1.3800138001E10).
    """
    if numbering.MOBILE.fullmatch(value):
        return value  # the common case, as fast as it can be
    text_ = unicodedata.normalize("NFKC", value or "").translate(_DASHES).strip()
    if _SCIENTIFIC.fullmatch(text_):
        number = decimal.Decimal(text_)
        mantissa = re.sub(r"\D", "", text_.lower().split("e")[0])
        # 1.38001E+10 is what Excel shows of a number too wide for its
        # column: the digits are gone, and guessing them would call a stranger
        if number != number.to_integral_value() or len(mantissa) < len(str(int(number))):
            raise numbering.NumberError(f"{value!r} lost digits in scientific notation")
        text_ = str(int(number))
    elif re.fullmatch(r"\d+\.0+", text_):
        text_ = text_.split(".")[0]
    return numbering.normalise(text_)


def find_header(rows: Iterator, kind: str, mapping: dict[str, str]):
    """(header row number, header cells, buffered rows after it) — the header
    is the first of the first rows that names the most known columns."""
    known = {header_key(a) for f in FIELDS[kind] for a in (f.label, *f.aliases)}
    known |= {header_key(h) for h, target in mapping.items() if target}
    seen = []
    for number, row in rows:
        seen.append((number, row))
        if len(seen) >= HEADER_SCAN_ROWS:
            break
    best, best_score = None, 0
    for i, (_number, row) in enumerate(seen):
        score = sum(1 for c in row if header_key(cell_text(c)) in known)
        if score > best_score:
            best, best_score = i, score
    if best is None:  # nothing recognised: the first row with two or more cells
        best = next((i for i, (_, row) in enumerate(seen)
                     if sum(1 for c in row if cell_text(c)) >= 2), None)
    if best is None:
        raise FileError(N_("No header row found in the first %(count)d rows; put the column "
                           "names (e.g. 手机号码) in one row above the data."),
                        count=HEADER_SCAN_ROWS)
    number, header = seen[best]
    return number, [cell_text(c) for c in header], seen[best + 1:]


def map_columns(kind: str, headers: list[str], mapping: dict[str, str]):
    """(field -> column index, unmapped headers): the user's mapping first,
    then the known names; the first column a field matches wins."""
    names = {f.name for f in FIELDS[kind]}
    by_key: dict[str, str] = {}
    for f in FIELDS[kind]:
        for alias in (f.label, *f.aliases):
            by_key.setdefault(header_key(alias), f.name)
    user = {header_key(h): target for h, target in mapping.items()}
    columns, unmapped = {}, []
    for i, header in enumerate(headers):
        key = header_key(header)
        if not key:
            continue
        target = user[key] if key in user else by_key.get(key)
        if target in names and target not in columns:
            columns[target] = i
        elif header and key not in user:
            unmapped.append(header)
    return columns, unmapped


# -- validating and writing ------------------------------------------------------

class _Lookups:
    """Counties, managers and task types, loaded once per import."""

    def __init__(self, session: Session):
        self.counties = {}
        for c in session.scalars(select(County)):
            self.counties[header_key(c.code)] = c
            self.counties.setdefault(header_key(c.name), c)
        self.managers = {m.employee_no.lower(): m for m in session.scalars(select(Manager))}
        self.managers_by_id = {m.id: m for m in self.managers.values()}
        self.task_types = {}
        for t in session.scalars(select(TaskType)):
            self.task_types[header_key(t.code)] = t
            self.task_types.setdefault(header_key(t.name), t)


def _missing_column(f: Field, unmapped: list[str]) -> FileError:
    """The refusal of a file without column `f`, saying what to do."""
    if f.name == "county":
        # the county may come from the import form or --county instead of a column
        return FileError(N_("No county for these rows: choose the county in the import "
                            "page's County list (on the command line: --county CODE), or "
                            "add a column %(column)s."), column=f.label)
    if not unmapped:
        return FileError(N_("No column for %(column)s: add a column named %(column)s."),
                         column=f.label)
    return FileError(N_("No column for %(column)s: name a column %(column)s, or map one of "
                        "the columns (%(headers)s) to it."),
                     column=f.label, headers="、".join(unmapped))


class _Import:
    """One pass over a file: validates each row, and writes accepted ones."""

    def __init__(self, session, kind, options, commit, by, ip):
        self.session, self.kind, self.options = session, kind, options
        self.commit, self.by, self.ip = commit, by, ip
        self.look = _Lookups(session)
        self.now = utcnow()
        self.seen: dict = {}           # in-file duplicate key -> first row number
        self.default_county = None
        self.campaign = None
        self.max_customer_id = 0
        self.passwords = []
        self.stream = None             # PostgreSQL customers, committing: _CustomerStream

    def prepare(self, report: Report) -> None:
        """File-level checks: the options and the required columns."""
        o = self.options
        if o.county_code:
            self.default_county = self.look.counties.get(header_key(o.county_code))
            if self.default_county is None:
                raise FileError(N_("There is no county %(code)s; use a county code from the "
                                   "counties page."), code=o.county_code)
        if o.only_county_id is not None:
            if self.default_county is None:
                self.default_county = self.session.get(County, o.only_county_id)
            elif self.default_county.id != o.only_county_id:
                raise FileError(N_("You may import for your own county only."))
        if o.campaign_id is not None:
            self.campaign = self.session.get(Campaign, o.campaign_id)
            if self.campaign is None or (o.only_county_id is not None
                                         and self.campaign.county_id != o.only_county_id):
                raise FileError(N_("There is no campaign %(id)s; check its number on the "
                                   "campaigns page."), id=o.campaign_id)
        required = [f for f in FIELDS[self.kind] if f.required]
        if self.kind in ("customers", "managers") and self.default_county is None:
            required.append(field(self.kind, "county"))
        if self.kind == "tasks" and self.campaign is None:
            required.append(field("tasks", "task_type"))
        for f in required:
            if f.name not in report.columns:
                error = _missing_column(f, report.unmapped)
                error.report = report  # its headers, for the page to offer a mapping
                raise error
        if self.kind == "customers":
            self.max_customer_id = self.session.scalar(
                select(func.coalesce(func.max(Customer.id), 0))) or 0
            if self.commit and self.session.get_bind().dialect.name == "postgresql" \
                    and not o.update_existing:  # updates go through the session
                self.stream = _CustomerStream(self.session, self.now,
                                              self.by.id if self.by else None)

    def rows(self, chunk: list[tuple[int, dict[str, str], list[str]]], report: Report) -> None:
        """Validate (and write) one chunk of non-empty rows."""
        getattr(self, f"_{self.kind}")(chunk, report)

    # each kind: validate into records; problems as (field, value, msgid, params)

    def _county(self, values, problems):
        raw = values.get("county", "")
        if not raw:
            county = self.default_county
            if county is None:
                problems.append(("county", raw, N_("The county is missing."), {}))
            return county
        county = self.look.counties.get(header_key(raw))
        if county is None:
            problems.append(("county", raw, N_("Unknown county %(value)s; use a county "
                                              "code or name from the counties page."),
                             {"value": raw}))
        elif self.options.only_county_id is not None and county.id != self.options.only_county_id:
            problems.append(("county", raw, N_("County %(value)s is not yours; you may import "
                                              "for your own county only."), {"value": raw}))
            return None
        return county

    def _manager(self, values, problems, county):
        raw = values.get("manager", "")
        if not raw:
            return None
        manager = self.look.managers.get(raw.lower())
        if manager is None:
            problems.append(("manager", raw, N_("Unknown manager employee number %(value)s."),
                             {"value": raw}))
        elif manager.status != "active":
            problems.append(("manager", raw, N_("Manager %(value)s has departed; name an "
                                               "active manager."), {"value": raw}))
        elif county is not None and manager.county_id != county.id:
            problems.append(("manager", raw, N_("Manager %(value)s works in another county."),
                             {"value": raw}))
        else:
            return manager
        return None

    def _phone(self, values, problems):
        raw = values.get("phone", "")
        if not raw:
            problems.append(("phone", raw, N_("The phone number is missing."), {}))
            return None
        try:
            return phone_number(raw)
        except numbering.NumberError:
            problems.append(("phone", raw, N_("Not a phone number: 11-digit mobile (e.g. "
                                             "13812345678) or fixed line with area code "
                                             "(e.g. 057112345678)."), {}))
            return None

    def _duplicate(self, key, number, fieldname, raw, problems) -> bool:
        first = self.seen.get(key)
        if first is not None:
            problems.append((fieldname, raw, N_("Duplicate of row %(row)d in this file."),
                             {"row": first}))
            return True
        self.seen[key] = number
        return False

    def _customers(self, chunk, report):
        checked = []
        for number, values, cells in chunk:
            problems = []
            phone = self._phone(values, problems)
            if phone is not None:
                self._duplicate(phone, number, "phone", values["phone"], problems)
            name = values.get("name", "")
            if len(name) > 64:
                problems.append(("name", name, N_("The name is longer than 64 characters."), {}))
            county = self._county(values, problems)
            manager = self._manager(values, problems, county)
            consent = yes_no(values.get("consent", ""))
            if consent is None:
                problems.append(("consent", values["consent"], N_(
                    "%(column)s is %(value)s: write 是 or 否 (or leave it empty for 否)."),
                    {"column": field("customers", "consent").label, "value": values["consent"]}))
            checked.append((number, values, cells, problems, {
                "phone": phone, "name": name, "county_id": county.id if county else None,
                "manager_id": manager.id if manager else None, "note": values.get("note", ""),
                "consent": bool(consent), "consent_at": self.now if consent else None,
                "consent_source": CONSENT_SOURCE if consent else "",
                "created_at": self.now, "updated_at": self.now}))
        phones = [r[4]["phone"] for r in checked if not r[3]]
        conn = self.stream.side if self.stream else self.session
        existing = _existing_phones(conn, phones)
        # a number already on the do-not-call register comes in flagged
        listed = _existing_phones(conn, phones, DncEntry.number)
        owned = {c.phone: c for c in self.session.scalars(
            select(Customer).where(Customer.phone.in_(existing)))} \
            if existing and self.options.update_existing else {}
        records = []
        for number, values, cells, problems, record in checked:
            record["do_not_call"] = record["phone"] in listed
            customer = owned.get(record["phone"])
            if customer is not None and customer.county_id == record["county_id"]:
                if self._accept(report, number, cells, problems):
                    report.updated += 1
                    if self.commit:
                        self._update_customer(customer, record)
                continue
            if record["phone"] in existing:
                problems.append(("phone", values["phone"], N_(
                    "Customer %(value)s already exists; edit it on the customers page."),
                    {"value": record["phone"]}))
            if self._accept(report, number, cells, problems):
                records.append(record)
        if self.stream:
            self.stream.write(records)
        elif self.commit and records:
            _insert_customers(self.session.connection(), records)

    def _update_customer(self, customer: Customer, record: dict) -> None:
        """An existing customer, from an upsert's row: what the row gives
        replaces what was stored; a new manager takes the customer over
        (khhf.services.customers.reassign: history, open tasks, audit)."""
        if record["name"]:
            customer.name = record["name"]
        if record["note"]:
            customer.note = record["note"]
        customer.updated_at = self.now
        if record["manager_id"] is not None and record["manager_id"] != customer.manager_id:
            customers.reassign(self.session, self.by, self.ip, customer, record["manager_id"],
                               reason="import")

    def _update_manager(self, manager: Manager, fields: dict, values, problems) -> None:
        """An existing manager, from an upsert's row: its name and phones as
        the row gives them, by the rules of the manager form (checked in a
        savepoint, kept only when committing)."""
        if manager.county_id != fields["county_id"]:
            problems.append(("employee_no", fields["employee_no"], N_(
                "Manager %(value)s works in another county."), {"value": fields["employee_no"]}))
            return
        savepoint = self.session.begin_nested()
        try:
            accounts.update_manager(
                self.session, self.by, self.ip, manager,
                display_name=fields["display_name"] or manager.user.display_name,
                county_id=manager.county_id, employee_no=manager.employee_no,
                desk_extension=fields["desk_extension"] or manager.desk_extension or "",
                mobile=fields["mobile"] or manager.mobile or "", status=manager.status)
        except ValidationError as error:
            savepoint.rollback()
            problems.extend((p.field if p.field in values else "employee_no",
                             values.get(p.field, ""), p.message, p.params)
                            for p in error.problems)
            return
        if self.commit:
            savepoint.commit()
        else:
            savepoint.rollback()

    def _managers(self, chunk, report):
        for number, values, cells in chunk:
            problems = []
            county = self._county(values, problems)
            employee_no = values.get("employee_no", "")
            current = self.look.managers.get(employee_no.lower()) \
                if self.options.update_existing and employee_no else None
            if current is not None:
                fields = {"employee_no": employee_no, "county_id": county.id if county else None,
                          "display_name": values.get("display_name", ""),
                          "desk_extension": values.get("desk_extension", ""),
                          "mobile": values.get("mobile", "")}
                if not self._duplicate(("e", employee_no.lower()), number, "employee_no",
                                       employee_no, problems) and county is not None:
                    self._update_manager(current, fields, values, problems)
                if self._accept(report, number, cells, problems):
                    report.updated += 1
                continue
            username = values.get("username", "") or employee_no.lower()
            fields = {"username": username, "display_name": values.get("display_name", ""),
                      "county_id": county.id if county else None, "employee_no": employee_no,
                      "desk_extension": values.get("desk_extension", ""),
                      "mobile": values.get("mobile", "")}
            if county is not None:
                for p in accounts.check_manager(self.session, **fields):
                    # a user name made from the employee number is that column's problem
                    name = p.field if p.field in columns_of(report) else "employee_no"
                    problems.append((name, values.get(name, ""), p.message, p.params))
            for key, fname in ((("u", username.lower()), "username"),
                               (("e", employee_no.lower()), "employee_no"),
                               (("d", fields["desk_extension"]), "desk_extension")):
                if key[1]:
                    self._duplicate(key, number, fname if fname in values else "employee_no",
                                    values.get(fname, key[1]), problems)
            if self._accept(report, number, cells, problems) and self.commit:
                password = accounts.generate_password()
                manager = accounts.create_manager(self.session, self.by, self.ip,
                                                  password=password, **fields)
                self.look.managers[manager.employee_no.lower()] = manager
                self.passwords.append((manager.employee_no, manager.user.username, password))

    def _tasks(self, chunk, report):  # noqa: C901 - one pass of checks, in the order shown
        checked = []
        for number, values, cells in chunk:
            problems = []
            phone = self._phone(values, problems)
            task_type = self.campaign.task_type if self.campaign else None
            raw_type = values.get("task_type", "")
            if raw_type:
                named = self.look.task_types.get(header_key(raw_type))
                if named is None:
                    problems.append(("task_type", raw_type, N_(
                        "Unknown task type %(value)s; use a code or name from the task "
                        "types page."), {"value": raw_type}))
                elif task_type is not None and named.id != task_type.id:
                    problems.append(("task_type", raw_type, N_(
                        "The campaign's task type is %(expected)s, not %(value)s."),
                        {"expected": task_type.name, "value": raw_type}))
                else:
                    task_type = named
            elif task_type is None:
                problems.append(("task_type", raw_type, N_("The task type is missing."), {}))
            checked.append((number, values, cells, problems, phone, task_type))
        phones = [c[4] for c in checked if c[4]]
        customers = {c.phone: c for c in self.session.scalars(
            select(Customer).where(Customer.phone.in_(phones)))} if phones else {}
        open_pairs = set()
        if customers:
            query = select(Task.customer_id, Task.task_type_id).where(
                Task.customer_id.in_([c.id for c in customers.values()]),
                Task.status.in_(tasks.OPEN))
            if self.campaign is not None:
                query = query.where(Task.campaign_id == self.campaign.id)
            open_pairs = {tuple(row) for row in self.session.execute(query)}
        for number, values, cells, problems, phone, task_type in checked:
            customer = customers.get(phone) if phone else None
            manager = None
            if phone and customer is None:
                problems.append(("phone", values["phone"], N_(
                    "No customer has the number %(value)s; import the customer first."),
                    {"value": phone}))
            elif customer is not None:
                if self.options.only_county_id not in (None, customer.county_id):
                    problems.append(("phone", values["phone"], N_(
                        "No customer has the number %(value)s; import the customer first."),
                        {"value": phone}))
                elif self.campaign is not None and customer.county_id != self.campaign.county_id:
                    problems.append(("phone", values["phone"], N_(
                        "The customer belongs to another county than the campaign."), {}))
                if customer.do_not_call:
                    problems.append(("phone", values["phone"], N_(
                        "The customer asked not to be called (do-not-call)."), {}))
                county = self.session.get(County, customer.county_id)
                manager = self._manager(values, problems, county) if values.get("manager") \
                    else None
                if manager is None and not values.get("manager") and customer.manager_id:
                    # no manager named: the customer's own, if still active
                    manager = self.look.managers_by_id.get(customer.manager_id)
                    if manager is not None and manager.status != "active":
                        manager = None
                if task_type is not None:
                    if self._duplicate((customer.id, task_type.id), number, "phone",
                                       values["phone"], problems):
                        pass
                    elif (customer.id, task_type.id) in open_pairs:
                        problems.append(("phone", values["phone"], N_(
                            "The customer already has an open %(type)s task."),
                            {"type": task_type.name}))
            if self._accept(report, number, cells, problems) and self.commit:
                tasks.new_task(self.session, task_type_id=task_type.id, customer_id=customer.id,
                               manager_id=manager.id if manager else None,
                               max_attempts=task_type.max_attempts,
                               campaign_id=self.campaign.id if self.campaign else None,
                               flush=False)
        if self.commit:
            self.session.flush()

    def _accept(self, report, number, cells, problems) -> bool:
        if problems:
            labels = {f.name: f.label for f in FIELDS[self.kind]}
            headers = report.headers
            report.rejects.append(Reject(number, cells, [
                (headers[report.columns[f]] if f in report.columns else labels.get(f, f),
                 value, message, params) for f, value, message, params in problems]))
            return False
        report.accepted += 1
        return True

    def finish(self, report: Report, filename: str) -> None:
        """After the last chunk: customers' assignments, and one audit entry."""
        if not self.commit:
            return
        if self.stream:
            self.stream.close()
        elif self.kind == "customers" and report.accepted:
            # one statement: every imported customer with a manager gets its
            # open assignment (the hand-over and the history read them)
            ca = CustomerAssignment.__table__
            c = Customer.__table__
            rows = select(c.c.id, c.c.manager_id, text(":now"), text("'import'"),
                          text(":by")).where(
                c.c.id > self.max_customer_id, c.c.created_at == self.now,
                c.c.manager_id.is_not(None),
                ~exists().where(and_(ca.c.customer_id == c.c.id, ca.c.ended_at.is_(None))))
            self.session.execute(
                insert(ca).from_select(["customer_id", "manager_id", "assigned_at", "reason",
                                        "assigned_by"], rows),
                {"now": self.now, "by": self.by.id if self.by else None})
        audit.record(self.session, self.by, "import", "", "",
                     {"kind": self.kind, "file": filename, "rows": report.rows,
                      "imported": report.accepted, "rejected": report.rejected}, self.ip)
        report.committed = True
        report.passwords = self.passwords

    def abandon(self) -> None:
        """The import stopped before finish(): end what it holds open."""
        if self.stream:
            self.stream.abandon()


class _CustomerStream:
    """PostgreSQL, committing customers: the server writes while this
    process reads.

    The import's connection belongs to a writer thread, which takes the
    accepted rows in batches of BATCH and writes each by two COPYs: the
    customers, then their open assignments. Only the driver connection
    crosses threads, never the Session, and never both at once: the
    reading thread touches neither until close() (or abandon()) has joined
    the writer. The server checks each COPY's foreign keys at its end, and
    the assignments' COPY costs as much again;
    done in turn with the reading (one COPY per chunk, then one INSERT ...
    SELECT of the assignments) a 1,000,000-row XLSX file took 65 s, of which
    the server worked alone for about half; with this thread, 39-44 s.
    While the writer waits for the server it holds no lock on Python, so
    the reading goes on.

    The reading thread asks the database, on a second connection outside
    the transaction, what each chunk needs: which phone numbers are
    customers already (committed ones; the file's own repeats are caught
    in memory), and the chunk's ids, taken from the table's sequence, so
    the assignments are known without reading the customers back. The
    first failure of the writer is raised in the reading thread at its next
    chunk (or at close), and the caller's rollback then writes nothing."""

    BATCH = 50_000

    def __init__(self, session: Session, now, by_id: int | None):
        self.stamp, self.by_id = _stamp(now), by_id  # the same for every row: formatted once
        driver = session.connection().connection.driver_connection
        if driver is None:  # only after the connection was invalidated
            raise RuntimeError("the import's database connection was lost before it began")
        self.driver = driver
        self.side = session.get_bind().engine.connect()  # the reading thread's questions
        self.pending: list[tuple] = []
        self.batches: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.writer = threading.Thread(target=self._write_batches, name="import-writer",
                                       daemon=True)
        self.writer.start()

    def write(self, records: list[dict]) -> None:
        if self.error is not None:
            self._raise()
        if not records:
            return
        ids = self.side.scalars(text("SELECT nextval(pg_get_serial_sequence('customers', 'id')) "
                                     "FROM generate_series(1, :n)"), {"n": len(records)})
        self.pending.extend((id_, *(r[c] for c in _CUSTOMER_COLUMNS[:-2]))
                            for id_, r in zip(ids, records))
        if len(self.pending) >= self.BATCH:
            self._hand_over()

    def close(self) -> None:
        """Write what is left, wait for the writer, raise its error if any."""
        try:
            if self.pending:
                self._hand_over()
            self._hand_over_end()
            if self.error is not None:
                self._raise()
        finally:
            self._close_side()

    def abandon(self) -> None:
        self.pending = []
        self._hand_over_end()
        self._close_side()

    def _hand_over(self) -> None:
        batch, self.pending = self.pending, []
        while self.error is None:  # a writer that failed takes no more
            try:
                self.batches.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue
        self._raise()

    def _hand_over_end(self) -> None:
        while self.writer.is_alive():
            try:
                self.batches.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self.writer.join()

    def _raise(self):
        """The writer's failure, in the reading thread. One case has a
        message of its own: the duplicate check sees committed customers
        only, so another import committing the same new numbers meanwhile
        shows up here, as the unique index refusing them."""
        diag = getattr(self.error, "diag", None)
        if (diag is not None and diag.table_name == "customers"
                and diag.sqlstate == "23505"):  # unique_violation
            raise FileError(N_("Another import added some of these customers while this one "
                               "ran, so nothing was imported. Check the file again: those "
                               "rows will be shown as existing.")) from self.error
        raise self.error

    def _write_batches(self) -> None:
        with self.driver.cursor() as cursor:
            while (batch := self.batches.get()) is not None:
                if self.error is not None:
                    continue  # drained, not written: the transaction is lost anyway
                try:
                    self._write(cursor, batch)
                except BaseException as error:  # noqa: BLE001 - raised in the reading thread
                    self.error = error

    def _write(self, cursor, batch: list[tuple]) -> None:
        with cursor.copy(f"COPY customers (id, {', '.join(_CUSTOMER_COLUMNS)}) "
                         "FROM STDIN") as copy:
            write, stamp = copy.write_row, self.stamp
            for row in batch:
                write((*row, stamp, stamp))
        with cursor.copy("COPY customer_assignments (customer_id, manager_id, assigned_at, "
                         "reason, assigned_by) FROM STDIN") as copy:
            write, stamp, by_id = copy.write_row, self.stamp, self.by_id
            for row in batch:
                id_, manager_id = row[0], row[_MANAGER_AT]
                if manager_id is not None:
                    write((id_, manager_id, stamp, "import", by_id))

    def _close_side(self) -> None:
        self.side.close()  # closing it again does nothing


def _stamp(moment) -> str:
    """A naive UTC timestamp as the databases read it from text."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _existing_phones(conn: Session | Connection, phones: list[str],
                     column=Customer.phone) -> set[str]:
    """Which of `phones` are customers already (`column`: on the
    do-not-call register, DncEntry.number), asked through the import's
    session or (PostgreSQL, committing) _CustomerStream's second connection.
    PostgreSQL gets one array parameter (= ANY): planning an IN list of
    2,000 parameters took longer than running it."""
    if not phones:
        return set()
    dialect = conn.get_bind().dialect if isinstance(conn, Session) else conn.dialect
    if dialect.name == "postgresql":
        condition = column == any_(bindparam("phones", phones, type_=ARRAY(String)))
    else:
        condition = column.in_(phones)
    return set(conn.scalars(select(column).where(condition)))


_CUSTOMER_COLUMNS = ("phone", "name", "county_id", "manager_id", "note", "do_not_call",
                     "consent", "consent_at", "consent_source", "created_at", "updated_at")
_MANAGER_AT = 1 + _CUSTOMER_COLUMNS.index("manager_id")   # in a _CustomerStream row (id first)


def _insert_customers(conn, records: list[dict]) -> None:
    """The chunk's customers, in the import's transaction (PostgreSQL's go
    by _CustomerStream instead): SQLite by one executemany straight to the
    driver, the timestamp as the text SQLAlchemy itself stores. (The ORM's
    bulk path ran one INSERT per row: 8x slower.)"""
    if conn.dialect.name != "sqlite":
        conn.execute(insert(Customer.__table__), records)
        return
    sql = (f"INSERT INTO customers ({', '.join(_CUSTOMER_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_CUSTOMER_COLUMNS))})")
    stamp = _stamp(records[0]["created_at"])
    conn.exec_driver_sql(sql, [(*(r[c] for c in _CUSTOMER_COLUMNS[:4]), r["note"],
                                int(r["do_not_call"]), int(r["consent"]),
                                stamp if r["consent_at"] else None, r["consent_source"],
                                stamp, stamp) for r in records])


def columns_of(report: Report) -> set[str]:
    return set(report.columns)


def run(session: Session, kind: str, path: str | Path, options: Options | None = None, *,
        commit: bool = False, by: User | None = None, ip: str = "",
        filename: str | None = None, reader: str = "calamine",
        progress: Callable[[int, int], None] | None = None) -> Report:
    """Read, validate and (with `commit`) write the file's rows in the
    caller's transaction; the caller commits, or rolls back on any error.

    Raises FileError for a file that cannot be read or lacks a required
    column. `progress(done, total)` is called after every chunk.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    options = options or Options()
    rows, estimate = open_table(path, reader)
    header_row, headers, buffered = find_header(rows, kind, options.mapping)
    columns, unmapped = map_columns(kind, headers, options.mapping)
    report = Report(kind, headers, header_row, columns, unmapped)
    job = _Import(session, kind, options, commit, by, ip)
    job.prepare(report)
    try:
        _read(job, report, rows, buffered, columns, max(estimate - header_row, 0), progress,
              filename or Path(path).name)
    except BaseException:
        job.abandon()
        raise
    return report


def run_records(session: Session, kind: str, records: list[dict], options: Options, *,
                commit: bool = False, by: User | None = None, ip: str = "",
                source: str = "api") -> Report:
    """Like `run`, for rows given as {field name: value} (the API's batches):
    the same rules, the same reasons, one report. A row's number is its
    place in `records`, from 1."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    names = [f.name for f in FIELDS[kind]]
    report = Report(kind, names, 0, {name: i for i, name in enumerate(names)}, [])
    job = _Import(session, kind, options, commit, by, ip)
    job.prepare(report)
    try:
        chunk = []
        for number, record in enumerate(records, start=1):
            cells = [cell_text(record.get(name)) for name in names]
            chunk.append((number, dict(zip(names, cells)), cells))
            report.rows += 1
            if len(chunk) >= CHUNK:
                job.rows(chunk, report)
                chunk = []
        if chunk:
            job.rows(chunk, report)
        job.finish(report, source)
    except BaseException:
        job.abandon()
        raise
    return report


def _read(job, report, rows, buffered, columns, total, progress, filename) -> None:
    chunk = []
    for number, row in _chain(buffered, rows):
        cells = [cell_text(c) for c in row]
        if not any(cells):
            report.empty_rows += 1
            continue
        values = {name: cells[i] if i < len(cells) else "" for name, i in columns.items()}
        chunk.append((number, values, cells))
        report.rows += 1
        if len(chunk) >= CHUNK:
            job.rows(chunk, report)
            chunk = []
            if progress:
                progress(report.rows + report.empty_rows, total)
    if chunk:
        job.rows(chunk, report)
    if report.rows == 0:
        raise FileError(N_("The file has a header but no rows to import."))
    job.finish(report, filename)
    if progress:
        progress(total, total)


def check(session: Session, kind: str, path, options: Options | None = None, **kwargs) -> Report:
    """A dry run: what `run(..., commit=True)` would import and reject."""
    return run(session, kind, path, options, commit=False, **kwargs)


def _chain(buffered, rows) -> Iterable:
    yield from buffered
    yield from rows


# -- spreadsheets to download ---------------------------------------------------------

def write_rejects(report: Report, out, translate: Callable[[str, dict], str]) -> None:
    """The rejected rows as XLSX: the file's columns as they were, and a
    reason column; fix them and import this file again."""
    import openpyxl
    workbook = openpyxl.Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append([*report.headers, translate(REASON_COLUMN, {})])
    width = len(report.headers)
    for reject in report.rejects:
        reasons = "；".join(f"{column}: {translate(message, params)}"
                           for column, _value, message, params in reject.problems)
        cells = (reject.cells + [""] * width)[:width]
        sheet.append([*cells, reasons])
    workbook.save(out)


def write_template(kind: str, out) -> None:
    """An empty workbook with the kind's Chinese headers (text-formatted, so
    Excel keeps phone numbers whole)."""
    import openpyxl
    from openpyxl.styles import Font
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = {"customers": "客户", "managers": "客户经理", "tasks": "任务"}[kind]
    for i, f in enumerate(FIELDS[kind], start=1):
        cell = sheet.cell(row=1, column=i, value=f.label)
        cell.font = Font(bold=True)
        letter = cell.column_letter
        sheet.column_dimensions[letter].width = 18
        for row in range(2, 1002):
            sheet.cell(row=row, column=i).number_format = "@"
    workbook.save(out)
