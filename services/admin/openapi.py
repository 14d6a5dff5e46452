"""The API's OpenAPI 3.1 document, built from ``routes.ROUTES`` so it lists exactly what is served.

``python -m services.admin.openapi`` (``make openapi``) writes ``services/admin/openapi.json``, the
checked-in copy the app serves at ``/openapi.json``; a test fails when the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from schemas import DEFAULT_SUBSCRIPTIONS, EVENT_NAMES
from services import __version__
from services.admin import validation
from services.admin.routes import ROTATE, ROUTES, WEBHOOK, WEBHOOKS, Route
from services.ops.api import MAX_LIMIT as RECOVERY_MAX_LIMIT
from services.ops.api import ROUTES as RECOVERY_ROUTES

PATH = Path(__file__).with_name("openapi.json")
JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _schemas() -> dict[str, Any]:
    events = {"type": "array", "items": {"type": "string", "enum": list(EVENT_NAMES)}, "minItems": 1}
    timeout = {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": validation.MAX_TIMEOUT_S}
    fields = {
        "url": {"type": "string", "format": "uri", "maxLength": validation.MAX_URL_LENGTH,
                "description": "http or https URL with a host; not a private network address"},
        "name": {"type": ["string", "null"], "maxLength": validation.MAX_NAME_LENGTH},
        "subscriptions": {**events, "description": f"Defaults to {', '.join(DEFAULT_SUBSCRIPTIONS)}"},
        "enabled": {"type": "boolean"},
        "disabled_reason": {"type": ["string", "null"], "maxLength": validation.MAX_REASON_LENGTH,
                            "description": "Kept only with enabled=false (default disabled_by_api)"},
        "connect_timeout_s": timeout,
        "total_timeout_s": timeout,
    }
    webhook = {
        "type": "object",
        "required": ["id", "name", "url", "account_id", "subscriptions", "enabled", "disabled_reason",
                     "created_at", "updated_at", "secret"],
        "properties": {
            "id": {"type": "integer", "description": "Unique, below 2**53 (safe in JavaScript)"},
            "account_id": {"type": "integer"},
            **{k: v for k, v in fields.items() if k != "url"},
            "url": {"type": "string"},
            "subscriptions": events,
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "secret": {"type": ["string", "null"],
                       "description": "Signing secret (whsec_...): in full only in create and rotate "
                                      "responses, masked (whsec_…abcd) elsewhere"},
        },
    }
    fields_object = {"type": "object", "properties": fields,
                     "description": "Unknown fields are ignored"}
    return {
        "Webhook": webhook,
        "WebhookFields": fields_object,
        "WebhookRequest": {"oneOf": [
            {"type": "object", "required": ["webhook"], "properties": {"webhook": _ref("WebhookFields")}},
            _ref("WebhookFields"),
        ], "description": "Wrapped in {\"webhook\": ...} or bare"},
        "WebhookEnvelope": {"type": "object", "required": ["payload"], "properties": {"payload": {
            "type": "object", "required": ["webhook"], "properties": {"webhook": _ref("Webhook")}}}},
        "WebhookList": {"type": "object", "required": ["payload"], "properties": {
            "payload": {"type": "object", "required": ["webhooks"],
                        "properties": {"webhooks": {"type": "array", "items": _ref("Webhook")}}},
            "meta": {"type": "object", "description": "Only with page or per_page",
                     "required": ["page", "per_page", "total"], "properties": {
                         "page": {"type": "integer"}, "per_page": {"type": "integer"},
                         "total": {"type": "integer", "description": "The account's webhooks"}}}}},
        "ValidationError": {"type": "object", "required": ["message", "attributes"], "properties": {
            "message": {"type": "string", "examples": [validation.URL_INVALID]},
            "attributes": {"type": "array", "items": {"type": "string"}}}},
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"}, "message": {"type": "string"}}},
    }


_ERRORS = {
    "401": _json(_ref("Error"), "Missing or unknown token"),
    "404": _json(_ref("Error"), "No such webhook in an account the token may access"),
    "503": _json(_ref("Error"), "The subscription table is loading or Kafka is unavailable"),
}
_RESPONSES: dict[str, dict[str, Any]] = {
    "listWebhooks": {"200": _json(_ref("WebhookList"), "The account's webhooks (secrets masked): all of them "
                                  "up to AKECE_API_MAX_WEBHOOKS_PER_ACCOUNT, or one page"),
                     "400": _json(_ref("Error"), "page or per_page is not a whole number in range")},
    "createWebhook": {"200": _json(_ref("WebhookEnvelope"), "The new webhook, its secret in full"),
                      "400": _json(_ref("Error"), "The body is not a JSON object"),
                      "422": _json(_ref("ValidationError"), "Invalid fields (Chatwoot's shape), or the account "
                                   "already has AKECE_API_MAX_WEBHOOKS_PER_ACCOUNT webhooks (attribute base)")},
    "getWebhook": {"200": _json(_ref("WebhookEnvelope"), "The webhook (secret masked)")},
    "updateWebhook": {"200": _json(_ref("WebhookEnvelope"), "The updated webhook (secret masked)"),
                      "400": _json(_ref("Error"), "The body is not a JSON object"),
                      "422": _json(_ref("ValidationError"), "Invalid fields (Chatwoot's shape)")},
    "deleteWebhook": {"200": {"description": "Deleted; empty body"}},
    "rotateWebhookSecret": {"200": _json(_ref("WebhookEnvelope"), "The webhook, its new secret in full")},
}
_RESPONSES["putWebhook"] = _RESPONSES["updateWebhook"]


def _parameters(path: str) -> list[dict[str, Any]]:
    names = [n for n in ("account_id", "id", "replay_id") if "{" + n + "}" in path]
    return [{"name": n, "in": "path", "required": True,
             "schema": {"type": "string" if n == "replay_id" else "integer"}} for n in names]


_PAGINATION = [
    {"name": "page", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
     "description": "1-based page (webhooks in id order); with it or per_page the answer has meta"},
    {"name": "per_page", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1},
     "description": "Webhooks per page (default 25, at most AKECE_API_MAX_WEBHOOKS_PER_ACCOUNT)"},
]
_WINDOW = {"type": "string", "description": "ISO-8601 or relative (2h, 30m, 7d); the window may span at most "
                                            "AKECE_API_MAX_WINDOW_S (default 7d)"}
_LIMIT = {"name": "limit", "in": "query", "required": False,
          "schema": {"type": "integer", "minimum": 1, "maximum": RECOVERY_MAX_LIMIT, "default": 100},
          "description": "At most this many items"}
_DLQ_FILTERS = (("event", "Only this event name"), ("reason", "Only this dead-letter reason"))
_SCAN_ERRORS = {
    "400": _json(_ref("Error"), "A bad parameter or body field (named in message), or a window longer than "
                                "AKECE_API_MAX_WINDOW_S"),
    "429": {"description": "The account already runs AKECE_API_MAX_SCANS_PER_ACCOUNT scans; retry after "
                           "Retry-After seconds",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": {JSON: {"schema": _ref("Error")}}},
}


def _recovery_operation(method: str, path: str, summary: str) -> dict[str, Any]:
    """Dead letters, replay and recover (``services.ops.api``): JSON in, JSON out."""
    name = path.rsplit("/", 1)[-1].strip("{}")
    scans = name in ("deliveries", "dead_letters", "replay", "recover")
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{name}", "summary": summary, "tags": ["recovery"],
        "parameters": _parameters(path),
        "responses": {"200": {"description": "OK", "content": {JSON: {"schema": {"type": "object"}}}},
                      **_ERRORS, **(_SCAN_ERRORS if scans else {})},
    }
    if method == "GET" and scans:
        windows = ["since", "until"] if name == "dead_letters" else ["since"]
        operation["parameters"] += [{"name": n, "in": "query", "required": False, "schema": _WINDOW}
                                    for n in windows]
        operation["parameters"].append(_LIMIT)
        if name == "dead_letters":
            operation["parameters"] += [{"name": n, "in": "query", "required": False, "schema": {"type": "string"},
                                         "description": text} for n, text in _DLQ_FILTERS]
    if method == "POST":
        operation["requestBody"] = {"required": False, "content": {JSON: {"schema": {
            "type": "object", "properties": {
                "since": _WINDOW,
                "until": {"type": "string"}, "event": {"type": "string"}, "reason": {"type": "string"},
                "delivery_id": {"type": ["string", "array"], "items": {"type": "string"},
                                "description": "replay only: just these dead letters (delivery ids)"},
                "dry_run": {"type": "boolean"}, "rate": {"type": "number"}, "force": {"type": "boolean"},
                "enable": {"type": "boolean"},
                "limit": {"type": "integer", "minimum": 0,
                          "description": "replay only: at most this many now, oldest first; the same request "
                                         "again sends the next ones (0: all)"}}}}}}
        operation["responses"]["202"] = {"description": "Started; the body has replay_id and count"}
        operation["responses"]["409"] = {"description": "Already replayed, or a run is active"}
    return operation


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id, "summary": route.summary, "tags": ["webhooks"],
        "parameters": _parameters(route.path) + (_PAGINATION if route.operation_id == "listWebhooks" else []),
        "responses": {**_RESPONSES[route.operation_id], **_ERRORS},
    }
    if route.operation_id in ("createWebhook", "updateWebhook", "putWebhook"):
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref("WebhookRequest")}}}
    return operation


def _plain(operation_id: str, summary: str, content_type: str = JSON) -> dict[str, Any]:
    return {"get": {"operationId": operation_id, "summary": summary, "tags": ["operations"], "security": [],
                    "responses": {"200": {"description": "OK", "content": {content_type: {}}},
                                  "503": {"description": "Not alive / not ready"}}}}


def build() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {WEBHOOKS: {}, WEBHOOK: {}, ROTATE: {}}
    for route in ROUTES:
        paths[route.path][route.method.lower()] = _operation(route)
    for method, path, summary in RECOVERY_ROUTES:
        paths.setdefault(path, {})[method.lower()] = _recovery_operation(method, path, summary)
    paths["/healthz"] = _plain("healthz", "Liveness of the process's workers")
    paths["/readyz"] = _plain("readyz", "Ready once the subscription table has caught up")
    paths["/metrics"] = _plain("metrics", "Prometheus metrics", "text/plain")
    paths["/openapi.json"] = _plain("openapi", "This document")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Akece Webhooks management API", "version": __version__,
                 "description": "Chatwoot-compatible webhook management. Webhooks are stored in a "
                                "compacted Kafka topic; a response is sent once the write is readable."},
        "servers": [{"url": "/"}],
        "security": [{"apiAccessToken": []}, {"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiAccessToken": {"type": "apiKey", "in": "header", "name": "api_access_token"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": _schemas(),
        },
    }


def render() -> bytes:
    return orjson.dumps(build(), option=orjson.OPT_INDENT_2) + b"\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PATH
    target.write_bytes(render())
    sys.stdout.write(f"wrote {target}\n")
