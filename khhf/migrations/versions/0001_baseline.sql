-- Revision 0001, the baseline: the schema as schema.sql had it when KHHF
-- began versioned migrations (frozen: never edit; a change is a new revision).
-- Written in the SQL that SQLite (3.35+) and PostgreSQL (13+) both accept.
-- The one dialect difference is the surrogate key: every table declares
-- "id INTEGER PRIMARY KEY", which SQLite makes a rowid alias; the revision
-- rewrites exactly that phrase to an identity column for PostgreSQL.
--
-- All timestamps are UTC, without zone; the UI shows them in Asia/Shanghai.
-- Phone numbers are stored normalised (digits only, no country prefix).

-- A county branch (县区) and its unified numbers (统一号码).
CREATE TABLE counties (
    id INTEGER PRIMARY KEY,
    code VARCHAR(32) NOT NULL UNIQUE,
    name VARCHAR(64) NOT NULL,
    -- how the hotline's fallback group rings: all at once, or in turn
    fallback_strategy VARCHAR(16) NOT NULL DEFAULT 'ringall'
        CHECK (fallback_strategy IN ('ringall', 'hunt')),
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE unified_numbers (
    id INTEGER PRIMARY KEY,
    county_id INTEGER NOT NULL REFERENCES counties (id) ON DELETE CASCADE,
    number VARCHAR(11) NOT NULL UNIQUE CHECK (length(number) = 11),
    is_primary BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX ix_unified_numbers_county ON unified_numbers (county_id);
-- at most one primary number per county: outbound calls show it
CREATE UNIQUE INDEX ux_unified_numbers_primary ON unified_numbers (county_id)
    WHERE is_primary;

-- Everyone who logs in: administrators, customer managers, county supervisors.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username VARCHAR(64) NOT NULL UNIQUE,
    password_hash VARCHAR(255) NOT NULL,
    display_name VARCHAR(64) NOT NULL,
    role VARCHAR(16) NOT NULL CHECK (role IN ('admin', 'manager', 'supervisor')),
    -- NULL only for administrators, who see every county
    county_id INTEGER REFERENCES counties (id),
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_login_at TIMESTAMP,
    -- a log-in is valid while its session carries this number: log-out,
    -- a new password and deactivation raise it, ending every session
    session_epoch INTEGER NOT NULL DEFAULT 0,
    -- a supervisor's (or administrator's) desk SIP phone, its PJSIP endpoint
    -- name: the live view's listen-in rings it. Managers' phones are on
    -- managers.desk_extension; one extension is never on both (accounts)
    desk_extension VARCHAR(16) UNIQUE,
    CHECK (role = 'admin' OR county_id IS NOT NULL)
);
CREATE INDEX ix_users_county_role ON users (county_id, role);

-- A customer manager (客户经理): the telephony side of a 'manager' user.
CREATE TABLE managers (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL UNIQUE REFERENCES users (id),
    county_id INTEGER NOT NULL REFERENCES counties (id),
    employee_no VARCHAR(32) NOT NULL UNIQUE,
    -- the desk SIP phone's extension, also its PJSIP endpoint name
    desk_extension VARCHAR(16) UNIQUE,
    -- one person per mobile: the hotline rings it and the SMS replies from it
    -- are matched to it (UNIQUE allows any number of NULLs)
    mobile VARCHAR(20) UNIQUE,
    status VARCHAR(16) NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'departed')),
    on_duty BOOLEAN NOT NULL DEFAULT FALSE,
    departed_at TIMESTAMP,
    successor_id INTEGER REFERENCES managers (id),
    CHECK (status = 'active' OR departed_at IS NOT NULL)
);
CREATE INDEX ix_managers_county_status ON managers (county_id, status, on_duty);

CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    phone VARCHAR(20) NOT NULL UNIQUE,
    name VARCHAR(64) NOT NULL DEFAULT '',
    county_id INTEGER NOT NULL REFERENCES counties (id),
    manager_id INTEGER REFERENCES managers (id),
    do_not_call BOOLEAN NOT NULL DEFAULT FALSE,
    note TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX ix_customers_manager ON customers (manager_id);
