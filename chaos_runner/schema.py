"""JSON Schemas for editors and tools: the experiment (with every installed plugin's params)
and the result file. Pure: reads models and the registry, writes nothing."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel

from chaos_runner.experiment import Experiment
from chaos_runner.registry import Registry
from chaos_runner.result import RunResult


def experiment_schema(registry: Registry) -> dict[str, Any]:
    """The experiment's schema, where `kind` and `params` of targets, faults and probes are
    tied to the installed plugins, so an editor can complete and check them."""
    schema = Experiment.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "chaos_runner experiment"
    defs = schema.setdefault("$defs", {})
    faults: dict[str, list[type[BaseModel]]] = defaultdict(list)
    for name, plugin in registry.faults.items():
        faults[name.split(".", 1)[-1]].append(plugin.Params)
    _tie(defs, "FaultSpec", faults)
    _tie(defs, "ProbeSpec", {k: [p.Params] for k, p in registry.probes.items()})
    _tie(defs, "TargetSpec", {k: [t.Params] for k, t in registry.targets.items()})
    return schema


def _tie(defs: dict[str, Any], owner: str, kinds: dict[str, list[type[BaseModel]]]) -> None:
    spec = defs.get(owner)
    if spec is None or not kinds:
        return
    spec["properties"]["kind"] = {"enum": sorted(kinds), "type": "string"}
    branches = []
    for kind, models in sorted(kinds.items()):
        params = [_inline(m, defs) for m in models]
        branches.append(
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {
                    "properties": {"params": params[0] if len(params) == 1 else {"anyOf": params}}
                },
            }
        )
    spec["allOf"] = branches


def _inline(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/$defs/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        defs.setdefault(name, sub)
    return schema


def result_schema() -> dict[str, Any]:
    schema = RunResult.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "chaos_runner result (result.json)"
    return schema
