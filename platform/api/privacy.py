"""Data protection over the API (admins): /api/v1/admin/privacy/access, /erase, /retention.

The same PrivacyService as `xrm privacy ...` (docs/privacy.md). Request bodies
are checked against the schemas the OpenAPI document publishes.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from litestar import Request, Response, post

from ..errors import Problem, ValidationFailed
from ..privacy.service import PrivacyService, SubjectQuery
from .spec import error_responses as _errors, json_content as _json, ok_response as _ok, ref as _ref
from .common import platform_of, principal_of, read_json
from .problems import PermissionDenied, json_response

__all__ = ["privacy_handlers", "privacy_paths", "privacy_schemas"]

_TEXT = {"type": "string", "minLength": 1, "maxLength": 320, "pattern": "^[^\\u0000]*$"}
_SUBJECT = {
    "type": "object",
    "additionalProperties": False,
    "description": "The person: an e-mail address, a phone number and/or one of their records (entity and record_id)",
    "properties": {
        "email": _TEXT, "phone": _TEXT,
        "entity": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        "record_id": {"type": "string", "format": "uuid"},
    },
    "anyOf": [{"required": ["email"]}, {"required": ["phone"]}, {"required": ["entity", "record_id"]}],
}
_BODIES: dict[str, dict[str, Any]] = {
    "SubjectInput": _SUBJECT,
    "ErasureInput": {**_SUBJECT, "properties": {**_SUBJECT["properties"], "dry_run": {"type": "boolean", "default": False}}},
    "RetentionInput": {"type": "object", "additionalProperties": False, "properties": {
        "entity": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$", "description": "Only this entity"},
        "dry_run": {"type": "boolean", "default": False}}},
}
_VALIDATORS = {name: Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER) for name, schema in _BODIES.items()}
_REF = {"type": "object", "required": ["entity", "id"], "properties": {"entity": {"type": "string"}, "id": {"type": "string", "format": "uuid"}}}


def privacy_schemas() -> dict[str, Any]:
    item = {"type": "object", "required": ["entity", "id", "matched_by", "record"], "properties": {
        "entity": {"type": "string"}, "id": {"type": "string", "format": "uuid"},
        "matched_by": {"type": "array", "items": {"type": "string"}}, "record": {"type": "object"},
        "personal_fields": {"type": "array", "items": {"type": "string"}},
        "history": {"type": "array", "items": _ref("AuditEntry")}}}
    return {
        **_BODIES,
        "AccessBundle": {"type": "object", "required": ["format", "generated_at", "subject_records", "related_records"], "properties": {
            "format": {"type": "string"}, "generated_at": {"type": "string", "format": "date-time"}, "requested_by": {"type": "string"},
            "subject_records": {"type": "array", "items": item}, "related_records": {"type": "array", "items": item}}},
        "ErasureReport": {"type": "object", "required": ["dry_run", "records", "related_records_kept"], "properties": {
            "dry_run": {"type": "boolean"},
            "records": {"type": "array", "items": {**_REF, "properties": {**_REF["properties"], "fields": {"type": "array", "items": {"type": "string"}}}}},
            "related_records_kept": {"type": "integer"}, "audit_entries_redacted": {"type": "integer"},
            "outbox_events_redacted": {"type": "integer"}, "archived_values_redacted": {"type": "integer"},
            "plugin_rows_redacted": {"type": "integer", "description": "Rows of plugins' own tables (e-mails, jobs, links)"},
            "archive_file_entries_redacted": {"type": "integer", "description": "Entries in audit archive files (xrm audit archive)"},
            "archive_files_missing": {"type": "array", "items": {"type": "string"},
                                      "description": "Archive files the database knows of that are no longer where they were written"}}},
        "RetentionReport": {"type": "object", "required": ["rules"], "properties": {"rules": {"type": "array", "items": {
            "type": "object", "required": ["entity", "action", "days", "after", "dry_run", "due", "kept_referenced"], "properties": {
                "entity": {"type": "string"}, "action": {"type": "string", "enum": ["anonymise", "delete"]}, "days": {"type": "integer"},
                "after": {"type": "string"}, "dry_run": {"type": "boolean"}, "due": {"type": "integer"}, "kept_referenced": {"type": "integer"},
                "sample": {"type": "array", "items": {"type": "string", "format": "uuid"}}}}}}},
    }


def privacy_paths() -> dict[str, Any]:
    def op(operation_id: str, summary: str, body: str, result: str) -> dict[str, Any]:
        return {"post": {
            "operationId": operation_id, "tags": ["Data protection"], "summary": summary,
            "requestBody": {"required": True, "content": _json(_ref(body))},
            "responses": {**_ok(result, _ref(result)), **_errors("400", "401", "403", "404", "413", "422")},
        }}

    return {
        "/api/v1/admin/privacy/access": op("privacy_access", "Everything stored about a person (GDPR Art. 15), admins", "SubjectInput", "AccessBundle"),
        "/api/v1/admin/privacy/erase": op("privacy_erase", "Erase a person: anonymise personal fields, redact the trail (GDPR Art. 17)",
                                          "ErasureInput", "ErasureReport"),
        "/api/v1/admin/privacy/retention": op("privacy_retention", "Apply the entities' retention rules (or a dry run)",
                                              "RetentionInput", "RetentionReport"),
    }


async def _service_and_body(request: Request[Any, Any, Any], schema: str) -> tuple[PrivacyService, dict[str, Any]]:
    principal = await principal_of(request)
    if "admin" not in principal.roles:
        raise PermissionDenied("Data-protection requests (access, erasure, retention) need the admin role")
    body = await read_json(request)
    errors = sorted(_VALIDATORS[schema].iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        raise ValidationFailed("privacy", [Problem("".join(f"/{p}" for p in e.absolute_path), e.message) for e in errors])
    platform = platform_of(request)
    return PrivacyService(platform.db, platform.registry, principal, platform.policy), body


def _subject(body: dict[str, Any]) -> SubjectQuery:
    return SubjectQuery(email=body.get("email"), phone=body.get("phone"), entity=body.get("entity"), record_id=body.get("record_id"))


@post("/api/v1/admin/privacy/access", status_code=200)
async def privacy_access(request: Request[Any, Any, Any]) -> Response[bytes]:
    service, body = await _service_and_body(request, "SubjectInput")
    return json_response(await service.access(_subject(body)))


@post("/api/v1/admin/privacy/erase", status_code=200)
async def privacy_erase(request: Request[Any, Any, Any]) -> Response[bytes]:
    service, body = await _service_and_body(request, "ErasureInput")
    return json_response(await service.erase(_subject(body), dry_run=bool(body.get("dry_run"))))


@post("/api/v1/admin/privacy/retention", status_code=200)
async def privacy_retention(request: Request[Any, Any, Any]) -> Response[bytes]:
    service, body = await _service_and_body(request, "RetentionInput")
    return json_response({"rules": await service.retention(body.get("entity"), dry_run=bool(body.get("dry_run")))})


privacy_handlers = [privacy_access, privacy_erase, privacy_retention]
