"""SQLAlchemy 2.x models: the truth about the database schema's shape.

A new database is made from them; an existing one is brought to them by the
revisions in khhf/migrations (tests/test_migrations.py proves a baseline
database upgraded to head has exactly their shape, on SQLite and
PostgreSQL). schema.sql is generated from them (`khhf db schema`), each
table's docstring its comment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from sqlalchemy import (
    REAL,
    TIMESTAMP,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    false,
    func,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from khhf.calls.states import UNREACHED_OUTCOMES, CallState, RecordingStatus

ROLES = ("admin", "manager", "supervisor")


def utcnow() -> dt.datetime:
    """Naive UTC now: every timestamp in the database is UTC without zone."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    if TYPE_CHECKING:
        # every model maps a Table (SQLAlchemy types __table__ as any FromClause)
        __table__: ClassVar[Table]


def sql_list(values: Iterable[str]) -> str:
    """'a', 'b': a vocabulary's values for an SQL IN (...) (they are code, not input)."""
    return ", ".join(f"'{v}'" for v in values)


def one_of(column: str, values: Iterable[str], name: str | None = None) -> CheckConstraint:
    """CHECK (column IN (...)): a coded column's values, from its vocabulary."""
    return CheckConstraint(f"{column} IN ({sql_list(values)})", name=name)


def _id():
    # the surrogate key: SQLite's rowid alias, an identity column on PostgreSQL
    return mapped_column(Integer, Identity(), primary_key=True)


def _flag(default: bool):
    # the database's default as a boolean expression (SQLite: 0/1, PostgreSQL:
    # false/true); a string default would be the text 'false' on SQLite, which
    # rows inserted without the column keep and which reads as True
    return mapped_column(Boolean, default=default, server_default=true() if default else false())


def _created():
    return mapped_column(TIMESTAMP, nullable=False, default=utcnow,
                         server_default=func.current_timestamp())


class County(Base):
    """A county branch (县区) and its unified numbers (统一号码)."""
    __tablename__ = "counties"
    __table_args__ = (CheckConstraint("fallback_strategy IN ('ringall', 'hunt')"),)
    id: Mapped[int] = _id()
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    fallback_strategy: Mapped[str] = mapped_column(String(16), default="ringall",
                                                   server_default="ringall")
    created_at: Mapped[dt.datetime] = _created()

    unified_numbers: Mapped[list[UnifiedNumber]] = relationship(
        back_populates="county", cascade="all, delete-orphan")

    @property
    def primary_number(self) -> str | None:
        """The county's published number (the hotline number printed for
        customers), or None if it has none. Outbound calls choose among all
        the county's numbers (khhf.services.number_pool)."""
        for n in self.unified_numbers:
            if n.is_primary:
                return n.number
        return self.unified_numbers[0].number if self.unified_numbers else None


class NumberState(StrEnum):
    """Where a unified number is in its county's pool (统一号码池)."""
    ACTIVE = "active"      # 在用: outbound calls may show it
    RESTING = "resting"    # 休息: no new outbound calls; the hotline still answers it
    RETIRED = "retired"    # 停用: given up for outbound calls; the hotline still answers it


class UnifiedNumber(Base):
    """A county's unified number (统一号码), one of its pool: outbound calls
    show one chosen by rule (khhf.services.number_pool), within its caps (0:
    no cap) while active; every number routes the hotline, whatever its
    state. At most one per county is primary: the published number."""
    __tablename__ = "unified_numbers"
    __table_args__ = (
        CheckConstraint("length(number) = 11"),
        one_of("state", NumberState, name="ck_unified_numbers_state"),
        CheckConstraint("daily_cap >= 0 AND hourly_cap >= 0 AND concurrent_cap >= 0",
                        name="ck_unified_numbers_caps"),
        Index("ix_unified_numbers_county", "county_id"),
        Index("ux_unified_numbers_primary", "county_id", unique=True,
              sqlite_where=text("is_primary"), postgresql_where=text("is_primary")),
    )
    id: Mapped[int] = _id()
    county_id: Mapped[int] = mapped_column(ForeignKey("counties.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(11), unique=True)
    is_primary: Mapped[bool] = _flag(False)
    state: Mapped[str] = mapped_column(String(8), default=NumberState.ACTIVE,
                                       server_default=NumberState.ACTIVE)
    # outbound calls showing it per local day, per rolling hour, at once; 0: no cap
    daily_cap: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    hourly_cap: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    concurrent_cap: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # the last outbound call that showed it was requested (the pool's tie-break)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)

    county: Mapped[County] = relationship(back_populates="unified_numbers")


class User(Base):
    """Everyone who logs in: administrators, customer managers, county
    supervisors. county_id is NULL only for administrators, who see every
    county; a log-in is valid while its session carries session_epoch."""
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'manager', 'supervisor')"),
        CheckConstraint("role = 'admin' OR county_id IS NOT NULL"),
        Index("ix_users_county_role", "county_id", "role"),
    )
    id: Mapped[int] = _id()
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    county_id: Mapped[int | None] = mapped_column(ForeignKey("counties.id"))
    is_active: Mapped[bool] = _flag(True)
    created_at: Mapped[dt.datetime] = _created()
    last_login_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # a supervisor's desk phone (the live view's listen-in rings it)
    desk_extension: Mapped[str | None] = mapped_column(String(16), unique=True)

    county: Mapped[County | None] = relationship()
    manager: Mapped[Manager | None] = relationship(back_populates="user",
                                                   foreign_keys="Manager.user_id")

    # the log-in protocol the web UI's Flask-Login expects (is_active is the column)
    is_authenticated = True
    is_anonymous = False

    def get_id(self) -> str:
        return str(self.id)

    def end_sessions(self) -> None:
        """End every log-in of this user, on every device: a session is
        valid only while it carries the current session_epoch (webui)."""
        self.session_epoch = (self.session_epoch or 0) + 1


