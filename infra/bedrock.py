"""The Bedrock models a deployment's media tasks may invoke, and the resources IAM grants that on.

They are every model an agent in agents/ names with `llm.provider: bedrock` (the directory the image
ships), plus the `bedrockModelIds` context value for models chosen outside agents/. A model id is either
a foundation model (`anthropic.claude-3-5-haiku-20241022-v1:0`), invoked in the stack's region, or a
cross-region inference profile (`us.anthropic.claude-3-5-haiku-20241022-v1:0`): the geography's prefix
before the provider's name. A profile routes each request to a region of its geography, and Bedrock
checks the caller's permission on the profile in the stack's region and on the foundation model in the
region the request lands in, so a profile needs both.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack

from infra.config import ConfigError, DeploymentConfig
from switchboard.agent import AgentConfig

# The geographies of the system-defined cross-region inference profiles (Bedrock's user guide and CDK's
# CrossRegionInferenceProfileRegion). No provider is named like one of them.
PROFILE_GEOGRAPHIES = frozenset({"us", "us-gov", "eu", "apac", "jp", "au", "global"})
BEDROCK_PROVIDER = "bedrock"
# converse_stream (streaming/providers/bedrock.py) is authorized as InvokeModelWithResponseStream; the
# service calls nothing else on Bedrock.
INVOKE_ACTIONS = ("bedrock:InvokeModelWithResponseStream",)


@dataclass(frozen=True, order=True)
class BedrockModel:
    """One model id as the service passes it to Bedrock (`modelId`)."""

    model_id: str

    def __post_init__(self) -> None:
        # An ARN (an application inference profile, provisioned throughput) does not say which foundation
        # models it reaches, so no grant could be written for it here.
        if not self.model_id or self.model_id.startswith("arn:") or "/" in self.model_id or "*" in self.model_id:
            raise ValueError(
                f"{self.model_id!r} is not a Bedrock model id or cross-region inference profile id "
                "(e.g. anthropic.claude-3-5-haiku-20241022-v1:0 or us.anthropic.claude-3-5-haiku-20241022-v1:0)"
            )

    @property
    def geography(self) -> str | None:
        """The inference profile's geography, or None for a foundation model."""
        prefix, dot, rest = self.model_id.partition(".")
        return prefix if dot and rest and prefix in PROFILE_GEOGRAPHIES else None

    @property
    def foundation_model(self) -> str:
        """The foundation model's id: the id itself, or the profile's without its geography."""
        return self.model_id if self.geography is None else self.model_id.partition(".")[2]

    def resource_arns(self, stack: Stack) -> list[str]:
        if self.geography is None:
            return [_foundation_model_arn(stack, self.model_id, region=stack.region)]
        return [
            stack.format_arn(
                service="bedrock",
                resource="inference-profile",
                resource_name=self.model_id,
                arn_format=ArnFormat.SLASH_RESOURCE_NAME,
            ),
            # Any region: which ones a profile routes to is Bedrock's choice and changes over time ("*" also
            # matches the empty region of the global profiles' foundation-model ARNs).
            _foundation_model_arn(stack, self.foundation_model, region="*"),
        ]


def _foundation_model_arn(stack: Stack, model_id: str, *, region: str) -> str:
    return stack.format_arn(
        service="bedrock",
        region=region,
        account="",
        resource="foundation-model",
        resource_name=model_id,
        arn_format=ArnFormat.SLASH_RESOURCE_NAME,
    )


def deployment_models(config: DeploymentConfig, agents: Iterable[AgentConfig]) -> tuple[BedrockModel, ...]:
    """The union of the context's models and the Bedrock agents' models, each once, sorted."""
    named = [("context bedrockModelIds", model_id) for model_id in config.bedrock_model_ids]
    named += [
        (f"agent {agent.id}: llm.model", agent.llm.model) for agent in agents if agent.llm.provider == BEDROCK_PROVIDER
    ]
    models: set[BedrockModel] = set()
    for source, model_id in named:
        try:
            models.add(BedrockModel(model_id))
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return tuple(sorted(models))
