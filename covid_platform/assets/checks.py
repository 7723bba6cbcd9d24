"""Gate results as Dagster check results: a blocking gate's failure is an ERROR, a warning's a WARN."""

import dagster as dg

from covid_platform.engine.gates import GateResult


def check_result(gate: GateResult, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=gate.name,
        passed=gate.passed,
        severity=dg.AssetCheckSeverity.ERROR if gate.blocking else dg.AssetCheckSeverity.WARN,
        description=gate.reason or None,
        metadata={**metadata, **gate.metadata},
    )
