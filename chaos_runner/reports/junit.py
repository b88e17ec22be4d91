"""The `junit` reporter: junit.xml, so CI systems (GitLab, Jenkins) show a run as tests.

Each SLO verdict is a test case; a run that could not be judged, and a fault that went wrong,
are test cases too, so that the file fails exactly when the run's exit code is not 0.
"""

from __future__ import annotations

import datetime as _dt
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

from chaos_runner.reports import format_measure, write_atomic
from chaos_runner.result import FaultOutcome, RunResult, SloVerdict

# Characters XML 1.0 cannot hold at all, even escaped; error texts from processes may carry
# them (ANSI escapes, NULs), and ElementTree would write a file no parser reads.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def _case(suite: ET.Element, classname: str, name: str) -> ET.Element:
    # JUnit has no duration for a verdict; time is required by the strictest schemas.
    return ET.SubElement(
        suite, "testcase", classname=_text(classname), name=_text(name), time="0.000"
    )


def _outcome(case: ET.Element, tag: str, message: str, kind: str, body: str) -> None:
    element = ET.SubElement(case, tag, message=_text(message), type=_text(kind))
    element.text = _text(body) if body else None


def _slo_message(slo: SloVerdict) -> str:
    observed = format_measure(slo.observed, slo.unit)
    target = format_measure(slo.target, slo.unit)
    return f"observed {observed}, target {slo.comparison} {target}"


def _fault_problem(fault: FaultOutcome) -> str | None:
    """Why a fault's test case fails, or None when it went as planned."""
    if fault.injected_at is None:
        return "never injected"
    if fault.reversible and not fault.reverted:
        return "not reverted: the target may still be faulted"
    if fault.errors:
        return f"{len(fault.errors)} error(s) while injecting or reverting"
    return None


def _system_out(result: RunResult) -> str:
    lines = [f"status: {result.status} (exit code {result.exit_code})"]
    if result.reason:
        lines.append(f"reason: {result.reason}")
    if result.journal:
        lines.append(f"journal: {result.journal}")
    lines.extend(f"error: {error}" for error in result.errors)
    return "\n".join(lines) + "\n"


def build_tree(result: RunResult) -> ET.ElementTree[ET.Element]:
    """The JUnit document of a run: one testsuite inside a testsuites root."""
    classname = f"chaos_runner.{result.experiment}"
    suite = ET.Element("testsuite", name=_text(f"chaos-runner: {result.experiment}"))
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("status", result.status),
        ("exit_code", str(result.exit_code)),
        ("run_id", result.run_id),
    ):
        ET.SubElement(properties, "property", name=key, value=_text(value))

    failures = errors = skipped = 0
    for slo in result.slos:
        case = _case(suite, classname, slo.name)
        if not slo.passed:
            _outcome(case, "failure", _slo_message(slo), slo.kind, slo.detail)
            failures += 1
    for fault in result.faults:
        problem = _fault_problem(fault)
        if problem is not None:
            case = _case(suite, classname, f"fault {fault.name}")
            _outcome(case, "failure", problem, fault.kind, "\n".join(fault.errors))
            failures += 1
    reason = result.reason or result.status
    if result.status == "dry_run":
        # A plan was checked and nothing was done: exit code 0, so neither failure nor error.
        why = result.reason or "dry run: nothing was injected"
        ET.SubElement(_case(suite, classname, "run"), "skipped", message=_text(why))
        skipped += 1
    elif result.status not in ("passed", "failed"):
        _outcome(_case(suite, classname, "run"), "error", reason, result.status, "")
        errors += 1
    elif result.status == "failed" and failures == 0:
        # Failed for a reason no SLO or fault carries (steady state not restored...): the file
        # must still fail, as the exit code does.
        _outcome(_case(suite, classname, "run"), "failure", reason, result.status, "")
        failures += 1

    suite.set("tests", str(len(suite.findall("testcase"))))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    suite.set("time", f"{result.duration:.3f}")
    if result.started_wall is not None:
        started = _dt.datetime.fromtimestamp(result.started_wall, tz=_dt.UTC)
        suite.set("timestamp", started.isoformat(timespec="seconds"))
    ET.SubElement(suite, "system-out").text = _text(_system_out(result))

    root = ET.Element("testsuites", name="chaos-runner")
    for key in ("tests", "failures", "errors", "skipped", "time"):
        root.set(key, suite.get(key, "0"))
    root.append(suite)
    ET.indent(root)
    return ET.ElementTree(root)


class JunitReporter:
    """Writes junit.xml (UTF-8, with an XML declaration)."""

    name: ClassVar[str] = "junit"
    filename: ClassVar[str] = "junit.xml"

    def write(self, result: RunResult, directory: Path) -> Path:
        body = ET.tostring(build_tree(result).getroot(), encoding="unicode")
        text = f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'
        return write_atomic(directory / self.filename, text)
