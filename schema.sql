-- KHHF's database schema, as SQLite creates it: GENERATED from the models
-- (khhf/models.py) by `khhf db schema > schema.sql`; do not edit by hand.
-- Change a model, then write a revision (khhf/migrations/versions/) that
-- brings existing databases there; tests/test_migrations.py checks that
-- this file, the models and the upgraded databases agree.
--
-- PostgreSQL differs only in that each `id` is an identity column. All
-- timestamps are UTC, without zone; the UI shows them in the site's zone.
-- Phone numbers are stored normalised (digits only, no country prefix).

-- A county branch (县区) and its unified numbers (统一号码).
CREATE TABLE counties (
    id INTEGER NOT NULL,
    code VARCHAR(32) NOT NULL,
    name VARCHAR(64) NOT NULL,
    fallback_strategy VARCHAR(16) DEFAULT 'ringall' NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PRIMARY KEY (id),
    CHECK (fallback_strategy IN ('ringall', 'hunt')),
    UNIQUE (code)
);

-- A county's unified number (统一号码), one of its pool: outbound calls
-- show one chosen by rule (khhf.services.number_pool), within its caps (0:
-- no cap) while active; every number routes the hotline, whatever its
-- state. At most one per county is primary: the published number.
CREATE TABLE unified_numbers (
    id INTEGER NOT NULL,
    county_id INTEGER NOT NULL,
    number VARCHAR(11) NOT NULL,
    is_primary BOOLEAN DEFAULT 0 NOT NULL,
    state VARCHAR(8) DEFAULT 'active' NOT NULL,
    daily_cap INTEGER DEFAULT '0' NOT NULL,
    hourly_cap INTEGER DEFAULT '0' NOT NULL,
    concurrent_cap INTEGER DEFAULT '0' NOT NULL,
    last_used_at TIMESTAMP,
    PRIMARY KEY (id),
    CHECK (length(number) = 11),
    CONSTRAINT ck_unified_numbers_state CHECK (state IN ('active', 'resting', 'retired')),
    CONSTRAINT ck_unified_numbers_caps CHECK (daily_cap >= 0 AND hourly_cap >= 0 AND concurrent_cap >= 0),
    FOREIGN KEY(county_id) REFERENCES counties (id) ON DELETE CASCADE,
    UNIQUE (number)
);
CREATE INDEX ix_unified_numbers_county ON unified_numbers (county_id);
CREATE UNIQUE INDEX ux_unified_numbers_primary ON unified_numbers (county_id) WHERE is_primary;

-- Everyone who logs in: administrators, customer managers, county
-- supervisors. county_id is NULL only for administrators, who see every
-- county; a log-in is valid while its session carries session_epoch.
CREATE TABLE users (
    id INTEGER NOT NULL,
    username VARCHAR(64) NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    display_name VARCHAR(64) NOT NULL,
    role VARCHAR(16) NOT NULL,
    county_id INTEGER,
    is_active BOOLEAN DEFAULT 1 NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_login_at TIMESTAMP,
    session_epoch INTEGER DEFAULT '0' NOT NULL,
    desk_extension VARCHAR(16),
    PRIMARY KEY (id),
    CHECK (role IN ('admin', 'manager', 'supervisor')),
    CHECK (role = 'admin' OR county_id IS NOT NULL),
    UNIQUE (username),
    FOREIGN KEY(county_id) REFERENCES counties (id),
    UNIQUE (desk_extension)
);
CREATE INDEX ix_users_county_role ON users (county_id, role);

-- A customer manager (客户经理): the telephony side of a 'manager' user.
-- One person per mobile: the hotline rings it and SMS replies from it are
-- matched to it.
CREATE TABLE managers (
    id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    county_id INTEGER NOT NULL,
    employee_no VARCHAR(32) NOT NULL,
    desk_extension VARCHAR(16),
    mobile VARCHAR(20),
    status VARCHAR(16) DEFAULT 'active' NOT NULL,
    on_duty BOOLEAN DEFAULT 0 NOT NULL,
    departed_at TIMESTAMP,
    successor_id INTEGER,
    PRIMARY KEY (id),
    CHECK (status IN ('active', 'departed')),
    CHECK (status = 'active' OR departed_at IS NOT NULL),
    UNIQUE (user_id),
    FOREIGN KEY(user_id) REFERENCES users (id),
    FOREIGN KEY(county_id) REFERENCES counties (id),
    UNIQUE (employee_no),
    UNIQUE (desk_extension),
    UNIQUE (mobile),
    FOREIGN KEY(successor_id) REFERENCES managers (id)
);
CREATE INDEX ix_managers_county_status ON managers (county_id, status, on_duty);

