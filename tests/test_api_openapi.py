"""The OpenAPI document (/api/v1/openapi.json) is true to the blueprint:
every route of webui/api is documented with its methods, path parameters
and query parameters, every documented operation is a route, and each
names the operation a token needs."""

from __future__ import annotations

import re

import pytest

from khhf.models import ApiOperation
from simkit.web import make_app
from webui.access import API, PUBLIC, access_rule
from webui.api import openapi

IGNORED_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return make_app(tmp_path_factory.mktemp("openapi"))[0]


def _routes(app) -> dict[tuple[str, str], object]:
    """{(OpenAPI path, method): rule} of the API blueprint."""
    out = {}
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api."):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule.removeprefix("/api/v1"))
        for method in rule.methods - IGNORED_METHODS:
            out[(path, method.lower())] = rule
    return out


def test_the_document_is_served_and_is_openapi_3(app):
    response = app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.json["openapi"].startswith("3.")
    assert response.json == openapi.document()


def test_every_route_is_documented_and_every_documented_path_is_a_route(app):
    routes = _routes(app)
    documented = {(path, method) for path, item in openapi.document()["paths"].items()
                  for method in item}
    assert set(routes) == documented


def test_parameters_match(app):
    doc = openapi.document()["paths"]
    for (path, method), rule in _routes(app).items():
        operation = doc[path][method]
        params = operation.get("parameters", [])
        in_path = {p["name"] for p in params if p["in"] == "path"}
        assert in_path == set(rule.arguments), (path, method)
        view = app.view_functions[rule.endpoint]
        in_query = {p["name"] for p in params if p["in"] == "query"}
        assert in_query == set(getattr(view, "query_params", {})), (path, method)


def test_each_operation_names_the_token_operation_it_needs(app):
    doc = openapi.document()["paths"]
    for (path, method), rule in _routes(app).items():
        operation = doc[path][method]
        rule_kind = access_rule(app, rule.endpoint)
        if rule_kind == PUBLIC:
            assert operation["security"] == [], path
            continue
        assert rule_kind == API
        needed = operation["x-khhf-operation"]
        assert needed == "any" or needed in set(ApiOperation), (path, method)
        # the view checks the same operation the document names
        closure = app.view_functions[rule.endpoint].__closure__ or ()
        names = {c.cell_contents for c in closure if isinstance(c.cell_contents, str)}
        assert (needed if needed != "any" else "read") in names, (path, method, names)
