"""The CDK app, synthesized once per session for each deployment shape the tests look at.

Synthesis is real: the shared layer is bundled (uv installs the locked arm64 wheels, cached between
runs), the media image is staged (never built: no Docker), and cdk-nag's AwsSolutions pack runs as the
app runs it.
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before jsii starts: its banner about this machine's Node 20 says nothing about the app (the Makefile's
# `synth` sets the same).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
import pytest
import yaml
from aws_cdk.assertions import Template

from infra.app import build
from infra.bundling import SHIPPED_AGENTS
from infra.stack import SwitchboardStack

DOMAIN = "media.example.com"
REGION = "us-east-1"
CERTIFICATE_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/0b7c2f3e-5a8d-4c1e-9f00-1234567890ab"
BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
# What the Bedrock agents of `bedrock_agents_deployment` use: a cross-region inference profile, and a
# foundation model in the stack's region.
BEDROCK_AGENT_MODELS = {
    "clinic-receptionist": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    "appointment-reminder": "amazon.nova-lite-v1:0",
}


@dataclass(frozen=True)
class Synthesized:
    stack: SwitchboardStack
    template: Template
    outdir: Path

    @property
    def json(self) -> dict[str, Any]:
        return dict(self.template.to_json())

    def logical_id(self, construct: Any) -> str:
        return self.stack.get_logical_id(construct.node.default_child)

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {logical_id: dict(resource) for logical_id, resource in self.template.find_resources(kind).items()}

    def asset_dir(self, asset_hash: str) -> Path:
        return self.outdir / f"asset.{asset_hash}"


REPO = Path(__file__).resolve().parents[2]
# The feature flags the CDK CLI applies from cdk.json: the tests synthesize what `cdk synth` does.
CDK_JSON_CONTEXT: dict[str, Any] = json.loads((REPO / "cdk.json").read_text())["context"]


def _synth(tmp: Path, context: dict[str, Any], agents_dir: Path = SHIPPED_AGENTS) -> Synthesized:
    app = cdk.App(outdir=str(tmp), context={**CDK_JSON_CONTEXT, "region": REGION, **context})
    stack = build(app, agents_dir=agents_dir)
    app.synth()
    return Synthesized(stack, Template.from_stack(stack), tmp)


@pytest.fixture(scope="session")
def default_deployment(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Only the required context: serverless cache, a certificate requested by the stack, no Bedrock."""
    return _synth(tmp_path_factory.mktemp("cdk-default"), {"domainName": DOMAIN})


@pytest.fixture(scope="session")
def cluster_deployment(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Every option: a node-based cache, a given certificate, a hosted zone, Bedrock models, alarm email."""
    return _synth(
        tmp_path_factory.mktemp("cdk-cluster"),
        {
            "domainName": DOMAIN,
            "certificateArn": CERTIFICATE_ARN,
            "hostedZoneId": "Z0123456789ABCDEFGHIJ",
            "hostedZoneName": "example.com",
            "redisMode": "cluster",
            "bedrockModelIds": BEDROCK_MODEL,
            "alarmEmail": "oncall@example.com",
            "minTasks": "3",
        },
    )


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def agents_on_bedrock(folder: Path, models: dict[str, str]) -> Path:
    """A copy of the shipped agents (knowledge bases included) with these agents' LLM moved to Bedrock."""
    agents = folder / "agents"
    shutil.copytree(SHIPPED_AGENTS, agents)
    for agent_id, model in models.items():
        path = agents / f"{agent_id}.yaml"
        raw = yaml.safe_load(path.read_text())
        raw["llm"] = {**raw["llm"], "provider": "bedrock", "model": model}
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return agents


@pytest.fixture(scope="session")
def bedrock_agents_deployment(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Only the required context, and agents on Bedrock: their models come from the agents alone."""
    agents = agents_on_bedrock(tmp_path_factory.mktemp("bedrock-agents"), BEDROCK_AGENT_MODELS)
    return _synth(tmp_path_factory.mktemp("cdk-bedrock-agents"), {"domainName": DOMAIN}, agents)