-- One row: a counter raised, in the same transaction, by every change to
-- what the hotline routes by besides the customer row (a manager's county,
-- desk, mobile, status or duty; a county's fallback strategy), through the
-- triggers ROUTING_TRIGGERS, whichever process or tool writes. The AGI
-- service keeps managers and counties in memory and reads this counter
-- with the caller's customer row on every call (khhf.services.hotline).
CREATE TABLE routing_generation (
    id INTEGER NOT NULL,
    generation INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (id),
    CHECK (id = 1)
);

-- A customer, by normalised phone number, owned by a manager.
CREATE TABLE customers (
    id INTEGER NOT NULL,
    phone VARCHAR(20) NOT NULL,
    name VARCHAR(64) DEFAULT '' NOT NULL,
    county_id INTEGER NOT NULL,
    manager_id INTEGER,
    do_not_call BOOLEAN DEFAULT 0 NOT NULL,
    note TEXT DEFAULT '' NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    consent BOOLEAN DEFAULT 0 NOT NULL,
    consent_at TIMESTAMP,
    consent_source VARCHAR(64) DEFAULT '' NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (phone),
    FOREIGN KEY(county_id) REFERENCES counties (id),
    FOREIGN KEY(manager_id) REFERENCES managers (id)
);
CREATE INDEX ix_customers_county ON customers (county_id);
CREATE INDEX ix_customers_manager ON customers (manager_id);

-- The do-not-call register (免打扰名单): a number no outbound call may
-- ring, with the date it was listed, its source (where the request came
-- from, e.g. 12321 complaint), how it was entered, who added it and why.
-- khhf.services.dial_rules refuses these numbers before any INVITE.
CREATE TABLE dnc_entries (
    id INTEGER NOT NULL,
    number VARCHAR(20) NOT NULL,
    listed_on DATE NOT NULL,
    source VARCHAR(64) DEFAULT '' NOT NULL,
    channel VARCHAR(16) NOT NULL,
    reason TEXT DEFAULT '' NOT NULL,
    added_by INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT ck_dnc_entries_channel CHECK (channel IN ('import', 'result', 'manual')),
    UNIQUE (number),
    FOREIGN KEY(added_by) REFERENCES users (id)
);

-- Who owned a customer when: kept for hand-overs when managers leave.
CREATE TABLE customer_assignments (
    id INTEGER NOT NULL,
    customer_id INTEGER NOT NULL,
    manager_id INTEGER NOT NULL,
    assigned_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    ended_at TIMESTAMP,
    reason VARCHAR(32) DEFAULT 'import' NOT NULL,
    assigned_by INTEGER,
    PRIMARY KEY (id),
    FOREIGN KEY(customer_id) REFERENCES customers (id) ON DELETE CASCADE,
    FOREIGN KEY(manager_id) REFERENCES managers (id),
    FOREIGN KEY(assigned_by) REFERENCES users (id)
);
CREATE INDEX ix_customer_assignments_customer ON customer_assignments (customer_id, assigned_at);
CREATE INDEX ix_customer_assignments_manager ON customer_assignments (manager_id);
CREATE UNIQUE INDEX ux_customer_assignments_open ON customer_assignments (customer_id) WHERE ended_at IS NULL;

-- Return visit (回访), marketing (营销), survey (调查), ... each with its
-- result codes and the short call script shown next to the task.
-- requires_consent: its calls ring only customers who consented.
CREATE TABLE task_types (
    id INTEGER NOT NULL,
    code VARCHAR(32) NOT NULL,
    name VARCHAR(64) NOT NULL,
    description TEXT DEFAULT '' NOT NULL,
    script TEXT DEFAULT '' NOT NULL,
    max_attempts INTEGER DEFAULT '3' NOT NULL,
    kind VARCHAR(16) DEFAULT 'revisit' NOT NULL,
    requires_consent BOOLEAN DEFAULT 0 NOT NULL,
    PRIMARY KEY (id),
    CHECK (max_attempts > 0),
    CONSTRAINT ck_task_types_kind CHECK (kind IN ('revisit', 'marketing', 'survey', 'other')),
    CONSTRAINT ck_task_types_revisit_consent CHECK (kind != 'revisit' OR NOT requires_consent),
    UNIQUE (code)
);

-- A result code a manager files; 'code' is what is typed by SMS or
-- keypad; a final one closes the task; one that stops calls (不再联系)
-- puts the customer's number on the do-not-call register when filed.
CREATE TABLE result_codes (
    id INTEGER NOT NULL,
    task_type_id INTEGER NOT NULL,
    code VARCHAR(4) NOT NULL,
    label VARCHAR(64) NOT NULL,
    is_success BOOLEAN DEFAULT 0 NOT NULL,
    is_final BOOLEAN DEFAULT 1 NOT NULL,
    stops_calls BOOLEAN DEFAULT 0 NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (task_type_id, code),
    FOREIGN KEY(task_type_id) REFERENCES task_types (id) ON DELETE CASCADE
);

-- An automatic outcome (自动结果): when a call of the task type ends
-- with `outcome` (the customer not reached), the system files
-- `result_code` itself; a "try again" code makes the task due again
-- `retry_minutes` later, at most `max_retries` times for this outcome,
-- after which it files `close_code` (final) instead.
CREATE TABLE outcome_rules (
    id INTEGER NOT NULL,
    task_type_id INTEGER NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    result_code_id INTEGER NOT NULL,
    retry_minutes INTEGER DEFAULT '0' NOT NULL,
    max_retries INTEGER DEFAULT '0' NOT NULL,
    close_code_id INTEGER,
    PRIMARY KEY (id),
    CONSTRAINT uq_outcome_rules_type_outcome UNIQUE (task_type_id, outcome),
    CONSTRAINT ck_outcome_rules_outcome CHECK (outcome IN ('no_answer', 'busy', 'unreachable', 'empty_number', 'rejected')),
    CONSTRAINT ck_outcome_rules_retry_minutes CHECK (retry_minutes >= 0),
    CONSTRAINT ck_outcome_rules_max_retries CHECK (max_retries >= 0),
    FOREIGN KEY(task_type_id) REFERENCES task_types (id) ON DELETE CASCADE,
    FOREIGN KEY(result_code_id) REFERENCES result_codes (id) ON DELETE CASCADE,
    FOREIGN KEY(close_code_id) REFERENCES result_codes (id) ON DELETE SET NULL
);

-- A batch of tasks (批次), optionally repeating in cycles (rounds);
-- `selection` says which customers each round calls.
CREATE TABLE campaigns (
    id INTEGER NOT NULL,
    county_id INTEGER NOT NULL,
    task_type_id INTEGER NOT NULL,
    name VARCHAR(128) NOT NULL,
    cycle VARCHAR(16) DEFAULT 'once' NOT NULL,
    status VARCHAR(16) DEFAULT 'draft' NOT NULL,
    starts_on DATE NOT NULL,
    ends_on DATE,
    selection VARCHAR(16) DEFAULT 'county' NOT NULL,
    created_by INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PRIMARY KEY (id),
    CHECK (cycle IN ('once', 'weekly', 'monthly', 'quarterly')),
    CHECK (status IN ('draft', 'active', 'closed')),
    CHECK (selection IN ('county', 'managers', 'list')),
    CHECK (ends_on IS NULL OR ends_on >= starts_on),
    FOREIGN KEY(county_id) REFERENCES counties (id),
    FOREIGN KEY(task_type_id) REFERENCES task_types (id),
    FOREIGN KEY(created_by) REFERENCES users (id)
);
CREATE INDEX ix_campaigns_county_status ON campaigns (county_id, status);

-- A manager whose customers a 'managers' campaign calls.
CREATE TABLE campaign_managers (
    campaign_id INTEGER NOT NULL,
    manager_id INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, manager_id),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE,
    FOREIGN KEY(manager_id) REFERENCES managers (id)
);