CREATE INDEX ix_customers_county ON customers (county_id);

-- Who owned a customer when: kept for hand-overs when managers leave.
CREATE TABLE customer_assignments (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    manager_id INTEGER NOT NULL REFERENCES managers (id),
    assigned_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    ended_at TIMESTAMP,
    reason VARCHAR(32) NOT NULL DEFAULT 'import',
    assigned_by INTEGER REFERENCES users (id)
);
CREATE INDEX ix_customer_assignments_customer ON customer_assignments (customer_id, assigned_at);
CREATE INDEX ix_customer_assignments_manager ON customer_assignments (manager_id);
CREATE UNIQUE INDEX ux_customer_assignments_open ON customer_assignments (customer_id)
    WHERE ended_at IS NULL;

-- Return visit (回访), marketing (营销), survey (调查), ... each with its result codes.
CREATE TABLE task_types (
    id INTEGER PRIMARY KEY,
    code VARCHAR(32) NOT NULL UNIQUE,
    name VARCHAR(64) NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- the short call script shown to the manager next to the task
    script TEXT NOT NULL DEFAULT '',
    max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts > 0)
);

-- A result code a manager files; 'code' is what is typed by SMS or keypad.
CREATE TABLE result_codes (
    id INTEGER PRIMARY KEY,
    task_type_id INTEGER NOT NULL REFERENCES task_types (id) ON DELETE CASCADE,
    code VARCHAR(4) NOT NULL,
    label VARCHAR(64) NOT NULL,
    is_success BOOLEAN NOT NULL DEFAULT FALSE,
    -- a code that closes the task (no further attempts)
    is_final BOOLEAN NOT NULL DEFAULT TRUE,
    UNIQUE (task_type_id, code)
);

-- A batch of tasks (批次), optionally repeating in cycles (rounds).
CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    county_id INTEGER NOT NULL REFERENCES counties (id),
    task_type_id INTEGER NOT NULL REFERENCES task_types (id),
    name VARCHAR(128) NOT NULL,
    cycle VARCHAR(16) NOT NULL DEFAULT 'once'
        CHECK (cycle IN ('once', 'weekly', 'monthly', 'quarterly')),
    status VARCHAR(16) NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'active', 'closed')),
    starts_on DATE NOT NULL,
    ends_on DATE,
    -- which customers each round calls: every one of the county, those of
    -- the managers in campaign_managers, or a list imported as tasks
    selection VARCHAR(16) NOT NULL DEFAULT 'county'
        CHECK (selection IN ('county', 'managers', 'list')),
    created_by INTEGER REFERENCES users (id),
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CHECK (ends_on IS NULL OR ends_on >= starts_on)
);
CREATE INDEX ix_campaigns_county_status ON campaigns (county_id, status);

-- The managers whose customers a 'managers' campaign calls.
CREATE TABLE campaign_managers (
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    manager_id INTEGER NOT NULL REFERENCES managers (id),
    PRIMARY KEY (campaign_id, manager_id)
);

CREATE TABLE campaign_cycles (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL CHECK (seq > 0),
    starts_on DATE NOT NULL,
    ends_on DATE NOT NULL,
    UNIQUE (campaign_id, seq),
    CHECK (ends_on >= starts_on)
);

-- One customer to be called by one manager, in one campaign (cycle).
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER REFERENCES campaigns (id),
    cycle_id INTEGER REFERENCES campaign_cycles (id),
    task_type_id INTEGER NOT NULL REFERENCES task_types (id),
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    manager_id INTEGER REFERENCES managers (id),
    status VARCHAR(16) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'dialing', 'connected', 'not_reached',
                          'done', 'cancelled')),
    -- higher first; missed hotline calls become high-priority call-backs
    priority INTEGER NOT NULL DEFAULT 0,
    result_code_id INTEGER REFERENCES result_codes (id),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts > 0),
    appointment_at TIMESTAMP,
    last_call_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
