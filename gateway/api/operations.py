"""The building blocks of the OpenAPI document's operations (`gateway.api.openapi` assembles them): an operation
with the answers its role and body imply, a JSON answer, an error answer. A module of the API that documents its own
paths (`PATHS`, merged by `gateway.api.openapi`) builds them from these too."""

from __future__ import annotations

from typing import Any

from gateway.api.schemas import ref

JSON = "application/json"


def answer(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def json_answer(description: str, schema: dict[str, Any] | None = None,
                headers: dict[str, tuple[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    """A response; `headers` maps a name to its description and schema, each one always sent (required)."""
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {JSON: {"schema": schema}}
    if headers:
        out["headers"] = {name: {"description": text, "required": True, "schema": schema}
                          for name, (text, schema) in headers.items()}
    return out


def error(description: str, *codes: str) -> dict[str, Any]:
    """An error answer; `codes` are the values its `error` field takes."""
    schema: dict[str, Any] = ref("Error")
    if codes:
        schema = {"allOf": [ref("Error"), {"properties": {"error": {"enum": list(codes)}}}]}
    return json_answer(description, schema)


ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}


def operation(operation_id: str, summary: str, role: str | None, responses: dict[str, Any], *,
              description: str | None = None, parameters: list[dict[str, Any]] | None = None,
              body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One operation. A role adds 401 (and, above viewer, 403); a body adds 400 and 413."""
    op: dict[str, Any] = {"operationId": operation_id, "summary": summary}
    text = f"Needs the {role} role." if role else "Needs no token."
    op["description"] = f"{description} {text}" if description else text
    op["security"] = [{"bearer": []}] if role else []
    if parameters:
        op["parameters"] = parameters
    all_responses = dict(responses)
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
        all_responses.setdefault("400", error("The body is not JSON (`bad_json`), cannot be decoded as its "
                                              "Content-Encoding says (`bad_body`), or is not what is allowed; the "
                                              "message says what is wrong"))
        all_responses["413"] = error("The body is larger than api.max_body_kb")
    if role:
        all_responses.setdefault("401", answer("Unauthorized"))
        if ROLE_RANK[role] > 0:
            all_responses.setdefault("403", error(f"The token's role is below {role}", "forbidden"))
    op["responses"] = dict(sorted(all_responses.items()))
    return op