-- One round of a repeating campaign.
CREATE TABLE campaign_cycles (
    id INTEGER NOT NULL,
    campaign_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    starts_on DATE NOT NULL,
    ends_on DATE NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (campaign_id, seq),
    CHECK (seq > 0),
    CHECK (ends_on >= starts_on),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE
);

-- A distribution too large for one transaction (khhf.services.distribution):
-- its moves, decided at once, are kept here and written in chunks, each
-- chunk and `applied` in one transaction, so a run that stopped is resumed
-- from where it stopped and each move is written exactly once. Unfinished
-- (finished_at NULL): the campaign shows it in progress and takes no other
-- distribution; at most one per campaign.
CREATE TABLE distribution_runs (
    id INTEGER NOT NULL,
    campaign_id INTEGER NOT NULL,
    mode VARCHAR(16) NOT NULL,
    total INTEGER NOT NULL,
    applied INTEGER DEFAULT '0' NOT NULL,
    moved INTEGER DEFAULT '0' NOT NULL,
    moves BLOB,
    created_by INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    PRIMARY KEY (id),
    CHECK (applied >= 0 AND applied <= total),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (id) ON DELETE CASCADE,
    FOREIGN KEY(created_by) REFERENCES users (id)
);
CREATE UNIQUE INDEX ux_distribution_runs_unfinished ON distribution_runs (campaign_id) WHERE finished_at IS NULL;

-- One customer to be called by one manager, in one campaign (cycle).
CREATE TABLE tasks (
    id INTEGER NOT NULL,
    campaign_id INTEGER,
    cycle_id INTEGER,
    task_type_id INTEGER NOT NULL,
    customer_id INTEGER NOT NULL,
    manager_id INTEGER,
    status VARCHAR(16) DEFAULT 'pending' NOT NULL,
    priority INTEGER DEFAULT '0' NOT NULL,
    result_code_id INTEGER,
    attempts INTEGER DEFAULT '0' NOT NULL,
    max_attempts INTEGER DEFAULT '3' NOT NULL,
    appointment_at TIMESTAMP,
    last_call_at TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PRIMARY KEY (id),
    CHECK (status IN ('pending', 'dialing', 'connected', 'not_reached', 'done', 'cancelled')),
    CHECK (attempts >= 0),
    CHECK (max_attempts > 0),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (id),
    FOREIGN KEY(cycle_id) REFERENCES campaign_cycles (id),
    FOREIGN KEY(task_type_id) REFERENCES task_types (id),
    FOREIGN KEY(customer_id) REFERENCES customers (id),
    FOREIGN KEY(manager_id) REFERENCES managers (id),
    FOREIGN KEY(result_code_id) REFERENCES result_codes (id)
);
CREATE INDEX ix_tasks_appointment ON tasks (appointment_at) WHERE appointment_at IS NOT NULL;
CREATE INDEX ix_tasks_campaign_status ON tasks (campaign_id, status);
CREATE INDEX ix_tasks_created ON tasks (created_at);
CREATE INDEX ix_tasks_customer ON tasks (customer_id);
CREATE INDEX ix_tasks_manager_status ON tasks (manager_id, status, priority, appointment_at, id);
CREATE UNIQUE INDEX ux_tasks_cycle_customer ON tasks (cycle_id, customer_id) WHERE cycle_id IS NOT NULL;

