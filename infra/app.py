"""The CDK app (`cdk synth`, `cdk deploy`; cdk.json runs it): one Switchboard stack, checked by cdk-nag."""

import os
import sys
from pathlib import Path

# cdk.json runs this file as a script, which puts its folder (infra/) first on sys.path: there its
# modules would shadow any same-named module (stdlib included). The repository root takes its place, so
# `infra.*` imports as it does in the tests (pytest's pythonpath).
_HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_HERE.parent)

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra.bundling import SHIPPED_AGENTS  # noqa: E402
from infra.config import ConfigError, config_from_context  # noqa: E402
from infra.stack import SwitchboardStack  # noqa: E402
from switchboard.agent import AgentConfigError, AgentDirectory  # noqa: E402

STACK_NAME_CONTEXT = "stackName"
REGION_CONTEXT = "region"
# The load balancer's access logs need the region at synth (each region has its own log delivery account).
# The CLI sets CDK_DEFAULT_REGION from the profile; an offline synth without either falls back to this.
FALLBACK_REGION = "us-east-1"


def build(app: cdk.App, *, agents_dir: Path = SHIPPED_AGENTS) -> SwitchboardStack:
    """The stack for the context and the agents. `agents_dir` is what the image and layer ship; only tests
    point it elsewhere (a context value could grant for agents the deployment does not run)."""
    config = config_from_context(app.node.try_get_context)
    stack = SwitchboardStack(
        app,
        "Switchboard",
        stack_name=app.node.try_get_context(STACK_NAME_CONTEXT) or "switchboard",
        config=config,
        agents=AgentDirectory.load(agents_dir),
        description="Switchboard: AI phone agents (Twilio, Transcribe, an LLM with tools, Polly)",
        # The account comes from the CLI's credentials at deploy; nothing is looked up at synth.
        env=cdk.Environment(
            region=app.node.try_get_context(REGION_CONTEXT) or os.environ.get("CDK_DEFAULT_REGION") or FALLBACK_REGION
        ),
    )
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return stack


def main() -> None:
    app = cdk.App()
    try:
        build(app)
    except (ConfigError, AgentConfigError) as exc:
        sys.exit(str(exc))
    app.synth()


if __name__ == "__main__":
    main()
