"""cdk-nag AwsSolutions: no finding left unacknowledged, and every acknowledgement says why."""

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Annotations, Match
from cdk_nag import AwsSolutionsChecks

from tests.infra.conftest import Synthesized


@pytest.mark.parametrize("deployment_name", ["default_deployment", "cluster_deployment", "bedrock_agents_deployment"])
def test_no_unacknowledged_finding(request: pytest.FixtureRequest, deployment_name: str) -> None:
    deployment: Synthesized = request.getfixturevalue(deployment_name)
    annotations = Annotations.from_stack(deployment.stack)
    findings = [
        *annotations.find_error("*", Match.string_like_regexp(r"AwsSolutions-|CdkNagValidationFailure")),
        *annotations.find_warning("*", Match.string_like_regexp(r"AwsSolutions-|CdkNagValidationFailure")),
    ]
    assert [f"{f.id}: {str(f.entry.data)[:120]}" for f in findings] == []


def _suppressions(deployment: Synthesized) -> list[dict[str, Any]]:
    found = []
    for resource in deployment.json["Resources"].values():
        found.extend(resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []))
    return found


def test_every_acknowledgement_gives_a_reason(default_deployment: Synthesized) -> None:
    suppressions = _suppressions(default_deployment)
    assert suppressions
    for suppression in suppressions:
        assert len(suppression["reason"]) >= 80, suppression
    # Wildcards are acknowledged for named resources, never for every finding of a rule.
    for suppression in suppressions:
        if suppression["id"] == "AwsSolutions-IAM5":
            assert suppression.get("applies_to"), suppression


def test_nag_checks_run_as_part_of_the_app(default_deployment: Synthesized) -> None:
    app = default_deployment.stack.node.scope
    assert app is not None
    assert any(isinstance(aspect, AwsSolutionsChecks) for aspect in cdk.Aspects.of(app).all)