-- One row per call attempt, outbound or inbound.
CREATE TABLE calls (
    id INTEGER NOT NULL,
    direction VARCHAR(8) NOT NULL,
    task_id INTEGER,
    customer_id INTEGER,
    manager_id INTEGER,
    county_id INTEGER,
    uniqueid VARCHAR(64),
    linkedid VARCHAR(64),
    customer_number VARCHAR(20) NOT NULL,
    unified_number VARCHAR(11),
    pbx_node VARCHAR(32) DEFAULT 'main' NOT NULL,
    state VARCHAR(24) DEFAULT 'requested' NOT NULL,
    requested_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    ring_at TIMESTAMP,
    answer_at TIMESTAMP,
    end_at TIMESTAMP,
    hangup_cause INTEGER,
    hangup_by VARCHAR(16),
    outcome VARCHAR(24),
    sip_code INTEGER,
    talk_seconds INTEGER,
    recording_path VARCHAR(255),
    recording_seconds REAL,
    recording_bytes INTEGER,
    recording_sha256 VARCHAR(64),
    manager_device VARCHAR(8) DEFAULT 'desk' NOT NULL,
    recording_deleted_at TIMESTAMP,
    recording_status VARCHAR(8),
    PRIMARY KEY (id),
    CHECK (direction IN ('outbound', 'inbound')),
    CHECK (state IN ('requested', 'manager_ringing', 'manager_answered', 'customer_ringing', 'connected', 'ended', 'failed')),
    CONSTRAINT ck_calls_recording_status CHECK (recording_status IN ('complete', 'partial', 'missing')),
    CHECK (hangup_by IN ('customer', 'manager', 'system')),
    CHECK (talk_seconds >= 0),
    CHECK (manager_device IN ('desk', 'mobile')),
    FOREIGN KEY(task_id) REFERENCES tasks (id),
    FOREIGN KEY(customer_id) REFERENCES customers (id),
    FOREIGN KEY(manager_id) REFERENCES managers (id),
    FOREIGN KEY(county_id) REFERENCES counties (id),
    UNIQUE (uniqueid)
);
CREATE INDEX ix_calls_county_time ON calls (county_id, requested_at);
CREATE INDEX ix_calls_customer ON calls (customer_id);
CREATE INDEX ix_calls_linkedid ON calls (linkedid);
CREATE INDEX ix_calls_manager_time ON calls (manager_id, requested_at);
CREATE INDEX ix_calls_number_time ON calls (customer_number, requested_at);
CREATE INDEX ix_calls_recorded ON calls (requested_at) WHERE recording_path IS NOT NULL;
CREATE INDEX ix_calls_recordings_kept ON calls (requested_at) WHERE recording_path IS NOT NULL AND recording_deleted_at IS NULL;
CREATE INDEX ix_calls_requested ON calls (requested_at);
CREATE INDEX ix_calls_task ON calls (task_id);
CREATE INDEX ix_calls_unified_time ON calls (unified_number, requested_at, direction, state);

-- Raw AMI/CEL events as received; dedup_key makes replays harmless
-- ('khhf': what KHHF recorded itself, a call never placed or lost).
CREATE TABLE call_events (
    id INTEGER NOT NULL,
    dedup_key VARCHAR(128) NOT NULL,
    source VARCHAR(8) NOT NULL,
    event VARCHAR(64) NOT NULL,
    uniqueid VARCHAR(64),
    linkedid VARCHAR(64),
    call_id INTEGER,
    event_at TIMESTAMP NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (id),
    CHECK (source IN ('ami', 'cel', 'agi', 'khhf')),
    UNIQUE (dedup_key),
    FOREIGN KEY(call_id) REFERENCES calls (id)
);
CREATE INDEX ix_call_events_call ON call_events (call_id);
CREATE INDEX ix_call_events_linkedid ON call_events (linkedid);

-- A PBX node of a cluster behind the SIP edge (docs/cluster.md), kept by
-- its own AMI bridge (khhf.services.nodes): where its bridge takes
-- click-to-dial requests, when the bridge last saw its Asterisk up, how
-- many calls it carried then. A node whose beat is older than
-- nodes.LOST_AFTER is lost: the first surviving bridge to see it sets
-- lost_at and lost_by and closes the node's open calls, once.
CREATE TABLE pbx_nodes (
    name VARCHAR(32) NOT NULL,
    bridge_host VARCHAR(64) NOT NULL,
    bridge_port INTEGER NOT NULL,
    sip_host VARCHAR(64) NOT NULL,
    sip_port INTEGER NOT NULL,
    joined_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    heartbeat_at TIMESTAMP NOT NULL,
    live_calls INTEGER DEFAULT '0' NOT NULL,
    accepting BOOLEAN DEFAULT 1 NOT NULL,
    lost_at TIMESTAMP,
    lost_by VARCHAR(32),
    PRIMARY KEY (name)
);

