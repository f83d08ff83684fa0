"""OpenAPI schema post-processing: the error answers every operation can give.

The views document their successful answers and the domain refusals (409); the errors
that DRF and the app's middleware give for any operation are added here once, so the
schema describes every status code a client can meet (schemathesis checks this).
"""

from __future__ import annotations

from typing import Any

DETAIL = "ErrorDetail"
VALIDATION = "ValidationErrors"

SCHEMAS: dict[str, dict[str, Any]] = {
    DETAIL: {
        "type": "object",
        "description": "A refusal with a message for people.",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
    VALIDATION: {
        "type": "object",
        "description": "Bad input: messages per field (`non_field_errors` for the whole "
                       "request), or `detail` when the request itself is malformed.",
        "additionalProperties": {},
    },
}
EVERY_OPERATION = {
    "401": "Not authenticated (no or a bad token or session).",
    "403": "The user's role does not allow this.",
    "429": "Too many requests; retry after the `Retry-After` header's seconds.",
}
WRITE_METHODS = {"post", "put", "patch"}


def _error(description: str, component: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{component}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _expected_errors(path: str, method: str, operation: dict[str, Any]) -> dict[str, Any]:
    errors = {code: _error(text, DETAIL) for code, text in EVERY_OPERATION.items()}
    query = [p for p in operation.get("parameters", []) if p.get("in") == "query"]
    if method in WRITE_METHODS or query:
        errors["400"] = _error("Bad input, with a message per field.", VALIDATION)
    if method in WRITE_METHODS | {"delete"}:
        errors["409"] = _error("Refused: the object's state or a placement, storage or job "
                               "rule forbids it (the message says which).", DETAIL)
    if "{" in path or any(p.get("name") == "page" for p in query):
        errors["404"] = _error("No such object (or page).", DETAIL)
    return errors


def add_error_responses(result: dict[str, Any], generator: Any, request: Any,
                        public: bool) -> dict[str, Any]:
    """A drf-spectacular postprocessing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for code, response in _expected_errors(path, method, operation).items():
                operation["responses"].setdefault(code, response)
    return result
