"""The Bedrock models a deployment grants: the agents' and the context's, foundation models and
cross-region inference profiles, and a clear refusal of what cannot be granted."""

from pathlib import Path

import aws_cdk as cdk
import pytest

from infra.app import build
from infra.bedrock import BedrockModel, deployment_models
from infra.bundling import SHIPPED_AGENTS
from infra.config import ConfigError, DeploymentConfig
from switchboard.agent import AgentDirectory
from tests.infra.conftest import CDK_JSON_CONTEXT, DOMAIN, REGION, agents_on_bedrock

PROFILE = "eu.anthropic.claude-3-7-sonnet-20250219-v1:0"


def _config(*model_ids: str) -> DeploymentConfig:
    return DeploymentConfig(domain_name=DOMAIN, bedrock_model_ids=model_ids)


def test_shipped_agents_need_no_bedrock_model() -> None:
    assert deployment_models(_config(), AgentDirectory.load(SHIPPED_AGENTS)) == ()


def test_models_are_the_union_of_the_context_and_the_bedrock_agents(tmp_path: Path) -> None:
    agents = AgentDirectory.load(
        agents_on_bedrock(tmp_path, {"clinic-receptionist": PROFILE, "appointment-reminder": "amazon.nova-lite-v1:0"})
    )
    models = deployment_models(_config("amazon.nova-lite-v1:0", "cohere.command-r-v1:0"), agents)
    # Each once, whether named by an agent, the context or both.
    assert [model.model_id for model in models] == [
        "amazon.nova-lite-v1:0",
        "cohere.command-r-v1:0",
        PROFILE,
    ]


def test_an_agent_on_openai_adds_no_model(tmp_path: Path) -> None:
    agents = AgentDirectory.load(agents_on_bedrock(tmp_path, {"clinic-receptionist": PROFILE}))
    assert [model.model_id for model in deployment_models(_config(), agents)] == [PROFILE]


@pytest.mark.parametrize(
    ("model_id", "geography", "foundation"),
    [
        ("anthropic.claude-3-5-haiku-20241022-v1:0", None, "anthropic.claude-3-5-haiku-20241022-v1:0"),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "us", "anthropic.claude-3-5-haiku-20241022-v1:0"),
        ("us-gov.anthropic.claude-3-5-sonnet-20240620-v1:0", "us-gov", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ("apac.amazon.nova-micro-v1:0", "apac", "amazon.nova-micro-v1:0"),
        ("global.anthropic.claude-sonnet-4-20250514-v1:0", "global", "anthropic.claude-sonnet-4-20250514-v1:0"),
        ("meta.llama3-1-70b-instruct-v1:0", None, "meta.llama3-1-70b-instruct-v1:0"),
    ],
)
def test_an_inference_profile_is_told_by_its_geography(model_id: str, geography: str | None, foundation: str) -> None:
    model = BedrockModel(model_id)
    assert model.geography == geography
    assert model.foundation_model == foundation


def test_arns_of_a_model_and_of_a_profile() -> None:
    app = cdk.App(context=CDK_JSON_CONTEXT)  # enablePartitionLiterals: "aws" for a known region
    stack = cdk.Stack(app, "Arns", env=cdk.Environment(region=REGION, account="123456789012"))
    assert BedrockModel("amazon.nova-lite-v1:0").resource_arns(stack) == [
        f"arn:aws:bedrock:{REGION}::foundation-model/amazon.nova-lite-v1:0"
    ]
    assert BedrockModel(PROFILE).resource_arns(stack) == [
        f"arn:aws:bedrock:{REGION}:123456789012:inference-profile/{PROFILE}",
        "arn:aws:bedrock:*::foundation-model/anthropic.claude-3-7-sonnet-20250219-v1:0",
    ]


@pytest.mark.parametrize(
    "model_id",
    ["arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123", "anthropic.*", ""],
)
def test_what_cannot_be_granted_is_refused_by_name(model_id: str) -> None:
    with pytest.raises(ConfigError, match=r"context bedrockModelIds: .* is not a Bedrock model id"):
        deployment_models(_config(model_id), [])


def test_an_agents_model_that_cannot_be_granted_stops_the_synth_naming_the_agent(tmp_path: Path) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
    agents = agents_on_bedrock(tmp_path, {"appointment-reminder": arn})
    app = cdk.App(outdir=str(tmp_path / "out"), context={**CDK_JSON_CONTEXT, "region": REGION, "domainName": DOMAIN})
    with pytest.raises(ConfigError, match=r"agent appointment-reminder: llm\.model: "):
        build(app, agents_dir=agents)
