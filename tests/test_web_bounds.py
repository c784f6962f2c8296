"""Out-of-range input is a 404 (ids in paths) or a 400 that says what is
wrong (query parameters), never a 500: generated from the app's own routes.

Every route with an id part gets huge, negative and zero ids; every GET
view gets its declared query parameters (webui.params.query), and a set of
common names it did not declare, with huge numbers and extreme dates; every
POST route gets huge numbers in every form field; as nobody and as each
role. SQLite's integers are 64-bit and Python's dates end at years 1 and
9999: both raised OverflowError (a 500) before."""

import re

import pytest
from werkzeug.routing import IntegerConverter

from khhf.models import ROLES
from simkit.web import log_in_as, make_app
from webui.access import API, PUBLIC, access_rule
from webui.params import MAX_ID, IdConverter

AS = {"admin": "admin", "supervisor": "supervisor", "manager": "manager1"}
HUGE_IDS = [str(MAX_ID + 1), "9" * 20, str(2**64), "1" * 5000]
OUT_OF_RANGE_IDS = [*HUGE_IDS, "0", "00", "-1", f"-{MAX_ID + 2}"]
BAD_NUMBERS = [str(MAX_ID + 1), "9" * 20, "1" * 5000, "-1", f"-{2**64}", "0", "1e9", "abc",
               "٣", "1.5", "0x10"]
BAD_DAYS = ["0001-01-01", "0001-01-02", "9999-12-31", "10000-01-01", "2024-02-30",
            "2024-13-01", "1969-12-31", "3000-01-01", "-2024-01-01", "yesterday", "9" * 20]
# names a view might read without declaring them: tried on every GET view
COMMON_NAMES = ("page", "county", "county_id", "id", "since", "until", "day", "manager",
                "task", "limit", "offset", "q", "action", "lang", "next")
EXTREMES = ["9" * 20, "-1", "0", "0001-01-01", "9999-12-31", "", "9" * 400]
# a NUL character is refused everywhere (PostgreSQL refuses it in text)
NUL = "a\x00b"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app, _ = make_app(tmp_path_factory.mktemp("bounds"), WTF_CSRF_ENABLED=False)
    return app


def _client(app, who):
    client = app.test_client()
    if who is not None:
        log_in_as(client, app, AS[who])
    return client


def _id_rules(app):
    return [rule for rule in app.url_map.iter_rules()
            if any(isinstance(c, IntegerConverter) for c in rule._converters.values())]


def test_every_id_part_is_bounded(app):
    rules = _id_rules(app)
    assert len(rules) >= 8
    for rule in rules:
        for name, converter in rule._converters.items():
            if isinstance(converter, IntegerConverter):
                assert isinstance(converter, IdConverter), (rule.rule, name)
                assert (converter.min, converter.max) == (1, MAX_ID), rule.rule


def _fill(rule, value):
    """The rule's path with `value` for every id; a choice (an export's
    format) is its first option."""
    path = re.sub(r"<any\(([^,)]+)[^>]*>", r"\1", rule.rule)
    return re.sub(r"<[^>]+>", value, path)


@pytest.mark.parametrize("who", [None, *ROLES])
def test_out_of_range_ids_are_not_found(app, who):
    client = _client(app, who)
    checked = 0
    for rule in _id_rules(app):
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for value in OUT_OF_RANGE_IDS:
                response = client.open(_fill(rule, value), method=method)
                assert response.status_code == 404, (method, rule.rule, value[:30], who)
                checked += 1
    assert checked >= 8 * len(OUT_OF_RANGE_IDS)


@pytest.mark.parametrize("who", [None, *ROLES])
def test_the_largest_id_is_an_ordinary_unknown_id(app, who):
    """2**63 - 1 reaches the view (SQLite holds it) and is not found there."""
    client = _client(app, who)
    for rule in _id_rules(app):
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(_fill(rule, str(MAX_ID)), method=method)
            allowed = access_rule(app, rule.endpoint)
            where = (method, rule.rule, who)
            if allowed == API:  # no token (tests/test_api.py tries them with one)
                assert response.status_code == 401, where
            elif who is None:
                assert response.status_code == 302, where
            elif who in allowed:
                assert response.status_code == 404, where
            else:
                assert response.status_code == 403, where


