"""Each agent's providers, chosen and checked at start (streaming/providers/choice.py)."""

from pathlib import Path

import pytest

from streaming.providers.choice import (
    Choice,
    ProviderError,
    ProviderKeys,
    ProviderMode,
    build_agent_providers,
    choose,
)
from switchboard.agent import AgentDirectory, load_agent

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials anywhere botocore looks, and no instance metadata to wait for."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)


def test_each_agent_gets_what_its_file_names() -> None:
    clinic = load_agent(REPO / "agents" / "clinic-receptionist.yaml")
    on_bedrock = clinic.model_copy(update={"llm": clinic.llm.model_copy(update={"provider": "bedrock"})})
    assert choose(clinic, ProviderMode.AGENTS, openai_key=True) == Choice("transcribe", "polly", "openai")
    assert choose(clinic, ProviderMode.AGENTS, openai_key=False) == Choice("transcribe", "polly", "scripted")
    assert choose(on_bedrock, ProviderMode.AGENTS, openai_key=False) == Choice("transcribe", "polly", "bedrock")
    assert choose(clinic, ProviderMode.OFFLINE, openai_key=True) == Choice("pocketsphinx", "espeak", "scripted")


async def test_aws_providers_without_credentials_stop_the_start_by_name(no_aws_credentials: None) -> None:
    agents = AgentDirectory.load(REPO / "agents")
    with pytest.raises(ProviderError, match=r"Amazon Transcribe \(agents: appointment-reminder, clinic-receptionist\)"):
        await build_agent_providers(agents, ProviderMode.AGENTS, ProviderKeys(region="us-east-1"))


async def test_an_agent_not_built_at_start_has_no_providers() -> None:
    agents = list(AgentDirectory.load(REPO / "agents"))
    providers = await build_agent_providers(agents[:1], ProviderMode.OFFLINE, ProviderKeys(region="us-east-1"))
    try:
        assert providers.for_call(agents[0], {}).llm is not None
        with pytest.raises(LookupError, match=f"no providers were built for agent {agents[1].id!r}"):
            providers.for_call(agents[1], {})
    finally:
        await providers.aclose()