-- the manager's workspace: tabs, counts and pages in id order (khhf.services.workspace)
CREATE INDEX ix_tasks_manager_status ON tasks (manager_id, status, priority, appointment_at, id);
CREATE INDEX ix_tasks_campaign_status ON tasks (campaign_id, status);
CREATE INDEX ix_tasks_customer ON tasks (customer_id);
CREATE INDEX ix_tasks_appointment ON tasks (appointment_at)
    WHERE appointment_at IS NOT NULL;
-- one task per customer per cycle
CREATE UNIQUE INDEX ux_tasks_cycle_customer ON tasks (cycle_id, customer_id)
    WHERE cycle_id IS NOT NULL;

-- One row per call attempt, outbound or inbound.
CREATE TABLE calls (
    id INTEGER PRIMARY KEY,
    direction VARCHAR(8) NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    task_id INTEGER REFERENCES tasks (id),
    customer_id INTEGER REFERENCES customers (id),
    manager_id INTEGER REFERENCES managers (id),
    county_id INTEGER REFERENCES counties (id),
    -- Asterisk's ids of the first channel and of the whole call
    uniqueid VARCHAR(64) UNIQUE,
    linkedid VARCHAR(64),
    customer_number VARCHAR(20) NOT NULL,
    unified_number VARCHAR(11),
    -- the Asterisk node that carries the call (settings.pbx_name): with
    -- several nodes sharing one database, each bridge sweeps only its own
    pbx_node VARCHAR(32) NOT NULL DEFAULT 'main',
    state VARCHAR(24) NOT NULL DEFAULT 'requested'
        CHECK (state IN ('requested', 'manager_ringing', 'manager_answered',
                         'customer_ringing', 'connected', 'ended', 'failed')),
    requested_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    ring_at TIMESTAMP,
    answer_at TIMESTAMP,
    end_at TIMESTAMP,
    hangup_cause INTEGER,
    hangup_by VARCHAR(16) CHECK (hangup_by IN ('customer', 'manager', 'system')),
    outcome VARCHAR(24),
    talk_seconds INTEGER CHECK (talk_seconds >= 0),
    recording_path VARCHAR(255),
    recording_seconds REAL,
    recording_bytes INTEGER,
    recording_sha256 VARCHAR(64),
    -- the manager's phone the call rang first: the desk phone, or the mobile
    -- through the trunk (a two-leg call, 双呼, placed from the phone pages)
    manager_device VARCHAR(8) NOT NULL DEFAULT 'desk'
        CHECK (manager_device IN ('desk', 'mobile')),
    -- when the retention job (khhf.services.recordings.purge) deleted the
    -- file; the path and figures stay, so the call still says it was recorded
    recording_deleted_at TIMESTAMP
);
CREATE INDEX ix_calls_linkedid ON calls (linkedid);
CREATE INDEX ix_calls_task ON calls (task_id);
CREATE INDEX ix_calls_manager_time ON calls (manager_id, requested_at);
CREATE INDEX ix_calls_county_time ON calls (county_id, requested_at);
CREATE INDEX ix_calls_customer ON calls (customer_id);
-- recording review: every county's recordings newest first (administrators)
CREATE INDEX ix_calls_recorded ON calls (requested_at)
    WHERE recording_path IS NOT NULL;
-- recording review: a customer's calls by their whole number (also a
-- caller the hotline did not know, who has no customer row)
CREATE INDEX ix_calls_number_time ON calls (customer_number, requested_at);
-- the retention job: recordings whose file is still kept, oldest first
CREATE INDEX ix_calls_recordings_kept ON calls (requested_at)
    WHERE recording_path IS NOT NULL AND recording_deleted_at IS NULL;

