"""The OpenAPI document against a running gateway (the demo, as a subprocess): live answers of every operation
validate against the document it serves, and Schemathesis, an independent tester that makes its requests from the
document alone, finds no disagreement between the two."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.conftest import ADMIN, OPERATOR, ROOT, VIEWER, Daemon, require

API = "urn:venue-gateway:openapi"  # the document's URI in the validator's registry
AMP = "amp:r01.1"


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


class Document:
    """The served document, and its answers' schemas resolved and checked the way any JSON Schema 2020-12
    validator does (OpenAPI 3.1's schemas are that dialect)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.registry: Registry[Any] = Registry().with_resource(API, Resource.from_contents(doc, DRAFT202012))
        self.operations = {op["operationId"]: (path, method, op) for path, item in doc["paths"].items()
                           for method, op in item.items()}
        self.checked: dict[str, set[int]] = {}

    def validator(self, pointer: str) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator({"$ref": f"{API}#{pointer}"}, registry=self.registry,
                                               format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

    def check(self, operation_id: str, status: int, headers: dict[str, str], body: bytes) -> None:
        """The answer is documented for this operation: its status, its headers, its media type and its body."""
        path, method, op = self.operations[operation_id]
        assert str(status) in op["responses"], f"{operation_id}: {status} is not documented: {body[:300]!r}"
        pointer = f"/paths/{_escape(path)}/{method}/responses/{status}"
        answer = op["responses"][str(status)]
        if "$ref" in answer:
            pointer = answer["$ref"].removeprefix("#")
            answer = self.doc["components"]["responses"][pointer.rsplit("/", 1)[1]]
        lower = {k.lower(): v for k, v in headers.items()}
        for name, header in answer.get("headers", {}).items():
            if header.get("required"):
                assert name.lower() in lower, f"{operation_id} {status}: no {name} header"
            if name.lower() in lower:
                self.validator(f"{pointer}/headers/{_escape(name)}/schema").validate(lower[name.lower()])
        content = answer.get("content")
        if not content:
            assert body == b"", f"{operation_id} {status}: a body where none is documented"
        else:
            (media, _), = content.items()
            assert lower["content-type"].split(";")[0] == media, f"{operation_id} {status}: {lower['content-type']}"
            value = json.loads(body) if media == "application/json" else body.decode()
            self.validator(f"{pointer}/content/{_escape(media)}/schema").validate(value)
        self.checked.setdefault(operation_id, set()).add(status)


def call(daemon: Daemon, document: Document, operation_id: str, status: int, path: str | None = None,
         token: str | None = VIEWER, body: Any = None, headers: dict[str, str] | None = None) -> tuple[dict[str, str],
                                                                                                     bytes]:
    """Make the operation's request (`path` with its parameters; default, the documented path) and check the
    answer has `status` and is what the document says it is."""
    template, method, _ = document.operations[operation_id]
    got, answer_headers, answer = daemon.request(method.upper(), path or template, token, body, headers)
    assert got == status, f"{operation_id} {path}: {got} {answer[:300]!r}"
    document.check(operation_id, got, answer_headers, answer)
    return answer_headers, answer


async def _stream_frames(daemon: Daemon, document: Document) -> None:
    """The stream's frames, from a browser's way in (the token as a subprotocol), against the document's schemas."""
    url = daemon.url.replace("http", "ws", 1) + "/api/v1/twin/stream"
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(url, protocols=("venue-gateway", f"bearer.{VIEWER}")) as ws:
        first = await ws.receive(timeout=10)
        assert first.type == aiohttp.WSMsgType.TEXT
        snapshot = json.loads(first.data)
        assert snapshot["type"] == "snapshot"
        document.validator("/components/schemas/Twin").validate(snapshot["twin"])
        frame = json.loads((await ws.receive(timeout=10)).data)  # the virtual venue changes every second
        assert frame["type"] == "changes" and frame["from"] == snapshot["twin"]["version"]
        for change in frame["changes"]:
            document.validator("/components/schemas/Change").validate(change)


def test_every_operation_answers_as_its_document_says(demo: Daemon) -> None:
    doc = json.loads(demo.request("GET", "/api/v1/openapi.json", None)[2])
    validate(doc)  # a valid OpenAPI 3.1 document
    document = Document(doc)
    assert len(document.operations) == sum(len(item) for item in doc["paths"].values())  # every one has an id
    call(demo, document, "getOpenApi", 200, token=None)
    assert document.operations["fireEffect"][2]["requestBody"]["content"]["application/json"]["schema"]
    presets = doc["components"]["schemas"]["EffectRequest"]["properties"]["preset"]["enum"]
    assert "chorus" in presets  # the running configuration's presets

    call(demo, document, "getHealth", 200, token=None)
    call(demo, document, "getHealth", 200)
    etag = call(demo, document, "getTwin", 200)[0]["ETag"]
    for _ in range(50):  # the demo's twin moves on now and then: ask again with the tag it has then
        got, answer_headers, answer = demo.request("GET", "/api/v1/twin", VIEWER, headers={"If-None-Match": etag})
        if got == 304:
            break
        etag = answer_headers["ETag"]
    document.check("getTwin", got, answer_headers, answer)
    assert got == 304
    call(demo, document, "getTwin", 401, token=None)
    version = json.loads(demo.request("GET", "/api/v1/twin", VIEWER)[2])["version"]
    call(demo, document, "getTwinChanges", 200, f"/api/v1/twin/changes?since={version - 5}&limit=2")
    call(demo, document, "getTwinChanges", 400, f"/api/v1/twin/changes?since={version + 10**6}")
    call(demo, document, "getTwinChanges", 400, "/api/v1/twin/changes?since=-1")
    call(demo, document, "getTwinChanges", 400, "/api/v1/twin/changes?since=1&limit=10001")
    call(demo, document, "streamTwin", 426)
    call(demo, document, "streamTwin", 403, headers={"Origin": "https://elsewhere.example"})
    call(demo, document, "streamTwin", 400, "/api/v1/twin/stream?since=-1")
    asyncio.run(_stream_frames(demo, document))
    call(demo, document, "getAsset", 200, f"/api/v1/twin/assets/{AMP}")
    call(demo, document, "getAsset", 404, "/api/v1/twin/assets/nothing")
    asset = json.loads(demo.request("GET", f"/api/v1/twin/assets/{AMP}", VIEWER)[2])
    desired = f"/api/v1/twin/assets/{AMP}/desired"
    call(demo, document, "patchDesired", 403, desired, OPERATOR, {"enabled": True})
    call(demo, document, "patchDesired", 412, desired, ADMIN, {"enabled": True}, {"If-Match": '"1"'})
    call(demo, document, "patchDesired", 200, desired, ADMIN, {"enabled": True},
         {"If-Match": f'"{asset["version"]}"'})
    call(demo, document, "patchDesired", 422, desired, ADMIN, {"volume": 11})
    deep: dict[str, object] = {"enabled": True}
    for _ in range(253):
        deep = {"a": deep}
    call(demo, document, "patchDesired", 422, desired, ADMIN, deep)
    call(demo, document, "patchDesired", 400, desired, ADMIN, [1, 2])
    call(demo, document, "getTelemetry", 200, "/api/v1/telemetry?limit=5")
    call(demo, document, "getTelemetry", 200, "/api/v1/telemetry?limit=10000&since=0")
    call(demo, document, "getTelemetry", 400, "/api/v1/telemetry?limit=10001")
    call(demo, document, "getTelemetry", 400, "/api/v1/telemetry?since=-1")
    call(demo, document, "getCompliance", 200)
    now = int(time.time())
    call(demo, document, "getComplianceHistory", 200)
    call(demo, document, "getComplianceHistory", 200, "/api/v1/compliance/history.csv?from=&to=")
    call(demo, document, "getComplianceHistory", 200,
         f"/api/v1/compliance/history.csv?from={now - 600}&to=2100-01-01T00:00:00%2B01:00&zone=floor")
    call(demo, document, "getComplianceHistory", 400, "/api/v1/compliance/history.csv?from=yesterday")
    call(demo, document, "getComplianceHistory", 400, f"/api/v1/compliance/history.csv?from={now}&to={now - 1}")
    call(demo, document, "getSeries", 200, f"/api/v1/series?series={AMP}/temperature_c&series=nope/x&points=10")
    call(demo, document, "getSeries", 400, "/api/v1/series")
    call(demo, document, "getSeries", 401, f"/api/v1/series?series={AMP}/temperature_c", None)
    call(demo, document, "getReplay", 200, f"/api/v1/replay?at={now}")
    call(demo, document, "getReplay", 400, "/api/v1/replay?at=nan")
    call(demo, document, "fireEffect", 202, token=OPERATOR, body={"preset": "chorus", "zones": ["floor"]})
    call(demo, document, "fireEffect", 202, token=OPERATOR,
         body={"effect": {"kind": "pulse", "colour": "#ff8800", "bpm": 96}, "lead_ms": 2000})
    too_soon, _ = call(demo, document, "fireEffect", 429, token=OPERATOR,  # lit 100 ms after the last: over the cap
                       body={"effect": {"kind": "solid"}, "lead_ms": 2100})
    assert too_soon["Retry-After"] == "1"
    call(demo, document, "fireEffect", 200, token=OPERATOR,
         body={"preset": "sparkle", "preview": True, "duration_ms": 400})
    call(demo, document, "fireEffect", 400, token=OPERATOR, body={})
    call(demo, document, "fireEffect", 400, token=OPERATOR, body={"preset": "intro", "effect": {"kind": "solid"}})
    call(demo, document, "fireEffect", 400, token=OPERATOR, body={"effect": {"kind": "solid", "width": 17}})
    call(demo, document, "fireEffect", 404, token=OPERATOR, body={"preset": "nope"})
    call(demo, document, "fireEffect", 403, token=VIEWER, body={"preset": "intro"})
    call(demo, document, "stopEffects", 202, token=OPERATOR)
    call(demo, document, "blackout", 202, token=OPERATOR)
    call(demo, document, "getTempo", 200)
    call(demo, document, "setTempo", 200, token=OPERATOR, body={"bpm": 126})
    call(demo, document, "setTempo", 400, token=OPERATOR, body={"bpm": 1000})
    call(demo, document, "tapTempo", 200, token=OPERATOR)
    call(demo, document, "getShow", 200)
    call(demo, document, "getCues", 200)
    call(demo, document, "armCue", 403, "/api/v1/cues/drop/arm", VIEWER)
    call(demo, document, "armCue", 200, "/api/v1/cues/drop/arm", OPERATOR)
    call(demo, document, "skipCue", 200, "/api/v1/cues/drop/skip", OPERATOR)
    got, answer_headers, answer = demo.request("POST", "/api/v1/cues/outro/fire", OPERATOR)
    document.check("fireCue", got, answer_headers, answer)
    if got == 429:  # the pulse fired above lights every zone 2 s on: the cue is taken once the flash cap allows
        time.sleep(float(answer_headers["Retry-After"]))
        call(demo, document, "fireCue", 202, "/api/v1/cues/outro/fire", OPERATOR)
    call(demo, document, "fireCue", 429, "/api/v1/cues/outro/fire", OPERATOR)  # at once again: over the cap
    call(demo, document, "skipCue", 409, "/api/v1/cues/outro/skip", OPERATOR)
    call(demo, document, "fireCue", 404, "/api/v1/cues/nope/fire", OPERATOR)
    call(demo, document, "getAlerts", 200)
    call(demo, document, "getDmx", 200)
    call(demo, document, "getDmx", 200, "/api/v1/dmx?universe=1")
    call(demo, document, "getDmx", 400, "/api/v1/dmx?universe=9")
    call(demo, document, "getConfig", 200, token=ADMIN)
    call(demo, document, "getConfig", 403, token=OPERATOR)
    toml = {"Content-Type": "application/toml"}
    call(demo, document, "checkConfig", 200, token=ADMIN, body="[gateway]", headers=toml)
    call(demo, document, "checkConfig", 400, "/api/v1/config/check?offline=maybe", ADMIN, "", toml)
    call(demo, document, "checkConfig", 415, token=ADMIN, body={})
    call(demo, document, "getLog", 200, "/api/v1/log?after=0", ADMIN)
    call(demo, document, "getLog", 400, "/api/v1/log?after=x", ADMIN)
    call(demo, document, "getDashboard", 200)
    call(demo, document, "getDashboard", 401, token=None)
    call(demo, document, "getFloorPlan", 404)  # the demo draws its zones on no floor plan
    call(demo, document, "getMetrics", 200)
    call(demo, document, "getMetrics", 401, token="not-a-token")

    assert set(document.checked) == set(document.operations), "an operation without a checked answer"


CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
          "response_headers_conformance", "positive_data_acceptance", "negative_data_rejection",
          "missing_required_header", "unsupported_method", "ignored_auth", "allow_header_conformance")


def test_schemathesis_finds_no_disagreement(demo: Daemon, tmp_path: Path) -> None:
    """Requests made from the document (valid ones must be taken, invalid ones refused, every answer documented),
    25 per operation and phase, the same ones every run; tests/schemathesis.toml says what the document cannot."""
    require(importlib.util.find_spec("schemathesis") is not None, "schemathesis (pip install -e '.[test]')")
    argv = [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(ROOT / "tests" /
            "schemathesis.toml"), "run", f"{demo.url}/api/v1/openapi.json", "--header",
            f"Authorization: Bearer {ADMIN}", "--checks", ",".join(CHECKS), "--max-examples", "25",
            "--generation-deterministic", "--continue-on-failure", "--workers", "1", "--request-timeout", "10",
            "--report", "json", "--report-dir", str(tmp_path)]
    started = time.monotonic()
    run = subprocess.run(argv, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    took = time.monotonic() - started
    (report_file,) = tmp_path.glob("json-*.json")
    report = json.loads(report_file.read_text())
    assert run.returncode == 0 and not report["failures"] and not report["errors"], run.stdout[-6000:] + run.stderr
    operations = sum(len(item) for item in json.loads(demo.request("GET", "/api/v1/openapi.json", None)[2])
                     ["paths"].values())
    assert report["operations"]["tested"] >= operations - 1  # every one (but the document's own, which it reads)
    print(f"schemathesis: {report['test_cases']['generated']} requests in {took:.1f} s, no failures")