@event.listens_for(User.is_active, "set")
def _deactivation_ends_sessions(user, value, old, _initiator):
    # whoever disables an account (an administrator, a manager's departure)
    # also ends its sessions, so enabling it again does not revive them
    if not value and old is not False:
        user.end_sessions()


class Manager(Base):
    """A customer manager (客户经理): the telephony side of a 'manager' user.
    One person per mobile: the hotline rings it and SMS replies from it are
    matched to it."""
    __tablename__ = "managers"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'departed')"),
        CheckConstraint("status = 'active' OR departed_at IS NOT NULL"),
        Index("ix_managers_county_status", "county_id", "status", "on_duty"),
    )
    id: Mapped[int] = _id()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    county_id: Mapped[int] = mapped_column(ForeignKey("counties.id"))
    employee_no: Mapped[str] = mapped_column(String(32), unique=True)
    desk_extension: Mapped[str | None] = mapped_column(String(16), unique=True)
    mobile: Mapped[str | None] = mapped_column(String(20), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    on_duty: Mapped[bool] = _flag(False)
    departed_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    successor_id: Mapped[int | None] = mapped_column(ForeignKey("managers.id"))

    user: Mapped[User] = relationship(back_populates="manager", foreign_keys=[user_id])
    county: Mapped[County] = relationship()
    successor: Mapped[Manager | None] = relationship(remote_side=[id])


class RoutingGeneration(Base):
    """One row: a counter raised, in the same transaction, by every change to
    what the hotline routes by besides the customer row (a manager's county,
    desk, mobile, status or duty; a county's fallback strategy), through the
    triggers ROUTING_TRIGGERS, whichever process or tool writes. The AGI
    service keeps managers and counties in memory and reads this counter
    with the caller's customer row on every call (khhf.services.hotline)."""
    __tablename__ = "routing_generation"
    __table_args__ = (CheckConstraint("id = 1"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


# the columns of each table the hotline's in-memory directory copies
ROUTING_COLUMNS = {
    "managers": ("county_id", "desk_extension", "mobile", "status", "on_duty"),
    "counties": ("fallback_strategy",),
}
_BUMP = "UPDATE routing_generation SET generation = generation + 1"


def routing_triggers(dialect: str) -> list[str]:
    """The DDL of the triggers that raise routing_generation, for `dialect`
    ('sqlite' or 'postgresql'). Revision 0010 holds a frozen copy: a change
    here needs a revision. A table copied by SQLite's batch mode loses its
    triggers: a revision that copies managers or counties restores them."""
    out = []
    if dialect == "postgresql":
        out.append("CREATE OR REPLACE FUNCTION khhf_routing_changed() RETURNS trigger "
                   f"LANGUAGE plpgsql AS $$ BEGIN {_BUMP}; RETURN NULL; END $$")
    for table, columns in ROUTING_COLUMNS.items():
        if dialect == "postgresql":
            out.append(f"CREATE TRIGGER tr_{table}_routing AFTER INSERT OR DELETE OR UPDATE OF "
                       f"{', '.join(columns)} ON {table} FOR EACH STATEMENT "
                       "EXECUTE FUNCTION khhf_routing_changed()")
            continue
        for name, when in (("ins", "INSERT"), ("del", "DELETE"),
                           ("upd", f"UPDATE OF {', '.join(columns)}")):
            out.append(f"CREATE TRIGGER tr_{table}_routing_{name} AFTER {when} ON {table} "
                       f"BEGIN {_BUMP}; END")
    return out


def routing_trigger_names(dialect: str) -> set[str]:
    """The names routing_triggers(dialect) creates."""
    return {ddl.split()[2] for ddl in routing_triggers(dialect) if ddl.startswith("CREATE TRIGGER")}


@event.listens_for(Base.metadata, "after_create")
def _routing_generation(target, connection, tables=(), **_kw):
    # a new database: the one counter row, and the triggers that raise it
    if "routing_generation" not in {t.name for t in tables}:
        return
    connection.exec_driver_sql("INSERT INTO routing_generation (id, generation) VALUES (1, 0)")
    for ddl in routing_triggers(connection.dialect.name):
        connection.exec_driver_sql(ddl)


class Customer(Base):
    """A customer, by normalised phone number, owned by a manager."""
    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_manager", "manager_id"),
        Index("ix_customers_county", "county_id"),
    )
    id: Mapped[int] = _id()
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="", server_default="")
    county_id: Mapped[int] = mapped_column(ForeignKey("counties.id"))
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("managers.id"))
    # mirrors the do-not-call register (dnc_entries) for this number:
    # khhf.services.dnc keeps the two in step
    do_not_call: Mapped[bool] = _flag(False)
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(
        TIMESTAMP, default=utcnow, onupdate=utcnow, server_default=func.current_timestamp())
    # consent to marketing calls (营销同意): when given and where it was recorded
    consent: Mapped[bool] = _flag(False)
    consent_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    consent_source: Mapped[str] = mapped_column(String(64), default="", server_default="")

    county: Mapped[County] = relationship()
    manager: Mapped[Manager | None] = relationship()


class DncChannel(StrEnum):
    """How an entry reached the do-not-call register (dnc_entries.channel)."""
    IMPORT = "import"    # a file (`khhf dnc import`, the admin page)
    RESULT = "result"    # a result code flagged 不再联系 was filed for the customer
    MANUAL = "manual"    # a user, one number at a time (admin page, customer page)