-- Raw AMI/CEL events as received; dedup_key makes replays harmless.
CREATE TABLE call_events (
    id INTEGER PRIMARY KEY,
    dedup_key VARCHAR(128) NOT NULL UNIQUE,
    -- 'khhf': what KHHF recorded itself (a call never placed, or lost)
    source VARCHAR(8) NOT NULL CHECK (source IN ('ami', 'cel', 'agi', 'khhf')),
    event VARCHAR(64) NOT NULL,
    uniqueid VARCHAR(64),
    linkedid VARCHAR(64),
    call_id INTEGER REFERENCES calls (id),
    event_at TIMESTAMP NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX ix_call_events_linkedid ON call_events (linkedid);
CREATE INDEX ix_call_events_call ON call_events (call_id);

-- A result filed for a task, by web form, SMS reply or phone keypad.
CREATE TABLE feedback (
    id INTEGER PRIMARY KEY,
    task_id INTEGER NOT NULL REFERENCES tasks (id),
    call_id INTEGER REFERENCES calls (id),
    manager_id INTEGER NOT NULL REFERENCES managers (id),
    result_code_id INTEGER NOT NULL REFERENCES result_codes (id),
    channel VARCHAR(8) NOT NULL CHECK (channel IN ('web', 'sms', 'keypad')),
    note TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- the call-back this result booked, if any (reports: call-backs due and kept)
    appointment_at TIMESTAMP
);
CREATE INDEX ix_feedback_task ON feedback (task_id);
CREATE INDEX ix_feedback_manager_time ON feedback (manager_id, created_at);
-- a call's results (recording review filters and shows them)
CREATE INDEX ix_feedback_call ON feedback (call_id);

-- SMS out (notifications, result prompts) and in (replies with digit codes).
-- Out: queued -> sending (client_ref written, then submit_sm) -> sent, or
-- back to queued with next_attempt_at after a refused submit, or failed
-- after sms_max_attempts; 'unknown' when the connection was lost between
-- submit and its answer: never resent without an operator (smsgw/gateway.py).
-- In: received -> processed (the reply parser).
CREATE TABLE sms_messages (
    id INTEGER PRIMARY KEY,
    direction VARCHAR(8) NOT NULL CHECK (direction IN ('out', 'in')),
    peer_number VARCHAR(20) NOT NULL,
    manager_id INTEGER REFERENCES managers (id),
    task_id INTEGER REFERENCES tasks (id),
    body TEXT NOT NULL,
    status VARCHAR(16) NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sending', 'sent', 'unknown', 'failed',
                          'received', 'processed')),
    smpp_message_id VARCHAR(64),
    client_ref VARCHAR(32) UNIQUE,
    parts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    sent_at TIMESTAMP,
    receipt_status VARCHAR(16),
    receipt_at TIMESTAMP,
    -- what the message is (khhf/services/sms_feedback.py): out 'prompt' (the
    -- result prompt after a call), 'answer' (to a reply), 'missed_call';
    -- in: what the reply did ('filed', 'unclear', 'ambiguous', 'duplicate',
    -- 'already_filed', 'no_prompt', 'unknown_ref', 'refused', 'stranger',
    -- 'error': its handling failed twice, see the log)
    kind VARCHAR(16),
    -- a prompt: the call it asks about, and its short reference (#12)
    call_id INTEGER REFERENCES calls (id),
    ref VARCHAR(8),
    -- an answer: the reply it answers; a reply: the prompt it answered
    reply_to_id INTEGER REFERENCES sms_messages (id),
    -- a reply that filed a result: that result
    feedback_id INTEGER REFERENCES feedback (id)
);
CREATE INDEX ix_sms_messages_status ON sms_messages (direction, status, created_at);
-- one result prompt per call, whoever sweeps (the jobs daemon, twice over)
CREATE UNIQUE INDEX ux_sms_messages_prompt_call ON sms_messages (call_id)
    WHERE kind = 'prompt';
CREATE INDEX ix_sms_messages_manager ON sms_messages (manager_id, direction, id);