-- A result filed for a task, by web form, SMS reply or phone keypad, or
-- by the system for an unreached call (once per call).
CREATE TABLE feedback (
    id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    call_id INTEGER,
    manager_id INTEGER NOT NULL,
    result_code_id INTEGER NOT NULL,
    channel VARCHAR(8) NOT NULL,
    note TEXT DEFAULT '' NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    appointment_at TIMESTAMP,
    PRIMARY KEY (id),
    CONSTRAINT ck_feedback_channel CHECK (channel IN ('web', 'sms', 'keypad', 'system')),
    FOREIGN KEY(task_id) REFERENCES tasks (id),
    FOREIGN KEY(call_id) REFERENCES calls (id),
    FOREIGN KEY(manager_id) REFERENCES managers (id),
    FOREIGN KEY(result_code_id) REFERENCES result_codes (id)
);
CREATE INDEX ix_feedback_appointment ON feedback (appointment_at) WHERE appointment_at IS NOT NULL;
CREATE INDEX ix_feedback_call ON feedback (call_id);
CREATE INDEX ix_feedback_created ON feedback (created_at);
CREATE INDEX ix_feedback_manager_time ON feedback (manager_id, created_at);
CREATE INDEX ix_feedback_task ON feedback (task_id);
CREATE UNIQUE INDEX ux_feedback_system_call ON feedback (call_id) WHERE channel = 'system';

-- SMS out (notifications, result prompts) and in (replies with digit codes).
--
-- Out: queued -> sending (client_ref written, then submit_sm) -> sent, or
-- back to queued with next_attempt_at after a refused submit, or failed
-- after sms_max_attempts; 'unknown' when the connection was lost between
-- submit and its answer: never resent without an operator (smsgw/gateway.py).
-- In: received -> processed (the reply parser). `kind` says what an
-- outbound message is, `reply_outcome` what an inbound reply did.
CREATE TABLE sms_messages (
    id INTEGER NOT NULL,
    direction VARCHAR(8) NOT NULL,
    peer_number VARCHAR(20) NOT NULL,
    manager_id INTEGER,
    task_id INTEGER,
    body TEXT NOT NULL,
    status VARCHAR(16) DEFAULT 'queued' NOT NULL,
    smpp_message_id VARCHAR(64),
    client_ref VARCHAR(32),
    parts INTEGER DEFAULT '0' NOT NULL,
    error TEXT,
    attempts INTEGER DEFAULT '0' NOT NULL,
    next_attempt_at TIMESTAMP,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    sent_at TIMESTAMP,
    receipt_status VARCHAR(16),
    receipt_at TIMESTAMP,
    kind VARCHAR(16),
    reply_outcome VARCHAR(16),
    call_id INTEGER,
    ref VARCHAR(8),
    reply_to_id INTEGER,
    feedback_id INTEGER,
    PRIMARY KEY (id),
    CHECK (direction IN ('out', 'in')),
    CHECK (status IN ('queued', 'sending', 'sent', 'unknown', 'failed', 'received', 'processed')),
    CONSTRAINT ck_sms_messages_kind CHECK (kind IN ('prompt', 'answer', 'missed_call')),
    CONSTRAINT ck_sms_messages_reply_outcome CHECK (reply_outcome IN ('filed', 'unclear', 'ambiguous', 'duplicate', 'already_filed', 'no_prompt', 'unknown_ref', 'refused', 'stranger', 'error')),
    CONSTRAINT ck_sms_messages_kind_direction CHECK ((direction = 'out' AND reply_outcome IS NULL) OR (direction = 'in' AND kind IS NULL)),
    FOREIGN KEY(manager_id) REFERENCES managers (id),
    FOREIGN KEY(task_id) REFERENCES tasks (id),
    UNIQUE (client_ref),
    FOREIGN KEY(call_id) REFERENCES calls (id),
    FOREIGN KEY(reply_to_id) REFERENCES sms_messages (id),
    FOREIGN KEY(feedback_id) REFERENCES feedback (id)
);
CREATE INDEX ix_sms_messages_manager ON sms_messages (manager_id, direction, id);
CREATE INDEX ix_sms_messages_status ON sms_messages (direction, status, created_at);
CREATE UNIQUE INDEX ux_sms_messages_prompt_call ON sms_messages (call_id) WHERE kind = 'prompt';

-- One submit_sm of an outbound SMS (a long one is several, concatenated
-- by UDH); the SMSC's message id and its delivery receipt are per part.
CREATE TABLE sms_parts (
    id INTEGER NOT NULL,
    sms_id INTEGER NOT NULL,
    part_no INTEGER NOT NULL,
    smpp_message_id VARCHAR(64) NOT NULL,
    receipt_status VARCHAR(16),
    receipt_at TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE (sms_id, part_no),
    FOREIGN KEY(sms_id) REFERENCES sms_messages (id)
);
CREATE INDEX ix_sms_parts_message_id ON sms_parts (smpp_message_id);