class DncEntry(Base):
    """The do-not-call register (免打扰名单): a number no outbound call may
    ring, with the date it was listed, its source (where the request came
    from, e.g. 12321 complaint), how it was entered, who added it and why.
    khhf.services.dial_rules refuses these numbers before any INVITE."""
    __tablename__ = "dnc_entries"
    __table_args__ = (one_of("channel", DncChannel, name="ck_dnc_entries_channel"),)
    id: Mapped[int] = _id()
    number: Mapped[str] = mapped_column(String(20), unique=True)
    listed_on: Mapped[dt.date] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(64), default="", server_default="")
    channel: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    added_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = _created()

    adder: Mapped[User | None] = relationship()


# why a customer has the manager they have (customer_assignments.reason):
# a file import, a supervisor's reassignment, a departed manager's handover
ASSIGNMENT_REASONS = ("import", "reassign", "departure")


class CustomerAssignment(Base):
    """Who owned a customer when: kept for hand-overs when managers leave."""
    __tablename__ = "customer_assignments"
    __table_args__ = (
        Index("ix_customer_assignments_customer", "customer_id", "assigned_at"),
        Index("ix_customer_assignments_manager", "manager_id"),
        Index("ux_customer_assignments_open", "customer_id", unique=True,
              sqlite_where=text("ended_at IS NULL"),
              postgresql_where=text("ended_at IS NULL")),
    )
    id: Mapped[int] = _id()
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    manager_id: Mapped[int] = mapped_column(ForeignKey("managers.id"))
    assigned_at: Mapped[dt.datetime] = _created()
    ended_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    reason: Mapped[str] = mapped_column(String(32), default="import", server_default="import")
    assigned_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class TaskKind(StrEnum):
    """What a task type is for (task_types.kind): the calling rules differ
    (a marketing type may require the customer's consent, a return visit
    may not)."""
    REVISIT = "revisit"      # 回访
    MARKETING = "marketing"  # 营销
    SURVEY = "survey"        # 调查
    OTHER = "other"


class TaskType(Base):
    """Return visit (回访), marketing (营销), survey (调查), ... each with its
    result codes and the short call script shown next to the task.
    requires_consent: its calls ring only customers who consented."""
    __tablename__ = "task_types"
    __table_args__ = (
        CheckConstraint("max_attempts > 0"),
        one_of("kind", TaskKind, name="ck_task_types_kind"),
        CheckConstraint("kind != 'revisit' OR NOT requires_consent",
                        name="ck_task_types_revisit_consent"),
    )
    id: Mapped[int] = _id()
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    script: Mapped[str] = mapped_column(Text, default="", server_default="")
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    kind: Mapped[str] = mapped_column(String(16), default=TaskKind.REVISIT,
                                      server_default=TaskKind.REVISIT)
    requires_consent: Mapped[bool] = _flag(False)

    result_codes: Mapped[list[ResultCode]] = relationship(
        back_populates="task_type", cascade="all, delete-orphan", order_by="ResultCode.code")
    outcome_rules: Mapped[list[OutcomeRule]] = relationship(
        cascade="all, delete-orphan", order_by="OutcomeRule.id")