-- An import of customers, managers or tasks from a spreadsheet, run in the
-- background by the web UI: checked first (a preview), committed on request.
-- The file and the report (rejected rows) live under <home>/imports/<id>/.
CREATE TABLE import_jobs (
    id INTEGER PRIMARY KEY,
    kind VARCHAR(16) NOT NULL CHECK (kind IN ('customers', 'managers', 'tasks')),
    filename VARCHAR(255) NOT NULL,
    -- the county the rows default to (and, for a supervisor, the only one)
    county_id INTEGER REFERENCES counties (id),
    campaign_id INTEGER REFERENCES campaigns (id),
    -- the user's column mapping and other options, as JSON
    options TEXT NOT NULL DEFAULT '{}',
    status VARCHAR(16) NOT NULL DEFAULT 'checking'
        CHECK (status IN ('checking', 'checked', 'committing', 'committed', 'failed')),
    total_rows INTEGER NOT NULL DEFAULT 0,
    accepted_rows INTEGER NOT NULL DEFAULT 0,
    rejected_rows INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    created_by INTEGER REFERENCES users (id),
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    finished_at TIMESTAMP
);
CREATE INDEX ix_import_jobs_county ON import_jobs (county_id, created_at);

-- One submit_sm of an outbound SMS (a long one is several, concatenated by
-- UDH); the SMSC's message id and its delivery receipt are per part.
CREATE TABLE sms_parts (
    id INTEGER PRIMARY KEY,
    sms_id INTEGER NOT NULL REFERENCES sms_messages (id),
    part_no INTEGER NOT NULL,
    smpp_message_id VARCHAR(64) NOT NULL,
    receipt_status VARCHAR(16),
    receipt_at TIMESTAMP,
    UNIQUE (sms_id, part_no)
);
CREATE INDEX ix_sms_parts_message_id ON sms_parts (smpp_message_id);

-- Every write, log-in and recording played (全程操作日志). The names are
-- kept as they were at the time, so the log reads (and is searched) by
-- people's names; `detail` is a JSON object (khhf/audit.py) that the UI
-- renders as a sentence in the viewer's language.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    user_id INTEGER REFERENCES users (id),
    username VARCHAR(64) NOT NULL DEFAULT '',
    -- the actor's display name (users.display_name), '' for the system
    actor_name VARCHAR(64) NOT NULL DEFAULT '',
    action VARCHAR(64) NOT NULL,
    object_type VARCHAR(32) NOT NULL DEFAULT '',
    object_id VARCHAR(64) NOT NULL DEFAULT '',
    -- the object's name: a person's, a county's, a customer's
    object_name VARCHAR(128) NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    ip VARCHAR(45) NOT NULL DEFAULT ''
);
CREATE INDEX ix_audit_log_at ON audit_log (at);
CREATE INDEX ix_audit_log_user_at ON audit_log (user_id, at);
CREATE INDEX ix_audit_log_action_at ON audit_log (action, at);

-- Reports (khhf/services/reports.py): every figure summed per local day and
-- per (manager, county, campaign, task type), so a month of a whole province
-- is a sum over a few hundred thousand rows rather than a scan of millions.
-- Rebuilt from the raw rows for the days touched since the last refresh
-- (`khhf reports refresh`, the timed job); tests prove sums = direct counts.
-- county, manager, campaign and task type are 0 where a row has none (0 is
-- no id), so the key has no NULLs and each bucket is one row.
CREATE TABLE report_daily (
    day DATE NOT NULL,
    manager_id INTEGER NOT NULL,
    county_id INTEGER NOT NULL,
    campaign_id INTEGER NOT NULL,
    task_type_id INTEGER NOT NULL,
    tasks_assigned INTEGER NOT NULL DEFAULT 0,
    calls_out INTEGER NOT NULL DEFAULT 0,
    calls_connected INTEGER NOT NULL DEFAULT 0,
    talk_seconds INTEGER NOT NULL DEFAULT 0,
    results_filed INTEGER NOT NULL DEFAULT 0,
    tasks_completed INTEGER NOT NULL DEFAULT 0,
    fb_calls INTEGER NOT NULL DEFAULT 0,
    fb_web INTEGER NOT NULL DEFAULT 0,
    fb_sms INTEGER NOT NULL DEFAULT 0,
    fb_keypad INTEGER NOT NULL DEFAULT 0,
    fb_seconds INTEGER NOT NULL DEFAULT 0,
    fb_within_1h INTEGER NOT NULL DEFAULT 0,
    callbacks_due INTEGER NOT NULL DEFAULT 0,
    callbacks_kept INTEGER NOT NULL DEFAULT 0,
    hotline_calls INTEGER NOT NULL DEFAULT 0,
    hotline_desk INTEGER NOT NULL DEFAULT 0,
    hotline_mobile INTEGER NOT NULL DEFAULT 0,
    hotline_group INTEGER NOT NULL DEFAULT 0,
    hotline_missed INTEGER NOT NULL DEFAULT 0,
    missed_cb_1h INTEGER NOT NULL DEFAULT 0,
    missed_cb_4h INTEGER NOT NULL DEFAULT 0,
    missed_cb_24h INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, county_id, manager_id, campaign_id, task_type_id)
);
CREATE INDEX ix_report_daily_county_day ON report_daily (county_id, day);
CREATE INDEX ix_report_daily_manager_day ON report_daily (manager_id, day);

