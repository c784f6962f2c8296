"""Automatic outcomes (自动结果): task types map an unreached call's outcome
to a result code and a retry rule, and the system files such results
itself (feedback channel 'system', once per call).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

New table outcome_rules. feedback.channel's CHECK, unnamed in the
baseline, becomes the named ck_feedback_channel with 'system' added, and
a partial unique index keeps the system to one result per call. The
standard task types (回访, 营销, 调查) get the rules `khhf init` now gives
them, where their result codes are still the standard ones. Downgrade
removes the system's results (the manager's stay) and the rules.
"""

import warnings

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# the vocabularies as they are at this revision (a revision never imports the models)
OUTCOMES = ("no_answer", "busy", "unreachable", "empty_number", "rejected")
CHANNELS_BEFORE = ("web", "sms", "keypad")
CHANNELS = (*CHANNELS_BEFORE, "system")
# the standard types' rules: outcome -> (result code, label it must still have,
# retry minutes, max retries, close code)
STANDARD_TYPES = ("revisit", "marketing", "survey")
STANDARD_RULES = {
    "no_answer": ("3", "无人接听", 60, 2, "9"),
    "busy": ("7", "忙线", 30, 2, "9"),
    "unreachable": ("4", "关机/停机", 120, 2, "9"),
    "empty_number": ("5", "空号", 0, 0, None),
    "rejected": ("8", "呼叫被拒", 240, 1, "9"),
}
# (code, label, final) the standard types gained with these rules
NEW_CODES = (("7", "忙线", False), ("8", "呼叫被拒", False), ("9", "多次未接通", True))


def _in(column, values):
    return "{} IN ({})".format(column, ", ".join(f"'{v}'" for v in values))


def upgrade() -> None:
    op.create_table(
        "outcome_rules",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("task_type_id", sa.Integer,
                  sa.ForeignKey("task_types.id", ondelete="CASCADE"), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("result_code_id", sa.Integer,
                  sa.ForeignKey("result_codes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("retry_minutes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_retries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("close_code_id", sa.Integer,
                  sa.ForeignKey("result_codes.id", ondelete="SET NULL")),
        sa.UniqueConstraint("task_type_id", "outcome", name="uq_outcome_rules_type_outcome"),
        sa.CheckConstraint(_in("outcome", OUTCOMES), name="ck_outcome_rules_outcome"),
        sa.CheckConstraint("retry_minutes >= 0", name="ck_outcome_rules_retry_minutes"),
        sa.CheckConstraint("max_retries >= 0", name="ck_outcome_rules_max_retries"),
    )
    _set_channels(CHANNELS)
    op.create_index("ux_feedback_system_call", "feedback", ["call_id"], unique=True,
                    sqlite_where=sa.text("channel = 'system'"),
                    postgresql_where=sa.text("channel = 'system'"))
    _standard_rules()


def downgrade() -> None:
    op.drop_index("ux_feedback_system_call", "feedback")
    op.execute("DELETE FROM feedback WHERE channel = 'system'")
    _set_channels(CHANNELS_BEFORE)
    op.drop_table("outcome_rules")


def _set_channels(channels) -> None:
    """feedback.channel's CHECK, named, listing `channels`."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # the baseline's inline CHECK got PostgreSQL's own name
        op.execute("ALTER TABLE feedback DROP CONSTRAINT IF EXISTS feedback_channel_check")
        op.execute("ALTER TABLE feedback DROP CONSTRAINT IF EXISTS ck_feedback_channel")
        op.create_check_constraint("ck_feedback_channel", "feedback", _in("channel", channels))
        return
    # SQLite: the batch copy drops the baseline's unnamed CHECK (as wanted: it
    # is replaced; alembic warns that it does); a named one is dropped by name
    names = {c["name"] for c in sa.inspect(bind).get_check_constraints("feedback")}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Unnamed CHECK constraint on reflected table 'feedback'")
        with op.batch_alter_table("feedback", recreate="always") as batch:
            if "ck_feedback_channel" in names:
                batch.drop_constraint("ck_feedback_channel", type_="check")
            batch.create_check_constraint("ck_feedback_channel", _in("channel", channels))


def _standard_rules() -> None:
    """The standard types' rules (and the codes 7-9 they use), for each
    standard type whose codes are still the standard ones."""
    bind = op.get_bind()
    types = bind.execute(sa.text(
        "SELECT id FROM task_types WHERE " + _in("code", STANDARD_TYPES))).scalars().all()
    standard = {"3": "无人接听", "4": "关机/停机", "5": "空号"}
    for type_id in types:
        codes: dict[str, str] = dict(bind.execute(sa.text(
            "SELECT code, label FROM result_codes WHERE task_type_id = :t"), {"t": type_id}).all())
        if any(codes.get(code) != label for code, label in standard.items()) \
                or any(codes.get(code) not in (None, label) for code, label, _ in NEW_CODES):
            continue  # the site changed them: its rules are its own to set
        for code, label, final in NEW_CODES:
            if code not in codes:
                bind.execute(sa.text(
                    "INSERT INTO result_codes (task_type_id, code, label, is_success, is_final) "
                    "VALUES (:t, :c, :l, :no, :final)"),
                    {"t": type_id, "c": code, "l": label, "no": False, "final": final})
        ids: dict[str, int] = dict(bind.execute(sa.text(
            "SELECT code, id FROM result_codes WHERE task_type_id = :t"), {"t": type_id}).all())
        for outcome, (code, _label, minutes, retries, close) in STANDARD_RULES.items():
            bind.execute(sa.text(
                "INSERT INTO outcome_rules (task_type_id, outcome, result_code_id, "
                "retry_minutes, max_retries, close_code_id) VALUES (:t, :o, :r, :m, :n, :c)"),
                {"t": type_id, "o": outcome, "r": ids[code], "m": minutes, "n": retries,
                 "c": ids[close] if close else None})
