"""pytest plugin: experiment files become test items, so a resilience gate is a pytest run.

Files named `chaos_*.yaml` or `*.chaos.yaml` (or given with --chaos FILE) are collected; each
item runs the experiment through the library API and fails with the SLO verdicts when any is
missed. The plugin does nothing in a session that collects no experiment file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaos_runner.result import RunResult

_REPORTS_DIR = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos-runner")
    group.addoption(
        "--chaos-reports",
        default="reports",
        help="where experiment items write their run directories (default: reports)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REPORTS_DIR] = Path(config.getoption("--chaos-reports"))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.File | None:
    name = file_path.name
    if file_path.suffix in (".yaml", ".yml", ".json") and (
        name.startswith("chaos_") or ".chaos." in name
    ):
        return ExperimentFile.from_parent(parent, path=file_path)
    return None


class ExperimentFile(pytest.File):
    def collect(self) -> list[pytest.Item]:
        return [ExperimentItem.from_parent(self, name=self.path.stem)]


class ExperimentFailed(Exception):
    def __init__(self, result: RunResult) -> None:
        super().__init__(result.status)
        self.result = result


class ExperimentItem(pytest.Item):
    """One experiment: passes when the run's exit code is 0 (every SLO met)."""

    def runtest(self) -> None:
        from chaos_runner import api  # imported late: collection must stay cheap

        result = api.run(
            self.path,
            reports_dir=self.config.stash[_REPORTS_DIR],
            handle_signals=False,
        )
        self.user_properties.append(("chaos_run", result.journal or ""))
        if result.exit_code != 0:
            raise ExperimentFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ExperimentFailed):
            result = excinfo.value.result
            lines = [
                f"experiment {result.experiment}: {result.status} "
                f"(exit code {result.exit_code}) {result.reason}".rstrip()
            ]
            for slo in result.slos:
                mark = "met" if slo.passed else "FAILED"
                lines.append(f"  SLO {slo.name}: {mark} - {slo.detail}")
            for fault in result.faults:
                lines.append(
                    f"  fault {fault.name}: time to impact {_seconds(fault.time_to_impact)}, "
                    f"recovery time {_seconds(fault.recovery_time)} (±{fault.resolution:g}s)"
                )
            lines.append(f"  journal: {result.journal}")
            return "\n".join(lines)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"chaos experiment: {self.name}"


def _seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}s"