class ResultCode(Base):
    """A result code a manager files; 'code' is what is typed by SMS or
    keypad; a final one closes the task; one that stops calls (不再联系)
    puts the customer's number on the do-not-call register when filed."""
    __tablename__ = "result_codes"
    __table_args__ = (UniqueConstraint("task_type_id", "code"),)
    id: Mapped[int] = _id()
    task_type_id: Mapped[int] = mapped_column(ForeignKey("task_types.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(4))
    label: Mapped[str] = mapped_column(String(64))
    is_success: Mapped[bool] = _flag(False)
    is_final: Mapped[bool] = _flag(True)
    stops_calls: Mapped[bool] = _flag(False)

    task_type: Mapped[TaskType] = relationship(back_populates="result_codes")


class OutcomeRule(Base):
    """An automatic outcome (自动结果): when a call of the task type ends
    with `outcome` (the customer not reached), the system files
    `result_code` itself; a "try again" code makes the task due again
    `retry_minutes` later, at most `max_retries` times for this outcome,
    after which it files `close_code` (final) instead."""
    __tablename__ = "outcome_rules"
    __table_args__ = (
        UniqueConstraint("task_type_id", "outcome", name="uq_outcome_rules_type_outcome"),
        one_of("outcome", UNREACHED_OUTCOMES, name="ck_outcome_rules_outcome"),
        CheckConstraint("retry_minutes >= 0", name="ck_outcome_rules_retry_minutes"),
        CheckConstraint("max_retries >= 0", name="ck_outcome_rules_max_retries"),
    )
    id: Mapped[int] = _id()
    task_type_id: Mapped[int] = mapped_column(ForeignKey("task_types.id", ondelete="CASCADE"))
    outcome: Mapped[str] = mapped_column(String(16))
    result_code_id: Mapped[int] = mapped_column(ForeignKey("result_codes.id",
                                                           ondelete="CASCADE"))
    retry_minutes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    close_code_id: Mapped[int | None] = mapped_column(ForeignKey("result_codes.id",
                                                                 ondelete="SET NULL"))

    result_code: Mapped[ResultCode] = relationship(foreign_keys=[result_code_id])
    close_code: Mapped[ResultCode | None] = relationship(foreign_keys=[close_code_id])


class Campaign(Base):
    """A batch of tasks (批次), optionally repeating in cycles (rounds);
    `selection` says which customers each round calls."""
    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint("cycle IN ('once', 'weekly', 'monthly', 'quarterly')"),
        CheckConstraint("status IN ('draft', 'active', 'closed')"),
        CheckConstraint("selection IN ('county', 'managers', 'list')"),
        CheckConstraint("ends_on IS NULL OR ends_on >= starts_on"),
        Index("ix_campaigns_county_status", "county_id", "status"),
    )
    id: Mapped[int] = _id()
    county_id: Mapped[int] = mapped_column(ForeignKey("counties.id"))
    task_type_id: Mapped[int] = mapped_column(ForeignKey("task_types.id"))
    name: Mapped[str] = mapped_column(String(128))
    cycle: Mapped[str] = mapped_column(String(16), default="once", server_default="once")
    status: Mapped[str] = mapped_column(String(16), default="draft", server_default="draft")
    starts_on: Mapped[dt.date] = mapped_column(Date)
    ends_on: Mapped[dt.date | None] = mapped_column(Date)
    selection: Mapped[str] = mapped_column(String(16), default="county",
                                           server_default="county")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = _created()

    county: Mapped[County] = relationship()
    task_type: Mapped[TaskType] = relationship()
    managers: Mapped[list[Manager]] = relationship(secondary="campaign_managers")


class CampaignManager(Base):
    """A manager whose customers a 'managers' campaign calls."""
    __tablename__ = "campaign_managers"
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    manager_id: Mapped[int] = mapped_column(ForeignKey("managers.id"), primary_key=True)


class CampaignCycle(Base):
    """One round of a repeating campaign."""
    __tablename__ = "campaign_cycles"
    __table_args__ = (
        UniqueConstraint("campaign_id", "seq"),
        CheckConstraint("seq > 0"),
        CheckConstraint("ends_on >= starts_on"),
    )
    id: Mapped[int] = _id()
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    starts_on: Mapped[dt.date] = mapped_column(Date)
    ends_on: Mapped[dt.date] = mapped_column(Date)


class DistributionRun(Base):
    """A distribution too large for one transaction (khhf.services.distribution):
    its moves, decided at once, are kept here and written in chunks, each
    chunk and `applied` in one transaction, so a run that stopped is resumed
    from where it stopped and each move is written exactly once. Unfinished
    (finished_at NULL): the campaign shows it in progress and takes no other
    distribution; at most one per campaign."""
    __tablename__ = "distribution_runs"
    __table_args__ = (
        CheckConstraint("applied >= 0 AND applied <= total"),
        Index("ux_distribution_runs_unfinished", "campaign_id", unique=True,
              sqlite_where=text("finished_at IS NULL"),
              postgresql_where=text("finished_at IS NULL")),
    )
    id: Mapped[int] = _id()
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer)     # moves planned
    applied: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    moved: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # every move, in task order: (task, new manager, manager when planned) as
    # packed 32-bit integers, zlib-compressed; the first `applied` are written.
    # NULL once finished
    moves: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(
        TIMESTAMP, default=utcnow, onupdate=utcnow, server_default=func.current_timestamp())
    finished_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)


class TaskStatus(StrEnum):
    """Where a task is; it moves only through the task state machine
    (khhf.services.tasks), which says what each one means."""
    PENDING = "pending"
    DIALING = "dialing"
    CONNECTED = "connected"
    NOT_REACHED = "not_reached"
    DONE = "done"
    CANCELLED = "cancelled"


class Task(Base):
    """One customer to be called by one manager, in one campaign (cycle)."""
    __tablename__ = "tasks"
    __table_args__ = (
        one_of("status", TaskStatus),
        CheckConstraint("attempts >= 0"),
        CheckConstraint("max_attempts > 0"),
        Index("ix_tasks_manager_status", "manager_id", "status", "priority", "appointment_at", "id"),
        Index("ix_tasks_campaign_status", "campaign_id", "status"),
        Index("ix_tasks_customer", "customer_id"),
        Index("ix_tasks_created", "created_at"),
        Index("ix_tasks_appointment", "appointment_at",
              sqlite_where=text("appointment_at IS NOT NULL"),
              postgresql_where=text("appointment_at IS NOT NULL")),
        Index("ux_tasks_cycle_customer", "cycle_id", "customer_id", unique=True,
              sqlite_where=text("cycle_id IS NOT NULL"),
              postgresql_where=text("cycle_id IS NOT NULL")),
    )
    id: Mapped[int] = _id()
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    cycle_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_cycles.id"))
    task_type_id: Mapped[int] = mapped_column(ForeignKey("task_types.id"))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("managers.id"))
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING,
                                        server_default=TaskStatus.PENDING)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    result_code_id: Mapped[int | None] = mapped_column(ForeignKey("result_codes.id"))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, default=3, server_default="3")
    appointment_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    last_call_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(
        TIMESTAMP, default=utcnow, onupdate=utcnow, server_default=func.current_timestamp())

    customer: Mapped[Customer] = relationship()
    manager: Mapped[Manager | None] = relationship()
    task_type: Mapped[TaskType] = relationship()
    campaign: Mapped[Campaign | None] = relationship()
    result_code: Mapped[ResultCode | None] = relationship()


