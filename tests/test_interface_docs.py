"""The project's own docs hold its public interface, read from the code that serves it: every OSC address the `osc`
driver obeys or sends is in docs/osc.md with its type tags, and so is every alert it can send and every counter
it keeps; every MQTT topic, command and event the cloud link uses is in docs/cloud-protocol.md; and no doc points
at a file the repository lacks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from drivers.osc.addresses import OUTBOUND
from drivers.osc.driver import INBOUND  # from the driver: its methods register themselves as it is imported
from gateway.cloud.commands import COMMANDS
from gateway.cloud.link import SUBSCRIPTIONS

ROOT = Path(__file__).resolve().parent.parent
OSC_DOC = ROOT / "docs" / "osc.md"
CLOUD_DOC = ROOT / "docs" / "cloud-protocol.md"
OSC_DRIVER = ROOT / "drivers" / "osc" / "driver.py"


def table_rows(doc: Path) -> dict[str, list[str]]:
    """Markdown table rows by their first cell (`/vg/...` in backticks), each with the rows' text."""
    rows: dict[str, list[str]] = {}
    for line in doc.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(r"`[^`]+`", cells[0]):
            rows.setdefault(cells[0].strip("`"), []).append(line)
    return rows


def calls(path: Path, names: set[str]) -> list[ast.Call]:
    """Calls of a function or method with one of `names`, in the module at `path`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name in names:
                out.append(node)
    return out


def constant(path: Path, node: ast.expr) -> str:
    """A string literal, or a module-level NAME = "literal" of the same module."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        for stmt in ast.parse(path.read_text()).body:
            if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in stmt.targets)
                    and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
                return stmt.value.value
    raise AssertionError(f"{path.relative_to(ROOT)}:{node.lineno}: cannot read this name as a literal; "
                         "give it a literal or a module constant so the docs can be checked against it")


def kinds(path: Path, names: set[str], index: int, arity: int | None = None) -> set[str]:
    """The literal at argument `index` of each call of `names` (with `arity` arguments, when given). A call that
    passes on a parameter named `kind` relays kinds named elsewhere (the OSC driver relaying the core's alerts, the
    daemon turning an event into a payload) and is left out."""
    out = set()
    for c in calls(path, names):
        if len(c.args) <= index or (arity is not None and len(c.args) != arity):
            continue
        arg = c.args[index]
        if not (isinstance(arg, ast.Name) and arg.id == "kind"):
            out.add(constant(path, arg))
    return out


def in_backticks(doc: Path) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", doc.read_text()))


def test_every_osc_address_is_documented_with_its_type_tags() -> None:
    rows = table_rows(OSC_DOC)
    addresses = [a for a, _ in INBOUND] + list(OUTBOUND)
    assert {a.template for a in addresses} >= {"/vg/preset/{name}/fire", "/vg/dmx/{universe}/{channel}", "/vg/tempo",
                                               "/vg/out/alert"}
    for address in addresses:
        found = rows.get(address.template)
        assert found, f"docs/osc.md has no table row for {address.template}"
        assert len(found) == 1, f"docs/osc.md has {len(found)} table rows for {address.template}"
        missing = [t for t in address.types if f"`{t}`" not in found[0]]
        assert not missing, f"docs/osc.md: the row of {address.template} lacks the type tags {missing}"


def test_docs_osc_names_no_address_the_driver_lacks() -> None:
    known = {a.template for a, _ in INBOUND} | {a.template for a in OUTBOUND}
    documented = {first for first in table_rows(OSC_DOC) if first.startswith("/vg/")}
    assert documented - known == set(), "docs/osc.md documents addresses the driver does not have"


def test_every_alert_and_counter_of_the_osc_driver_is_documented() -> None:
    words = in_backticks(OSC_DOC)
    own = kinds(OSC_DRIVER, {"alert"}, 0)
    core = {k for path in sorted((ROOT / "gateway").rglob("*.py")) for k in kinds(path, {"raise_alert", "_alert"}, 0)}
    assert {"bad_arguments", "unknown_address", "unknown_preset"} <= own and "sound_level" in core
    assert not (own | core) - words, f"docs/osc.md lacks the alert kinds {sorted((own | core) - words)}"
    counters = {node.slice.value for node in ast.walk(ast.parse(OSC_DRIVER.read_text()))
                if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "counts" and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)}
    assert {"received", "not_allowed", "malformed"} <= counters
    assert not counters - words, f"docs/osc.md lacks the counters {sorted(counters - words)}"


def test_every_mqtt_topic_command_and_event_is_documented() -> None:
    """Topics as the link builds them (f"{self.root}/status"), commands from their table, event kinds from every
    call that makes an event, alert kinds (which reach the cloud as `alert` events) from every alert raised."""
    words = in_backticks(CLOUD_DOC)
    link = ROOT / "gateway" / "cloud" / "link.py"
    topics = set()
    for node in ast.walk(ast.parse(link.read_text())):
        if (isinstance(node, ast.JoinedStr) and len(node.values) == 2 and isinstance(node.values[0], ast.FormattedValue)
                and isinstance(node.values[0].value, ast.Attribute) and node.values[0].value.attr == "root"
                and isinstance(node.values[1], ast.Constant)):
            topics.add(str(node.values[1].value).lstrip("/"))
    topics |= set(SUBSCRIPTIONS)
    assert {"status", "twin/snapshot", "twin/delta", "telemetry", "events", "desired", "cmd/+"} <= topics
    topics.discard("cmd/+")  # the subscription to every command: each is checked below
    assert not topics - words, f"docs/cloud-protocol.md lacks the topics {sorted(topics - words)}"
    assert not set(COMMANDS) - words, f"docs/cloud-protocol.md lacks the commands {sorted(set(COMMANDS) - words)}"
    events = set()
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        events |= kinds(path, {"event"}, 0, arity=2) | kinds(path, {"event_payload"}, 1)
    assert {"effect_fired", "alert", "command_result", "outbox_evicted"} <= events
    assert not events - words, f"docs/cloud-protocol.md lacks the event kinds {sorted(events - words)}"
    alerts = set()  # every document with "alert": KIND, the daemon's own, those the core and the drivers raise
    for path in sorted([*(ROOT / "gateway").rglob("*.py"), *(ROOT / "drivers").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                alerts |= {constant(path, v) for k, v in zip(node.keys, node.values, strict=True)
                           if isinstance(k, ast.Constant) and k.value == "alert"}
    assert {"not_sent", "unit_failed", "sound_level", "cloud_refused"} <= alerts
    assert not alerts - words, f"docs/cloud-protocol.md lacks the alert kinds {sorted(alerts - words)}"


def test_no_doc_points_outside_the_repository() -> None:
    """Links resolve to files of the repository; paths named in backticks that end in .md exist; nothing refers to
    a directory beside the clone."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "models").glob("*.md"))]
    problems = []
    for doc in docs:
        text = doc.read_text()
        name = doc.relative_to(ROOT)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.partition("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                problems.append(f"{name}: link to {target}")
        for word in re.findall(r"`([^`\s]+\.md)`", text):
            if not any(ROOT.glob(word)):
                problems.append(f"{name}: {word} is not in the repository")
        problems += [f"{name}: {m}" for m in re.findall(r"\.\./shared\S*", text)]
    assert not problems, problems
