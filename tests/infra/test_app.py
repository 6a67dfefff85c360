"""infra/app.py as cdk.json runs it: a cloud assembly from the context alone, and a clear refusal without
the one value that cannot have a default."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config import ConfigError, DeploymentConfig, RedisMode, config_from_context
from tests.infra.conftest import CDK_JSON_CONTEXT

REPO = Path(__file__).resolve().parents[2]


def _run_app(outdir: Path, context: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CDK_OUTDIR": str(outdir),
        "CDK_CONTEXT_JSON": json.dumps({**CDK_JSON_CONTEXT, **context}),
    }
    return subprocess.run(
        [sys.executable, str(REPO / "infra" / "app.py")], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )


def test_cdk_json_runs_the_app_file() -> None:
    assert json.loads((REPO / "cdk.json").read_text())["app"] == "uv run --frozen python infra/app.py"


def test_app_writes_a_template_offline(tmp_path: Path) -> None:
    result = _run_app(tmp_path, {"domainName": "media.example.com", "region": "eu-west-1"})
    assert result.returncode == 0, result.stderr[-3000:]
    template = json.loads((tmp_path / "Switchboard.template.json").read_text())
    assert any(r["Type"] == "AWS::ECS::Service" for r in template["Resources"].values())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifacts"]["Switchboard"]["environment"] == "aws://unknown-account/eu-west-1"
    # cdk-nag records each unacknowledged finding as an error or warning in the assembly, which the CLI prints.
    metadata = json.loads((tmp_path / "Switchboard.metadata.json").read_text())
    entries = [entry for path in metadata.values() for entry in path]
    findings = [e for e in entries if e["type"] in ("aws:cdk:error", "aws:cdk:warning") and "AwsSolutions" in str(e)]
    assert findings == []
    assert any(e["type"] == "aws:cdk:logicalId" for e in entries)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_app_without_a_domain_says_which_context_is_missing(tmp_path: Path) -> None:
    result = _run_app(tmp_path, {})
    assert result.returncode != 0
    assert "context domainName: is not set" in result.stderr


def test_context_strings_from_the_command_line_are_parsed() -> None:
    context = {
        "domainName": "media.example.com",
        "redisMode": "cluster",
        "maxTasks": "4",
        "bedrockModelIds": "a.b-v1:0, c.d",
    }
    config = config_from_context(context.get)
    assert config.redis_mode is RedisMode.CLUSTER
    assert config.max_tasks == 4
    assert config.bedrock_model_ids == ("a.b-v1:0", "c.d")
    assert config.public_stream_url == "wss://media.example.com/media"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("redisMode", "memcached", "context redisMode"),
        ("logRetentionDays", "10", "context logRetentionDays"),
        ("certificateArn", "not-an-arn", "context certificateArn"),
        ("domainName", "https://media.example.com", "context domainName"),
    ],
)
def test_bad_context_is_refused_by_name(key: str, value: str, message: str) -> None:
    context = {"domainName": "media.example.com", key: value}
    with pytest.raises(ConfigError, match=message):
        config_from_context(context.get)


def test_defaults_make_a_small_deployment() -> None:
    config = DeploymentConfig(domain_name="media.example.com")
    assert config.redis_mode is RedisMode.SERVERLESS
    assert (config.task_cpu, config.task_memory_mib) == (512, 1024)
    assert config.min_tasks == 2