-- Results filed per result code, per local day and bucket (outcome rates).
CREATE TABLE report_daily_results (
    day DATE NOT NULL,
    manager_id INTEGER NOT NULL,
    county_id INTEGER NOT NULL,
    campaign_id INTEGER NOT NULL,
    task_type_id INTEGER NOT NULL,
    result_code_id INTEGER NOT NULL,
    results INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, county_id, manager_id, campaign_id, task_type_id, result_code_id)
);
CREATE INDEX ix_report_daily_results_county_day ON report_daily_results (county_id, day);

-- The same sums rolled up per county, and per manager (all campaigns and
-- task types together): what a report without a campaign or task type
-- reads, a hundred or a few thousand rows a day instead of tens of thousands.
CREATE TABLE report_county_daily (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    tasks_assigned INTEGER NOT NULL DEFAULT 0,
    calls_out INTEGER NOT NULL DEFAULT 0,
    calls_connected INTEGER NOT NULL DEFAULT 0,
    talk_seconds INTEGER NOT NULL DEFAULT 0,
    results_filed INTEGER NOT NULL DEFAULT 0,
    tasks_completed INTEGER NOT NULL DEFAULT 0,
    fb_calls INTEGER NOT NULL DEFAULT 0,
    fb_web INTEGER NOT NULL DEFAULT 0,
    fb_sms INTEGER NOT NULL DEFAULT 0,
    fb_keypad INTEGER NOT NULL DEFAULT 0,
    fb_seconds INTEGER NOT NULL DEFAULT 0,
    fb_within_1h INTEGER NOT NULL DEFAULT 0,
    callbacks_due INTEGER NOT NULL DEFAULT 0,
    callbacks_kept INTEGER NOT NULL DEFAULT 0,
    hotline_calls INTEGER NOT NULL DEFAULT 0,
    hotline_desk INTEGER NOT NULL DEFAULT 0,
    hotline_mobile INTEGER NOT NULL DEFAULT 0,
    hotline_group INTEGER NOT NULL DEFAULT 0,
    hotline_missed INTEGER NOT NULL DEFAULT 0,
    missed_cb_1h INTEGER NOT NULL DEFAULT 0,
    missed_cb_4h INTEGER NOT NULL DEFAULT 0,
    missed_cb_24h INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, county_id)
);