-- An import of customers, managers or tasks from a spreadsheet, run in
-- the background by the web UI: checked first (a preview), committed on
-- request. The file and the report live under <home>/imports/<id>/.
CREATE TABLE import_jobs (
    id INTEGER NOT NULL,
    kind VARCHAR(16) NOT NULL,
    filename VARCHAR(255) NOT NULL,
    county_id INTEGER,
    campaign_id INTEGER,
    options TEXT DEFAULT '{}' NOT NULL,
    status VARCHAR(16) DEFAULT 'checking' NOT NULL,
    total_rows INTEGER DEFAULT '0' NOT NULL,
    accepted_rows INTEGER DEFAULT '0' NOT NULL,
    rejected_rows INTEGER DEFAULT '0' NOT NULL,
    error TEXT DEFAULT '' NOT NULL,
    created_by INTEGER,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    PRIMARY KEY (id),
    CHECK (kind IN ('customers', 'managers', 'tasks')),
    CHECK (status IN ('checking', 'checked', 'committing', 'committed', 'failed')),
    FOREIGN KEY(county_id) REFERENCES counties (id),
    FOREIGN KEY(campaign_id) REFERENCES campaigns (id),
    FOREIGN KEY(created_by) REFERENCES users (id)
);
CREATE INDEX ix_import_jobs_county ON import_jobs (county_id, created_at);

-- Every write, log-in and recording played (全程操作日志). The names are
-- kept as they were at the time; `detail` is a JSON object (khhf/audit.py)
-- that the UI renders as a sentence in the viewer's language.
CREATE TABLE audit_log (
    id INTEGER NOT NULL,
    at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    user_id INTEGER,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    actor_name VARCHAR(64) DEFAULT '' NOT NULL,
    action VARCHAR(64) NOT NULL,
    object_type VARCHAR(32) DEFAULT '' NOT NULL,
    object_id VARCHAR(64) DEFAULT '' NOT NULL,
    object_name VARCHAR(128) DEFAULT '' NOT NULL,
    detail TEXT DEFAULT '' NOT NULL,
    ip VARCHAR(45) DEFAULT '' NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(user_id) REFERENCES users (id)
);
CREATE INDEX ix_audit_log_action_at ON audit_log (action, at);
CREATE INDEX ix_audit_log_at ON audit_log (at);
CREATE INDEX ix_audit_log_user_at ON audit_log (user_id, at);

-- Reports (khhf/services/reports.py): every figure summed per local day
-- and per (manager, county, campaign, task type); 0 where a row has none.
-- Rebuilt from the raw rows for the days touched since the last refresh.
CREATE TABLE report_daily (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    manager_id INTEGER NOT NULL,
    campaign_id INTEGER NOT NULL,
    task_type_id INTEGER NOT NULL,
    tasks_assigned INTEGER DEFAULT '0' NOT NULL,
    calls_out INTEGER DEFAULT '0' NOT NULL,
    calls_connected INTEGER DEFAULT '0' NOT NULL,
    talk_seconds INTEGER DEFAULT '0' NOT NULL,
    results_filed INTEGER DEFAULT '0' NOT NULL,
    tasks_completed INTEGER DEFAULT '0' NOT NULL,
    fb_calls INTEGER DEFAULT '0' NOT NULL,
    fb_web INTEGER DEFAULT '0' NOT NULL,
    fb_sms INTEGER DEFAULT '0' NOT NULL,
    fb_keypad INTEGER DEFAULT '0' NOT NULL,
    fb_seconds INTEGER DEFAULT '0' NOT NULL,
    fb_within_1h INTEGER DEFAULT '0' NOT NULL,
    callbacks_due INTEGER DEFAULT '0' NOT NULL,
    callbacks_kept INTEGER DEFAULT '0' NOT NULL,
    hotline_calls INTEGER DEFAULT '0' NOT NULL,
    hotline_desk INTEGER DEFAULT '0' NOT NULL,
    hotline_mobile INTEGER DEFAULT '0' NOT NULL,
    hotline_group INTEGER DEFAULT '0' NOT NULL,
    hotline_missed INTEGER DEFAULT '0' NOT NULL,
    missed_cb_1h INTEGER DEFAULT '0' NOT NULL,
    missed_cb_4h INTEGER DEFAULT '0' NOT NULL,
    missed_cb_24h INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (day, county_id, manager_id, campaign_id, task_type_id)
);
CREATE INDEX ix_report_daily_county_day ON report_daily (county_id, day);
CREATE INDEX ix_report_daily_manager_day ON report_daily (manager_id, day);

-- Results filed per result code, per local day and bucket (outcome rates).
CREATE TABLE report_daily_results (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    manager_id INTEGER NOT NULL,
    campaign_id INTEGER NOT NULL,
    task_type_id INTEGER NOT NULL,
    result_code_id INTEGER NOT NULL,
    results INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (day, county_id, manager_id, campaign_id, task_type_id, result_code_id)
);
CREATE INDEX ix_report_daily_results_county_day ON report_daily_results (county_id, day);