class Call(Base):
    """One row per call attempt, outbound or inbound."""
    __tablename__ = "calls"
    __table_args__ = (
        CheckConstraint("direction IN ('outbound', 'inbound')"),
        one_of("state", CallState),
        one_of("recording_status", RecordingStatus, name="ck_calls_recording_status"),
        CheckConstraint("hangup_by IN ('customer', 'manager', 'system')"),
        CheckConstraint("talk_seconds >= 0"),
        CheckConstraint("manager_device IN ('desk', 'mobile')"),
        Index("ix_calls_linkedid", "linkedid"),
        Index("ix_calls_task", "task_id"),
        Index("ix_calls_manager_time", "manager_id", "requested_at"),
        Index("ix_calls_county_time", "county_id", "requested_at"),
        Index("ix_calls_customer", "customer_id"),
        Index("ix_calls_recorded", "requested_at",
              sqlite_where=text("recording_path IS NOT NULL"),
              postgresql_where=text("recording_path IS NOT NULL")),
        Index("ix_calls_number_time", "customer_number", "requested_at"),
        Index("ix_calls_recordings_kept", "requested_at",
              sqlite_where=text("recording_path IS NOT NULL AND recording_deleted_at IS NULL"),
              postgresql_where=text("recording_path IS NOT NULL AND "
                                    "recording_deleted_at IS NULL")),
        Index("ix_calls_requested", "requested_at"),
        # the unified-number pool's counts (khhf.services.number_pool.usage),
        # read from the index alone (every column they name is in it)
        Index("ix_calls_unified_time", "unified_number", "requested_at", "direction", "state"),
    )
    id: Mapped[int] = _id()
    direction: Mapped[str] = mapped_column(String(8))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("managers.id"))
    county_id: Mapped[int | None] = mapped_column(ForeignKey("counties.id"))
    uniqueid: Mapped[str | None] = mapped_column(String(64), unique=True)
    linkedid: Mapped[str | None] = mapped_column(String(64))
    customer_number: Mapped[str] = mapped_column(String(20))
    unified_number: Mapped[str | None] = mapped_column(String(11))
    pbx_node: Mapped[str] = mapped_column(String(32), default="main", server_default="main")
    state: Mapped[str] = mapped_column(String(24), default=CallState.REQUESTED,
                                       server_default=CallState.REQUESTED)
    requested_at: Mapped[dt.datetime] = _created()
    ring_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    answer_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    end_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    hangup_cause: Mapped[int | None] = mapped_column(Integer)
    hangup_by: Mapped[str | None] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(24))
    # the customer leg's final SIP response, when the customer was dialed
    sip_code: Mapped[int | None] = mapped_column(Integer)
    talk_seconds: Mapped[int | None] = mapped_column(Integer)
    recording_path: Mapped[str | None] = mapped_column(String(255))
    recording_seconds: Mapped[float | None] = mapped_column(REAL)
    recording_bytes: Mapped[int | None] = mapped_column(Integer)
    recording_sha256: Mapped[str | None] = mapped_column(String(64))
    # 'desk', or 'mobile': a two-leg call (双呼) that rang the manager's mobile
    manager_device: Mapped[str] = mapped_column(String(8), default="desk",
                                                server_default="desk")
    recording_deleted_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    # complete, partial or missing, judged by the bridge from the file once the
    # call has ended (khhf.calls.store.recording_status); None until then
    recording_status: Mapped[str | None] = mapped_column(String(8))

    task: Mapped[Task | None] = relationship()
    customer: Mapped[Customer | None] = relationship()
    manager: Mapped[Manager | None] = relationship()


class CallEvent(Base):
    """Raw AMI/CEL events as received; dedup_key makes replays harmless
    ('khhf': what KHHF recorded itself, a call never placed or lost)."""
    __tablename__ = "call_events"
    __table_args__ = (
        CheckConstraint("source IN ('ami', 'cel', 'agi', 'khhf')"),
        Index("ix_call_events_linkedid", "linkedid"),
        Index("ix_call_events_call", "call_id"),
    )
    id: Mapped[int] = _id()
    dedup_key: Mapped[str] = mapped_column(String(128), unique=True)
    source: Mapped[str] = mapped_column(String(8))
    event: Mapped[str] = mapped_column(String(64))
    uniqueid: Mapped[str | None] = mapped_column(String(64))
    linkedid: Mapped[str | None] = mapped_column(String(64))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"))
    event_at: Mapped[dt.datetime] = mapped_column(TIMESTAMP)
    payload: Mapped[str] = mapped_column(Text)


class PbxNode(Base):
    """A PBX node of a cluster behind the SIP edge (docs/cluster.md), kept by
    its own AMI bridge (khhf.services.nodes): where its bridge takes
    click-to-dial requests, when the bridge last saw its Asterisk up, how
    many calls it carried then. A node whose beat is older than
    nodes.LOST_AFTER is lost: the first surviving bridge to see it sets
    lost_at and lost_by and closes the node's open calls, once."""
    __tablename__ = "pbx_nodes"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)  # its pbx_name
    bridge_host: Mapped[str] = mapped_column(String(64))
    bridge_port: Mapped[int] = mapped_column(Integer)
    sip_host: Mapped[str] = mapped_column(String(64))
    sip_port: Mapped[int] = mapped_column(Integer)
    # (re)joined: its bridge's first beat with its Asterisk up, after a loss or a start
    joined_at: Mapped[dt.datetime] = _created()
    # the last beat with its Asterisk up (the AMI logged in)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(TIMESTAMP)
    live_calls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # false while its Asterisk shuts down gracefully: no new call goes there
    accepting: Mapped[bool] = _flag(True)
    lost_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    lost_by: Mapped[str | None] = mapped_column(String(32))


class FeedbackChannel(StrEnum):
    """How a result was filed: by the manager (web form, SMS reply, desk
    phone keypad), or by the system itself (an automatic outcome)."""
    WEB = "web"
    SMS = "sms"
    KEYPAD = "keypad"
    SYSTEM = "system"


