"""What a retroactive test prints: text for people, one JSON document, JUnit XML for CI.

The text of one instance is also what ``assert_replays_equal`` raises with, so a failing
pytest shows the same diff the command does.

JUnit: one ``testsuite`` per instance, one ``testcase`` per *checked step range*: the range
cut at its checkpoints (``steps 1..40``, ``steps 41..80``), failed when a step in it diverged
(the failure lists those steps and the first diffs) or a migration check in it failed. A
testcase per step would be millions of lines on a long log; per divergent step would leave a
passing run with no testcase at all. Each suite carries the counts as properties (``steps``,
``equal``, ``diverged``, ``allowed``).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from runtime._cli_text import json_value

from ._compare import FieldDiff
from ._run import InstanceResult, StepDivergence

_SHORT = 80


def instance_text(r: InstanceResult, *, listed: int | None = None) -> list[str]:
    """An instance's verdict, counts, and its listed divergences with their diffs."""
    versions = ""
    if r.from_version is not None or r.to_version is not None:
        versions = f", version {r.from_version} -> {r.to_version}"
    start = f"checkpoint {r.start_from}" if r.start_from else "the log's start"
    verdict = "ok" if r.ok else "DIVERGED"
    lines = [
        f"{verdict}: {r.instance}: steps {r.first_lsn}..{r.last_lsn} through {r.app} "
        f"(from {start}{versions})",
        f"  {r.steps} checked: {r.equal} equal, {r.diverged} diverged, {r.allowed} allowed",
    ]
    if r.old_code_note:
        lines.append(f"  note: recorded code not traced: {r.old_code_note}")
    for d in r.divergences:
        lines += divergence_text(d)
    more = r.diverged - len(r.divergences)
    if more > 0:
        lines.append(f"  ... {more} more diverged steps (--max-divergences N lists more)")
    for d in r.allowed_divergences:
        lines += divergence_text(d)
    more = r.allowed - len(r.allowed_divergences)
    if more > 0:
        lines.append(f"  ... {more} more allowed steps")
    if r.migration is not None:
        if not r.migration:
            lines.append("  migration: commutes with replay at every checkpoint in range")
        for m in r.migration:
            lines += divergence_text(m)
    return lines


def divergence_text(d: StepDivergence) -> list[str]:
    label = "allowed" if d.allowed else "diverged"
    if d.check == "migration":
        label = "migration " + ("difference allowed" if d.allowed else "check failed")
    lines = [f"  {label} at step {d.lsn}: {describe_input(d.input)}"]
    if d.note:
        lines.append(f"    ({d.note})")
    lines += ["    " + diff_text(x) for x in d.diffs]
    if d.new_line is not None:
        lines.append(f"    new code:      {d.new_line}")
    if d.old_line is not None:
        lines.append(f"    recorded code: {d.old_line}")
    return lines


def diff_text(d: FieldDiff) -> str:
    mark = "  (allowed)" if d.allowed else ""
    if d.change == "added":
        body = f"only new: {_short(d.actual)}"
    elif d.change == "removed":
        body = f"only recorded: {_short(d.expected)}"
    else:
        body = f"recorded {_short(d.expected)}, new {_short(d.actual)}"
    return f"{d.where} ({d.kind}): {body}{mark}"


def describe_input(inp: dict[str, Any]) -> str:
    kind = inp.get("k")
    if kind == "call":
        args = ", ".join(_short(a) for a in inp.get("a", []))
        sender = inp.get("from")
        origin = f"from {sender}#{inp.get('seq')}" if sender else f"from outside ({inp.get('id')})"
        return f"call {inp.get('m')}({args}) {origin}"
    if kind == "start":
        return "start"
    return _short(inp)


def summary_rows(results: list[InstanceResult]) -> list[list[str]]:
    rows = []
    for r in results:
        migration = "-" if r.migration is None else str(len(r.migration_failures))
        rows.append(
            [
                r.instance,
                f"{r.first_lsn}..{r.last_lsn}",
                str(r.steps),
                str(r.equal),
                str(r.diverged),
                str(r.allowed),
                migration,
                "ok" if r.ok else "DIVERGED",
            ]
        )
    return rows


SUMMARY_HEADER = ["instance", "steps", "checked", "equal", "diverged", "allowed", "migration", ""]


def to_json(results: list[InstanceResult], app: str, errors: list[dict[str, str]]) -> str:
    doc = {
        "app": app,
        "ok": all(r.ok for r in results) and not errors,
        "instances": [r.to_json() for r in results],
        "errors": errors,
    }
    return json.dumps(json_value(doc), ensure_ascii=False)


def junit_xml(results: list[InstanceResult]) -> ET.ElementTree:
    """The JUnit document (see the module docstring for what a testcase is)."""
    root = ET.Element("testsuites", name="immortals upgrade test")
    total_tests = total_failures = 0
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=r.instance, errors="0", skipped="0")
        props = ET.SubElement(suite, "properties")
        for name in ("steps", "equal", "diverged", "allowed"):
            ET.SubElement(props, "property", name=name, value=str(getattr(r, name)))
        ET.SubElement(props, "property", name="log", value=str(r.log_dir))
        ET.SubElement(props, "property", name="app", value=r.app)
        failures = 0
        segments = r.segments()
        for first, last in segments:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"upgrade.{r.instance}",
                name=f"steps {first}..{last}",
            )
            bad = [n for n in r.diverged_lsns if first <= n <= last]
            shown = [d for d in r.divergences if first <= d.lsn <= last]
            migration = [m for m in r.migration_failures if first <= m.lsn <= last]
            if bad or migration:
                failures += 1
                parts = []
                if bad:
                    head = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
                    parts.append(f"{len(bad)} diverged steps: {head}")
                if migration:
                    parts.append(f"{len(migration)} migration check failures")
                failure = ET.SubElement(
                    case, "failure", message="; ".join(parts), type="divergence"
                )
                text: list[str] = []
                for d in shown + migration:
                    text += divergence_text(d)
                failure.text = "\n".join(text)
        suite.set("tests", str(len(segments)))
        suite.set("failures", str(failures))
        total_tests += len(segments)
        total_failures += failures
    root.set("tests", str(total_tests))
    root.set("failures", str(total_failures))
    return ET.ElementTree(root)


def write_junit(results: list[InstanceResult], path: Path) -> None:
    tree = junit_xml(results)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def _short(value: Any) -> str:
    text = json.dumps(json_value(value), ensure_ascii=False)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."