-- The same sums rolled up per county (all campaigns and task types).
CREATE TABLE report_county_daily (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    tasks_assigned INTEGER DEFAULT '0' NOT NULL,
    calls_out INTEGER DEFAULT '0' NOT NULL,
    calls_connected INTEGER DEFAULT '0' NOT NULL,
    talk_seconds INTEGER DEFAULT '0' NOT NULL,
    results_filed INTEGER DEFAULT '0' NOT NULL,
    tasks_completed INTEGER DEFAULT '0' NOT NULL,
    fb_calls INTEGER DEFAULT '0' NOT NULL,
    fb_web INTEGER DEFAULT '0' NOT NULL,
    fb_sms INTEGER DEFAULT '0' NOT NULL,
    fb_keypad INTEGER DEFAULT '0' NOT NULL,
    fb_seconds INTEGER DEFAULT '0' NOT NULL,
    fb_within_1h INTEGER DEFAULT '0' NOT NULL,
    callbacks_due INTEGER DEFAULT '0' NOT NULL,
    callbacks_kept INTEGER DEFAULT '0' NOT NULL,
    hotline_calls INTEGER DEFAULT '0' NOT NULL,
    hotline_desk INTEGER DEFAULT '0' NOT NULL,
    hotline_mobile INTEGER DEFAULT '0' NOT NULL,
    hotline_group INTEGER DEFAULT '0' NOT NULL,
    hotline_missed INTEGER DEFAULT '0' NOT NULL,
    missed_cb_1h INTEGER DEFAULT '0' NOT NULL,
    missed_cb_4h INTEGER DEFAULT '0' NOT NULL,
    missed_cb_24h INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (day, county_id)
);

-- The same sums rolled up per manager.
CREATE TABLE report_manager_daily (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    manager_id INTEGER NOT NULL,
    tasks_assigned INTEGER DEFAULT '0' NOT NULL,
    calls_out INTEGER DEFAULT '0' NOT NULL,
    calls_connected INTEGER DEFAULT '0' NOT NULL,
    talk_seconds INTEGER DEFAULT '0' NOT NULL,
    results_filed INTEGER DEFAULT '0' NOT NULL,
    tasks_completed INTEGER DEFAULT '0' NOT NULL,
    fb_calls INTEGER DEFAULT '0' NOT NULL,
    fb_web INTEGER DEFAULT '0' NOT NULL,
    fb_sms INTEGER DEFAULT '0' NOT NULL,
    fb_keypad INTEGER DEFAULT '0' NOT NULL,
    fb_seconds INTEGER DEFAULT '0' NOT NULL,
    fb_within_1h INTEGER DEFAULT '0' NOT NULL,
    callbacks_due INTEGER DEFAULT '0' NOT NULL,
    callbacks_kept INTEGER DEFAULT '0' NOT NULL,
    hotline_calls INTEGER DEFAULT '0' NOT NULL,
    hotline_desk INTEGER DEFAULT '0' NOT NULL,
    hotline_mobile INTEGER DEFAULT '0' NOT NULL,
    hotline_group INTEGER DEFAULT '0' NOT NULL,
    hotline_missed INTEGER DEFAULT '0' NOT NULL,
    missed_cb_1h INTEGER DEFAULT '0' NOT NULL,
    missed_cb_4h INTEGER DEFAULT '0' NOT NULL,
    missed_cb_24h INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (day, county_id, manager_id)
);
CREATE INDEX ix_report_manager_daily_manager_day ON report_manager_daily (manager_id, day);

-- The same sums per county and task type (the task type page).
CREATE TABLE report_type_daily (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    task_type_id INTEGER NOT NULL,
    tasks_assigned INTEGER DEFAULT '0' NOT NULL,
    calls_out INTEGER DEFAULT '0' NOT NULL,
    calls_connected INTEGER DEFAULT '0' NOT NULL,
    talk_seconds INTEGER DEFAULT '0' NOT NULL,
    results_filed INTEGER DEFAULT '0' NOT NULL,
    tasks_completed INTEGER DEFAULT '0' NOT NULL,
    fb_calls INTEGER DEFAULT '0' NOT NULL,
    fb_web INTEGER DEFAULT '0' NOT NULL,
    fb_sms INTEGER DEFAULT '0' NOT NULL,
    fb_keypad INTEGER DEFAULT '0' NOT NULL,
    fb_seconds INTEGER DEFAULT '0' NOT NULL,
    fb_within_1h INTEGER DEFAULT '0' NOT NULL,
    callbacks_due INTEGER DEFAULT '0' NOT NULL,
    callbacks_kept INTEGER DEFAULT '0' NOT NULL,
    hotline_calls INTEGER DEFAULT '0' NOT NULL,
    hotline_desk INTEGER DEFAULT '0' NOT NULL,
    hotline_mobile INTEGER DEFAULT '0' NOT NULL,
    hotline_group INTEGER DEFAULT '0' NOT NULL,
    hotline_missed INTEGER DEFAULT '0' NOT NULL,
    missed_cb_1h INTEGER DEFAULT '0' NOT NULL,
    missed_cb_4h INTEGER DEFAULT '0' NOT NULL,
    missed_cb_24h INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (day, county_id, task_type_id)
);

-- Results per result code, per county and day.
CREATE TABLE report_county_results (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    result_code_id INTEGER NOT NULL,
    results INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (day, county_id, result_code_id)
);

-- Results per result code, per county, task type and day.
CREATE TABLE report_type_results (
    day DATE NOT NULL,
    county_id INTEGER NOT NULL,
    task_type_id INTEGER NOT NULL,
    result_code_id INTEGER NOT NULL,
    results INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (day, county_id, task_type_id, result_code_id)
);