class Feedback(Base):
    """A result filed for a task, by web form, SMS reply or phone keypad, or
    by the system for an unreached call (once per call)."""
    __tablename__ = "feedback"
    __table_args__ = (
        one_of("channel", FeedbackChannel, name="ck_feedback_channel"),
        # the system files a call's automatic outcome once, however often
        # the bridge replays the call's events
        Index("ux_feedback_system_call", "call_id", unique=True,
              sqlite_where=text("channel = 'system'"),
              postgresql_where=text("channel = 'system'")),
        Index("ix_feedback_task", "task_id"),
        Index("ix_feedback_manager_time", "manager_id", "created_at"),
        Index("ix_feedback_call", "call_id"),
        Index("ix_feedback_created", "created_at"),
        Index("ix_feedback_appointment", "appointment_at",
              sqlite_where=text("appointment_at IS NOT NULL"),
              postgresql_where=text("appointment_at IS NOT NULL")),
    )
    id: Mapped[int] = _id()
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"))
    manager_id: Mapped[int] = mapped_column(ForeignKey("managers.id"))
    result_code_id: Mapped[int] = mapped_column(ForeignKey("result_codes.id"))
    channel: Mapped[str] = mapped_column(String(8))
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[dt.datetime] = _created()
    appointment_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)


class SmsStatus(StrEnum):
    """Where a message is: an outbound one goes queued → sending → sent (or
    back to queued, failed, unknown: smsgw/gateway.py); an inbound one is
    received, then processed."""
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    UNKNOWN = "unknown"        # the SMSC's answer was lost: not resent by itself
    FAILED = "failed"
    RECEIVED = "received"
    PROCESSED = "processed"


class SmsKind(StrEnum):
    """What an outbound message is (sms_messages.kind; NULL for inbound)."""
    PROMPT = "prompt"            # the result prompt after a call (khhf.services.sms_feedback)
    ANSWER = "answer"            # the answer to a manager's reply
    MISSED_CALL = "missed_call"  # a missed hotline call (khhf.services.hotline)


class SmsReplyOutcome(StrEnum):
    """What an inbound reply did (sms_messages.reply_outcome; NULL for
    outbound, and for a reply not yet handled): khhf.services.sms_feedback."""
    FILED = "filed"
    UNCLEAR = "unclear"
    AMBIGUOUS = "ambiguous"
    DUPLICATE = "duplicate"
    ALREADY_FILED = "already_filed"
    NO_PROMPT = "no_prompt"
    UNKNOWN_REF = "unknown_ref"
    REFUSED = "refused"
    STRANGER = "stranger"
    ERROR = "error"


class SmsMessage(Base):
    """SMS out (notifications, result prompts) and in (replies with digit codes).

    Out: queued -> sending (client_ref written, then submit_sm) -> sent, or
    back to queued with next_attempt_at after a refused submit, or failed
    after sms_max_attempts; 'unknown' when the connection was lost between
    submit and its answer: never resent without an operator (smsgw/gateway.py).
    In: received -> processed (the reply parser). `kind` says what an
    outbound message is, `reply_outcome` what an inbound reply did."""
    __tablename__ = "sms_messages"
    __table_args__ = (
        CheckConstraint("direction IN ('out', 'in')"),
        one_of("status", SmsStatus),
        # named: revision 0002 made them, its downgrade drops them by name
        one_of("kind", SmsKind, name="ck_sms_messages_kind"),
        one_of("reply_outcome", SmsReplyOutcome, name="ck_sms_messages_reply_outcome"),
        CheckConstraint("(direction = 'out' AND reply_outcome IS NULL) OR "
                        "(direction = 'in' AND kind IS NULL)",
                        name="ck_sms_messages_kind_direction"),
        Index("ix_sms_messages_status", "direction", "status", "created_at"),
        Index("ux_sms_messages_prompt_call", "call_id", unique=True,
              sqlite_where=text(f"kind = '{SmsKind.PROMPT}'"),
              postgresql_where=text(f"kind = '{SmsKind.PROMPT}'")),
        Index("ix_sms_messages_manager", "manager_id", "direction", "id"),
    )
    id: Mapped[int] = _id()
    direction: Mapped[str] = mapped_column(String(8))
    peer_number: Mapped[str] = mapped_column(String(20))
    manager_id: Mapped[int | None] = mapped_column(ForeignKey("managers.id"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=SmsStatus.QUEUED,
                                        server_default=SmsStatus.QUEUED)
    smpp_message_id: Mapped[str | None] = mapped_column(String(64))
    client_ref: Mapped[str | None] = mapped_column(String(32), unique=True)
    parts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    created_at: Mapped[dt.datetime] = _created()
    sent_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    receipt_status: Mapped[str | None] = mapped_column(String(16))
    receipt_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    kind: Mapped[str | None] = mapped_column(String(16))
    reply_outcome: Mapped[str | None] = mapped_column(String(16))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"))
    ref: Mapped[str | None] = mapped_column(String(8))
    reply_to_id: Mapped[int | None] = mapped_column(ForeignKey("sms_messages.id"))
    feedback_id: Mapped[int | None] = mapped_column(ForeignKey("feedback.id"))


class SmsPart(Base):
    """One submit_sm of an outbound SMS (a long one is several, concatenated
    by UDH); the SMSC's message id and its delivery receipt are per part."""
    __tablename__ = "sms_parts"
    __table_args__ = (
        UniqueConstraint("sms_id", "part_no"),
        Index("ix_sms_parts_message_id", "smpp_message_id"),
    )
    id: Mapped[int] = _id()
    sms_id: Mapped[int] = mapped_column(ForeignKey("sms_messages.id"))
    part_no: Mapped[int] = mapped_column(Integer)
    smpp_message_id: Mapped[str] = mapped_column(String(64))
    receipt_status: Mapped[str | None] = mapped_column(String(16))
    receipt_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)


