"""The admin API's OpenAPI document validates, and every GET path it lists is really served."""

import json
import urllib.request

from openapi_spec_validator import validate

from conftest import ADMIN


def _get(url, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req) as resp:
        return resp.status, json.loads(resp.read())


def test_openapi_document_validates(stack):
    status, doc = _get(f"{stack.url}/admin/v1/openapi.json")
    assert status == 200
    validate(doc)
    assert doc["openapi"].startswith("3.")
    for path in ["/upstreams", "/keys", "/apps", "/users", "/login", "/routing", "/reload",
                 "/config/revisions", "/config/rollback", "/audit", "/models", "/aliases"]:
        assert path in doc["paths"], path
    assert doc["paths"]["/login"]["post"]["security"] == []


def test_every_documented_get_without_parameters_is_served(stack):
    _, doc = _get(f"{stack.url}/admin/v1/openapi.json")
    for path, item in doc["paths"].items():
        if "get" in item and "{" not in path:
            status, _ = _get(f"{stack.url}/admin/v1{path}", ADMIN)
            assert status == 200, path