def _get_views(app):
    """(endpoint, url, declared query parameters) of every GET route, with
    the ids filled by a real object where the route has ids (1 is enough:
    the demo's first county, user and manager)."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if "GET" in rule.methods and rule.endpoint != "static":
            view = app.view_functions[rule.endpoint]
            yield rule.endpoint, _fill(rule, "1"), getattr(view, "query_params", {})


REPORT_FILTER = {"start", "end", "county", "manager", "campaign", "task_type"}


def test_views_that_read_query_parameters_declare_them(app):
    declared = {endpoint: set(params) for endpoint, _, params in _get_views(app) if params}
    assert declared == {"admin.managers_list": {"county"},
                        "audit.index": {"page", "since", "until"},
                        "campaigns.task_list": {"manager", "after"},
                        "customers.index": {"after", "county"},
                        "imports.job": {"page"},
                        "recordings.index": {"after", "county", "manager", "since", "until",
                                             "min_seconds", "max_seconds"},
                        "reports.index": REPORT_FILTER,
                        "reports.export_xlsx": REPORT_FILTER,
                        "reports.export_csv": REPORT_FILTER,
                        "reports.drill": REPORT_FILTER | {"figure", "day", "before"},
                        "reports.drill_xlsx": REPORT_FILTER | {"figure", "day"},
                        "reports.drill_csv": REPORT_FILTER | {"figure", "day"},
                        # the integration API's (tests/test_api_openapi.py checks them)
                        "api.tasks_list": {"cursor", "limit", "campaign_id", "status"},
                        "api.calls_list": {"cursor", "limit", "task_id"}}


@pytest.mark.parametrize("who", [None, *ROLES])
def test_bad_query_parameters_are_a_400_that_says_which(app, who):
    client = _client(app, who)
    checked = 0
    for endpoint, url, declared in _get_views(app):
        allowed = access_rule(app, endpoint)
        if allowed == API:
            continue  # a token's parameters: tests/test_api.py
        reaches_view = allowed == PUBLIC or (who is not None and who in allowed)
        for name, param in declared.items():
            with app.test_request_context():  # the label as the Chinese UI shows it
                label = str(param.label)
            values = BAD_DAYS if type(param).__name__ == "Day" else BAD_NUMBERS
            for value in values:
                response = client.get(url, query_string={name: value})
                where = (url, name, value[:30], who)
                if not reaches_view:
                    assert response.status_code in (302, 403, 404), where
                    continue
                assert response.status_code == 400, where
                message = response.get_data(as_text=True)
                assert label in message, where
                assert ("整数" in message) or ("YYYY-MM-DD" in message) \
                    or ("选项之一" in message), where
                checked += 1
    if who == "admin":
        assert checked >= 3 * len(BAD_DAYS)


@pytest.mark.parametrize("who", [None, *ROLES])
def test_common_names_with_extreme_values_never_fail(app, who):
    """The names a view declares one at a time (a declared one's 400 stops
    the view); the undeclared ones all in one request (a view that read one
    unchecked would fail on it), each extreme value in turn."""
    client = _client(app, who)
    for _, url, declared in _get_views(app):
        undeclared = [name for name in COMMON_NAMES if name not in declared]
        for value in EXTREMES:
            for query in [{name: value for name in undeclared},
                          *({name: value} for name in COMMON_NAMES if name in declared)]:
                response = client.get(url, query_string=query)
                # /healthz answers 503 here (no daemon runs beside this app): that is its answer
                ok = response.status_code < 500 or (url == "/healthz" and response.status_code == 503)
                assert ok, (url, sorted(query), value[:30], who)
        response = client.get(url, query_string={"q": NUL})
        assert response.status_code == 400, (url, who)


@pytest.mark.parametrize("who", [None, *ROLES])
def test_huge_numbers_in_forms_never_fail(app, who):
    """Every POST route, every form field any form has, set to a huge number;
    the ids in the path are real (1), so the views run and validate."""
    fields = ("county_id", "user_id", "manager_id", "task_id", "on_duty", "role", "status",
              "code", "name", "numbers", "primary", "fallback_strategy", "username",
              "display_name", "password", "employee_no", "desk_extension", "mobile",
              "is_active")
    client = _client(app, who)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if "POST" not in rule.methods or rule.endpoint in ("auth.logout",):
            continue
        for value in ("9" * 20, str(MAX_ID + 1), "-" + "9" * 20):
            response = client.post(_fill(rule, "1"), data={f: value for f in fields})
            assert response.status_code < 500, (rule.rule, value, who)
        response = client.post(_fill(rule, "1"), data={"display_name": NUL})
        assert response.status_code == 400, (rule.rule, who)