IMPORT_KINDS = ("customers", "managers", "tasks")
IMPORT_STATUSES = ("checking", "checked", "committing", "committed", "failed")


class ImportJob(Base):
    """An import of customers, managers or tasks from a spreadsheet, run in
    the background by the web UI: checked first (a preview), committed on
    request. The file and the report live under <home>/imports/<id>/."""
    __tablename__ = "import_jobs"
    __table_args__ = (
        CheckConstraint("kind IN ('customers', 'managers', 'tasks')"),
        CheckConstraint("status IN ('checking', 'checked', 'committing', 'committed', "
                        "'failed')"),
        Index("ix_import_jobs_county", "county_id", "created_at"),
    )
    id: Mapped[int] = _id()
    kind: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    county_id: Mapped[int | None] = mapped_column(ForeignKey("counties.id"))
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"))
    options: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    status: Mapped[str] = mapped_column(String(16), default="checking",
                                        server_default="checking")
    total_rows: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    accepted_rows: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rejected_rows: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = _created()
    finished_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)

    county: Mapped[County | None] = relationship()
    creator: Mapped[User | None] = relationship()


class AuditLog(Base):
    """Every write, log-in and recording played (全程操作日志). The names are
    kept as they were at the time; `detail` is a JSON object (khhf/audit.py)
    that the UI renders as a sentence in the viewer's language."""
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_user_at", "user_id", "at"),
        Index("ix_audit_log_action_at", "action", "at"),
    )
    id: Mapped[int] = _id()
    at: Mapped[dt.datetime] = _created()
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    username: Mapped[str] = mapped_column(String(64), default="", server_default="")
    actor_name: Mapped[str] = mapped_column(String(64), default="", server_default="")
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32), default="", server_default="")
    object_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    object_name: Mapped[str] = mapped_column(String(128), default="", server_default="")
    detail: Mapped[str] = mapped_column(Text, default="", server_default="")
    ip: Mapped[str] = mapped_column(String(45), default="", server_default="")


# -- reports: daily sums per bucket (khhf.services.reports) --------------------------

def _counter():
    return mapped_column(Integer, default=0, server_default="0")


def _key():
    return mapped_column(Integer, primary_key=True)


class _Counters:
    """The figures' daily sums (khhf.services.reports.COUNTERS), the same
    columns in every table of sums; the tables differ by their keys."""
    tasks_assigned: Mapped[int] = _counter()
    calls_out: Mapped[int] = _counter()
    calls_connected: Mapped[int] = _counter()
    talk_seconds: Mapped[int] = _counter()
    results_filed: Mapped[int] = _counter()
    tasks_completed: Mapped[int] = _counter()
    fb_calls: Mapped[int] = _counter()
    fb_web: Mapped[int] = _counter()
    fb_sms: Mapped[int] = _counter()
    fb_keypad: Mapped[int] = _counter()
    fb_seconds: Mapped[int] = _counter()
    fb_within_1h: Mapped[int] = _counter()
    callbacks_due: Mapped[int] = _counter()
    callbacks_kept: Mapped[int] = _counter()
    hotline_calls: Mapped[int] = _counter()
    hotline_desk: Mapped[int] = _counter()
    hotline_mobile: Mapped[int] = _counter()
    hotline_group: Mapped[int] = _counter()
    hotline_missed: Mapped[int] = _counter()
    missed_cb_1h: Mapped[int] = _counter()
    missed_cb_4h: Mapped[int] = _counter()
    missed_cb_24h: Mapped[int] = _counter()


class ReportDaily(_Counters, Base):
    """Reports (khhf/services/reports.py): every figure summed per local day
    and per (manager, county, campaign, task type); 0 where a row has none.
    Rebuilt from the raw rows for the days touched since the last refresh."""
    __tablename__ = "report_daily"
    __table_args__ = (
        Index("ix_report_daily_county_day", "county_id", "day"),
        Index("ix_report_daily_manager_day", "manager_id", "day"),
    )
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    county_id: Mapped[int] = _key()
    manager_id: Mapped[int] = _key()
    campaign_id: Mapped[int] = _key()
    task_type_id: Mapped[int] = _key()


class ReportDailyResult(Base):
    """Results filed per result code, per local day and bucket (outcome rates)."""
    __tablename__ = "report_daily_results"
    __table_args__ = (Index("ix_report_daily_results_county_day", "county_id", "day"),)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    county_id: Mapped[int] = _key()
    manager_id: Mapped[int] = _key()
    campaign_id: Mapped[int] = _key()
    task_type_id: Mapped[int] = _key()
    result_code_id: Mapped[int] = _key()
    results: Mapped[int] = _counter()


class ReportCountyDaily(_Counters, Base):
    """The same sums rolled up per county (all campaigns and task types)."""
    __tablename__ = "report_county_daily"
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    county_id: Mapped[int] = _key()


class ReportManagerDaily(_Counters, Base):
    """The same sums rolled up per manager."""
    __tablename__ = "report_manager_daily"
    __table_args__ = (Index("ix_report_manager_daily_manager_day", "manager_id", "day"),)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    county_id: Mapped[int] = _key()
    manager_id: Mapped[int] = _key()


class ReportTypeDaily(_Counters, Base):
    """The same sums per county and task type (the task type page)."""
    __tablename__ = "report_type_daily"
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    county_id: Mapped[int] = _key()
    task_type_id: Mapped[int] = _key()


class ReportCountyResult(Base):
    """Results per result code, per county and day."""
    __tablename__ = "report_county_results"
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    county_id: Mapped[int] = _key()
    result_code_id: Mapped[int] = _key()
    results: Mapped[int] = _counter()