-- How far the report tables are built: the highest ids and the time of
-- the last refresh; newer rows mark the days the next refresh rebuilds.
CREATE TABLE report_state (
    id INTEGER NOT NULL,
    refreshed_at TIMESTAMP NOT NULL,
    last_call_id INTEGER DEFAULT '0' NOT NULL,
    last_task_id INTEGER DEFAULT '0' NOT NULL,
    last_feedback_id INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (id)
);

-- A system of the operator's (CRM, BOSS) that calls /api/v1/ with a
-- bearer token `khhf_<token_id>_<secret>`: only SHA-256 of the token is
-- kept (secret_hash), and the key its webhooks are signed with, an HMAC
-- of the token (signing_key). Limited to one county; revoked at once.
CREATE TABLE api_clients (
    id INTEGER NOT NULL,
    name VARCHAR(64) NOT NULL,
    county_id INTEGER NOT NULL,
    token_id VARCHAR(16) NOT NULL,
    secret_hash VARCHAR(64) NOT NULL,
    signing_key VARCHAR(64) NOT NULL,
    operations TEXT DEFAULT '' NOT NULL,
    allowed_addresses TEXT DEFAULT '' NOT NULL,
    webhook_url VARCHAR(255) DEFAULT '' NOT NULL,
    rate_per_minute INTEGER DEFAULT '600' NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    created_by INTEGER,
    revoked_at TIMESTAMP,
    PRIMARY KEY (id),
    CHECK (rate_per_minute > 0),
    UNIQUE (name),
    FOREIGN KEY(county_id) REFERENCES counties (id),
    UNIQUE (token_id),
    FOREIGN KEY(created_by) REFERENCES users (id)
);

-- The first answer to a write sent with a client's key (Idempotency-Key):
-- a repeat of the key gets it again, and nothing is written twice.
CREATE TABLE api_idempotency (
    id INTEGER NOT NULL,
    client_id INTEGER NOT NULL,
    "key" VARCHAR(128) NOT NULL,
    operation VARCHAR(32) NOT NULL,
    status_code INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (client_id, "key"),
    FOREIGN KEY(client_id) REFERENCES api_clients (id) ON DELETE CASCADE
);
CREATE INDEX ix_api_idempotency_created ON api_idempotency (created_at);

-- The outbox: one event for one client, written in the transaction of
-- the event's cause (khhf.webhooks), sent by the timed-jobs daemon until the
-- receiver answers 2xx. event_id names the event (kind and row), so an
-- event is never queued twice for a client, and receivers de-duplicate by it.
CREATE TABLE webhook_deliveries (
    id INTEGER NOT NULL,
    client_id INTEGER NOT NULL,
    event_id VARCHAR(64) NOT NULL,
    kind VARCHAR(24) NOT NULL,
    payload TEXT NOT NULL,
    status VARCHAR(16) DEFAULT 'pending' NOT NULL,
    attempts INTEGER DEFAULT '0' NOT NULL,
    next_attempt_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    last_error TEXT DEFAULT '' NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE (client_id, event_id),
    CHECK (kind IN ('result.filed', 'call.ended', 'hotline.missed', 'sms.reply')),
    CHECK (status IN ('pending', 'delivered', 'failed')),
    FOREIGN KEY(client_id) REFERENCES api_clients (id) ON DELETE CASCADE
);
CREATE INDEX ix_webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);

-- A job that must run once across the nodes (docs/cluster.md): who
-- holds it now, until when, and its last run. A run takes the row with one
-- conditional statement, renews `expires_at` while it works and releases
-- it (expires_at NULL) when done; a node killed mid-run loses it when
-- `expires_at` passes. The row stays, so it says where the job last ran.
CREATE TABLE job_leases (
    name VARCHAR(64) NOT NULL,
    node VARCHAR(32) NOT NULL,
    pid INTEGER NOT NULL,
    expires_at TIMESTAMP,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    ok BOOLEAN,
    error TEXT DEFAULT '' NOT NULL,
    runs INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (name)
);

-- Triggers: every change the hotline routes by raises routing_generation.
CREATE TRIGGER tr_managers_routing_ins AFTER INSERT ON managers BEGIN UPDATE routing_generation SET generation = generation + 1; END;
CREATE TRIGGER tr_managers_routing_del AFTER DELETE ON managers BEGIN UPDATE routing_generation SET generation = generation + 1; END;
CREATE TRIGGER tr_managers_routing_upd AFTER UPDATE OF county_id, desk_extension, mobile, status, on_duty ON managers BEGIN UPDATE routing_generation SET generation = generation + 1; END;
CREATE TRIGGER tr_counties_routing_ins AFTER INSERT ON counties BEGIN UPDATE routing_generation SET generation = generation + 1; END;
CREATE TRIGGER tr_counties_routing_del AFTER DELETE ON counties BEGIN UPDATE routing_generation SET generation = generation + 1; END;
CREATE TRIGGER tr_counties_routing_upd AFTER UPDATE OF fallback_strategy ON counties BEGIN UPDATE routing_generation SET generation = generation + 1; END;