CREATE TABLE report_manager_daily (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    manager_id INTEGER NOT NULL,
    tasks_assigned INTEGER NOT NULL DEFAULT 0,
    calls_out INTEGER NOT NULL DEFAULT 0,
    calls_connected INTEGER NOT NULL DEFAULT 0,
    talk_seconds INTEGER NOT NULL DEFAULT 0,
    results_filed INTEGER NOT NULL DEFAULT 0,
    tasks_completed INTEGER NOT NULL DEFAULT 0,
    fb_calls INTEGER NOT NULL DEFAULT 0,
    fb_web INTEGER NOT NULL DEFAULT 0,
    fb_sms INTEGER NOT NULL DEFAULT 0,
    fb_keypad INTEGER NOT NULL DEFAULT 0,
    fb_seconds INTEGER NOT NULL DEFAULT 0,
    fb_within_1h INTEGER NOT NULL DEFAULT 0,
    callbacks_due INTEGER NOT NULL DEFAULT 0,
    callbacks_kept INTEGER NOT NULL DEFAULT 0,
    hotline_calls INTEGER NOT NULL DEFAULT 0,
    hotline_desk INTEGER NOT NULL DEFAULT 0,
    hotline_mobile INTEGER NOT NULL DEFAULT 0,
    hotline_group INTEGER NOT NULL DEFAULT 0,
    hotline_missed INTEGER NOT NULL DEFAULT 0,
    missed_cb_1h INTEGER NOT NULL DEFAULT 0,
    missed_cb_4h INTEGER NOT NULL DEFAULT 0,
    missed_cb_24h INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, county_id, manager_id)
);
CREATE INDEX ix_report_manager_daily_manager_day ON report_manager_daily (manager_id, day);

CREATE TABLE report_county_results (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    result_code_id INTEGER NOT NULL,
    results INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, county_id, result_code_id)
);

-- and per county and task type: the task type page (its summary, trend and
-- outcome rates) without the finest table
CREATE TABLE report_type_daily (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    task_type_id INTEGER NOT NULL,
    tasks_assigned INTEGER NOT NULL DEFAULT 0,
    calls_out INTEGER NOT NULL DEFAULT 0,
    calls_connected INTEGER NOT NULL DEFAULT 0,
    talk_seconds INTEGER NOT NULL DEFAULT 0,
    results_filed INTEGER NOT NULL DEFAULT 0,
    tasks_completed INTEGER NOT NULL DEFAULT 0,
    fb_calls INTEGER NOT NULL DEFAULT 0,
    fb_web INTEGER NOT NULL DEFAULT 0,
    fb_sms INTEGER NOT NULL DEFAULT 0,
    fb_keypad INTEGER NOT NULL DEFAULT 0,
    fb_seconds INTEGER NOT NULL DEFAULT 0,
    fb_within_1h INTEGER NOT NULL DEFAULT 0,
    callbacks_due INTEGER NOT NULL DEFAULT 0,
    callbacks_kept INTEGER NOT NULL DEFAULT 0,
    hotline_calls INTEGER NOT NULL DEFAULT 0,
    hotline_desk INTEGER NOT NULL DEFAULT 0,
    hotline_mobile INTEGER NOT NULL DEFAULT 0,
    hotline_group INTEGER NOT NULL DEFAULT 0,
    hotline_missed INTEGER NOT NULL DEFAULT 0,
    missed_cb_1h INTEGER NOT NULL DEFAULT 0,
    missed_cb_4h INTEGER NOT NULL DEFAULT 0,
    missed_cb_24h INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, county_id, task_type_id)
);

CREATE TABLE report_type_results (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    task_type_id INTEGER NOT NULL,
    result_code_id INTEGER NOT NULL,
    results INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, county_id, task_type_id, result_code_id)
);

-- How far the report tables are built: the highest ids and the time of the
-- last refresh; rows newer than these mark the days the next refresh rebuilds.
CREATE TABLE report_state (
    id INTEGER PRIMARY KEY,
    refreshed_at TIMESTAMP NOT NULL,
    last_call_id INTEGER NOT NULL DEFAULT 0,
    last_task_id INTEGER NOT NULL DEFAULT 0,
    last_feedback_id INTEGER NOT NULL DEFAULT 0
);

-- the report refresh reads raw rows by time (and follows feedback to its
-- call through ix_feedback_call, above)
CREATE INDEX ix_calls_requested ON calls (requested_at);
CREATE INDEX ix_tasks_created ON tasks (created_at);
CREATE INDEX ix_feedback_created ON feedback (created_at);
CREATE INDEX ix_feedback_appointment ON feedback (appointment_at)
    WHERE appointment_at IS NOT NULL;