class ReportTypeResult(Base):
    """Results per result code, per county, task type and day."""
    __tablename__ = "report_type_results"
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    county_id: Mapped[int] = _key()
    task_type_id: Mapped[int] = _key()
    result_code_id: Mapped[int] = _key()
    results: Mapped[int] = _counter()


class ReportState(Base):
    """How far the report tables are built: the highest ids and the time of
    the last refresh; newer rows mark the days the next refresh rebuilds."""
    __tablename__ = "report_state"
    id: Mapped[int] = _id()
    refreshed_at: Mapped[dt.datetime] = mapped_column(TIMESTAMP)
    last_call_id: Mapped[int] = _counter()
    last_task_id: Mapped[int] = _counter()
    last_feedback_id: Mapped[int] = _counter()


# -- the integration API (khhf.services.api_clients, khhf.webhooks) -----------------

class ApiOperation(StrEnum):
    """What an API client may do (api_clients.operations, space-separated)."""
    CUSTOMERS_WRITE = "customers:write"
    MANAGERS_WRITE = "managers:write"
    TASKS_WRITE = "tasks:write"
    TASKS_READ = "tasks:read"
    CALLS_READ = "calls:read"
    RECORDINGS_READ = "recordings:read"
    CALLS_DIAL = "calls:dial"
    WEBHOOKS = "webhooks"


class ApiClient(Base):
    """A system of the operator's (CRM, BOSS) that calls /api/v1/ with a
    bearer token `khhf_<token_id>_<secret>`: only SHA-256 of the token is
    kept (secret_hash), and the key its webhooks are signed with, an HMAC
    of the token (signing_key). Limited to one county; revoked at once."""
    __tablename__ = "api_clients"
    __table_args__ = (CheckConstraint("rate_per_minute > 0"),)
    id: Mapped[int] = _id()
    name: Mapped[str] = mapped_column(String(64), unique=True)
    county_id: Mapped[int] = mapped_column(ForeignKey("counties.id"))
    token_id: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    signing_key: Mapped[str] = mapped_column(String(64))
    operations: Mapped[str] = mapped_column(Text, default="", server_default="")
    # source addresses or networks (CIDR), space-separated; empty: any
    allowed_addresses: Mapped[str] = mapped_column(Text, default="", server_default="")
    webhook_url: Mapped[str] = mapped_column(String(255), default="", server_default="")
    rate_per_minute: Mapped[int] = mapped_column(Integer, default=600, server_default="600")
    created_at: Mapped[dt.datetime] = _created()
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)

    county: Mapped[County] = relationship()

    @property
    def operation_set(self) -> frozenset[str]:
        return frozenset(self.operations.split())


class ApiIdempotency(Base):
    """The first answer to a write sent with a client's key (Idempotency-Key):
    a repeat of the key gets it again, and nothing is written twice."""
    __tablename__ = "api_idempotency"
    __table_args__ = (
        UniqueConstraint("client_id", "key"),
        Index("ix_api_idempotency_created", "created_at"),
    )
    id: Mapped[int] = _id()
    client_id: Mapped[int] = mapped_column(ForeignKey("api_clients.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    operation: Mapped[str] = mapped_column(String(32))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


class WebhookEventKind(StrEnum):
    """What a webhook tells (webhook_deliveries.kind)."""
    RESULT_FILED = "result.filed"
    CALL_ENDED = "call.ended"
    HOTLINE_MISSED = "hotline.missed"
    SMS_REPLY = "sms.reply"


class WebhookStatus(StrEnum):
    """Where a delivery is: pending (waiting or retrying), delivered, failed
    (given up after khhf.webhooks.GIVE_UP_AFTER)."""
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(Base):
    """The outbox: one event for one client, written in the transaction of
    the event's cause (khhf.webhooks), sent by the timed-jobs daemon until the
    receiver answers 2xx. event_id names the event (kind and row), so an
    event is never queued twice for a client, and receivers de-duplicate by it."""
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("client_id", "event_id"),
        one_of("kind", WebhookEventKind),
        one_of("status", WebhookStatus),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )
    id: Mapped[int] = _id()
    client_id: Mapped[int] = mapped_column(ForeignKey("api_clients.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(24))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=WebhookStatus.PENDING,
                                        server_default=WebhookStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[dt.datetime] = _created()
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[dt.datetime] = _created()
    delivered_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)

    client: Mapped[ApiClient] = relationship()


# -- the timed jobs across the cluster (khhf.leases, jobs/scheduler.py) -------------

class JobLease(Base):
    """A job that must run once across the nodes (docs/cluster.md): who
    holds it now, until when, and its last run. A run takes the row with one
    conditional statement, renews `expires_at` while it works and releases
    it (expires_at NULL) when done; a node killed mid-run loses it when
    `expires_at` passes. The row stays, so it says where the job last ran."""
    __tablename__ = "job_leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # the holder: the node's pbx_name and the jobs daemon's process id
    node: Mapped[str] = mapped_column(String(32))
    pid: Mapped[int] = mapped_column(Integer)
    # NULL: free (the last run finished); else held until then
    expires_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    started_at: Mapped[dt.datetime] = mapped_column(TIMESTAMP)
    # NULL while the run works, or when its node stopped mid-run
    finished_at: Mapped[dt.datetime | None] = mapped_column(TIMESTAMP)
    # whether the last finished run succeeded; its error when it did not
    ok: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str] = mapped_column(Text, default="", server_default="")
    # runs taken so far; the number names the run (renewal and release check it)
    runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
