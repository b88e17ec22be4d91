"""Loading experiment files: safe YAML or JSON -> a validated Experiment and plugin params.

YAML is parsed with a safe loader (no tags that build objects), a bounded number of aliases
and a size limit. Every problem is reported with the file, the field path and what was
expected, never as a traceback. Loading never touches a system.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from chaos_runner.errors import ExperimentError, Problem, RegistryError
from chaos_runner.experiment import (
    AvailabilitySLO,
    DetectionSLO,
    Experiment,
    FaultSpec,
    LatencySLO,
    LoadSpec,
    Metadata,
    Phases,
    ProbeSpec,
    RecoverySLO,
    Safety,
    Selector,
    TargetSpec,
)
from chaos_runner.registry import Registry

MAX_BYTES = 1 << 20
MAX_ALIASES = 100


@dataclass(frozen=True)
class LoadedExperiment:
    """An experiment with where it came from and every plugin's validated params."""

    experiment: Experiment
    source: str
    base_dir: Path
    sha256: str
    target_params: BaseModel
    fault_params: tuple[BaseModel, ...]
    probe_params: tuple[BaseModel, ...]


class _BoundedSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents with too many aliases (billion laughs)."""

    aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.YAMLError(
                    f"more than {MAX_ALIASES} aliases (line {mark.line + 1}); "
                    "expand them or split the file"
                )
        return super().compose_node(parent, index)


def parse_document(text: str, source: str) -> Any:
    """Parse YAML or JSON text (JSON is YAML); errors name the file and the line."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise ExperimentError(source, [Problem("", f"file is larger than {MAX_BYTES} bytes")])
    if source.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ExperimentError(
                source, [Problem(f"line {exc.lineno}", f"not valid JSON: {exc.msg}")]
            ) from None
    try:
        return yaml.load(text, Loader=_BoundedSafeLoader)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}" if mark else ""
        raise ExperimentError(
            source,
            [
                Problem(
                    where,
                    f"{exc.problem}; tags that build objects are not allowed: "
                    "write plain YAML values",
                )
            ],
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ExperimentError(source, [Problem(where, f"not valid YAML: {problem}")]) from None


def load_experiment(path: str | Path, registry: Registry) -> LoadedExperiment:
    """Read, parse and validate an experiment file, plugin params included."""
    path = Path(path)
    source = str(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ExperimentError(
            source, [Problem("", f"cannot read the file: {exc.strerror}")]
        ) from None
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise ExperimentError(source, [Problem("", "the file is not UTF-8 text")]) from None
    document = parse_document(text, source)
    loaded = validate_document(document, source, path.resolve().parent, registry)
    return LoadedExperiment(
        experiment=loaded.experiment,
        source=source,
        base_dir=loaded.base_dir,
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        target_params=loaded.target_params,
        fault_params=loaded.fault_params,
        probe_params=loaded.probe_params,
    )


def validate_document(
    document: Any, source: str, base_dir: Path, registry: Registry
) -> LoadedExperiment:
    if not isinstance(document, dict):
        kind = "empty" if document is None else type(document).__name__
        raise ExperimentError(
            source,
            [
                Problem(
                    "",
                    f"the top level must be a mapping (metadata, probes, faults, ...), got {kind}",
                )
            ],
        )
    try:
        experiment = Experiment.model_validate(document)
    except ValidationError as exc:
        raise ExperimentError(source, pydantic_problems(exc, Experiment)) from None

    problems: list[Problem] = []
    target_params = _validate_params(
        registry, "target", experiment.target.kind, experiment.target.params, "target", problems
    )
    fault_params: list[BaseModel] = []
    for i, fault in enumerate(experiment.faults):
        try:
            fault_kind = registry.fault(fault.kind, experiment.target.kind)
        except RegistryError as exc:
            problems.append(Problem(f"faults[{i}].kind", str(exc)))
            fault_params.append(None)  # type: ignore[arg-type]
            continue
        fault_params.append(
            _validate_model(fault_kind.Params, fault.params, f"faults[{i}].params", problems)
        )
    probe_params: list[BaseModel] = []
    for i, probe in enumerate(experiment.probes):
        probe_params.append(
            _validate_params(registry, "probe", probe.kind, probe.params, f"probes[{i}]", problems)
        )
    if experiment.load and experiment.load.locustfile:
        locustfile = base_dir / experiment.load.locustfile
        if not locustfile.is_file():
            problems.append(
                Problem(
                    "load.locustfile",
                    f"no such file {str(locustfile)!r} (paths are relative to the experiment file)",
                )
            )
    if problems:
        raise ExperimentError(source, problems)
    return LoadedExperiment(
        experiment=experiment,
        source=source,
        base_dir=base_dir,
        sha256="",
        target_params=target_params,
        fault_params=tuple(fault_params),
        probe_params=tuple(probe_params),
    )


def _validate_params(
    registry: Registry,
    what: str,
    kind: str,
    params: dict[str, Any],
    where: str,
    problems: list[Problem],
) -> Any:
    try:
        plugin = registry.target(kind) if what == "target" else registry.probe(kind)
    except RegistryError as exc:
        problems.append(Problem(f"{where}.kind", str(exc)))
        return None
    return _validate_model(plugin.Params, params, f"{where}.params", problems)


def _validate_model(
    model: type[BaseModel], params: dict[str, Any], where: str, problems: list[Problem]
) -> Any:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems.extend(pydantic_problems(exc, model, prefix=where))
        return None


def pydantic_problems(
    exc: ValidationError, model: type[BaseModel], prefix: str = ""
) -> list[Problem]:
    """Turn pydantic's errors into Problems with a field path and a hint at the fix."""
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        loc = [part for part in error["loc"] if not _is_union_tag(part)]
        path = _render_path(prefix, loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            name = str(loc[-1]) if loc else ""
            known = _known_fields(model, loc[:-1])
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            message = f"unknown field; {hint}known fields here: {', '.join(known) or 'none'}"
        elif error["type"] == "missing":
            message = "this field is required"
        elif error["type"] == "union_tag_invalid":
            message = f"{message}"
        elif error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        received = error.get("input")
        if error["type"] not in ("missing", "extra_forbidden") and _short(received):
            message += f" (got {received!r})"
        problems.append(Problem(path, message))
    return problems


def _is_union_tag(part: Any) -> bool:
    """Pydantic's names for union members and validators, which are not the user's fields."""
    slo_kinds = {"availability", "latency", "recovery_time", "time_to_detect"}
    return isinstance(part, str) and (part in slo_kinds or part.startswith("function-"))


def _render_path(prefix: str, loc: Sequence[Any]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_NESTED: dict[str, type[BaseModel]] = {
    "metadata": Metadata,
    "target": TargetSpec,
    "load": LoadSpec,
    "probes": ProbeSpec,
    "faults": FaultSpec,
    "phases": Phases,
    "safety": Safety,
    "selector": Selector,
}
_SLO_MODELS = (AvailabilitySLO, LatencySLO, RecoverySLO, DetectionSLO)


def _known_fields(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    current: type[BaseModel] = model
    for part in loc:
        if isinstance(part, int):
            continue
        if part == "slos":
            return sorted({f for m in _SLO_MODELS for f in m.model_fields})
        nested = _NESTED.get(str(part))
        if nested is None or str(part) not in current.model_fields:
            break
        current = nested
    return sorted(current.model_fields)


def _short(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 60
