"""The media service: Fargate ARM64 from streaming/Dockerfile, the HTTPS load balancer set for
WebSockets and drains, autoscaling on CPU and active calls, and the task role's exact permissions."""

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match

from streaming.server import ACTIVE_CALLS_METRIC, HEALTH_PATH
from switchboard.observability import NAMESPACE, SERVICE
from switchboard.settings import StreamingSettings
from tests.infra.conftest import BEDROCK_AGENT_MODELS, BEDROCK_MODEL, CERTIFICATE_ARN, DOMAIN, REGION, Synthesized


def _container(deployment: Synthesized) -> dict[str, Any]:
    task = next(iter(deployment.resources("AWS::ECS::TaskDefinition").values()))["Properties"]
    (container,) = task["ContainerDefinitions"]
    return dict(container)


def test_small_arm64_task(default_deployment: Synthesized) -> None:
    default_deployment.template.has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "Cpu": "512",
            "Memory": "1024",
            "RequiresCompatibilities": ["FARGATE"],
            "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
        },
    )


def test_container_stops_gracefully_and_logs(default_deployment: Synthesized) -> None:
    container = _container(default_deployment)
    assert container["StopTimeout"] == 120
    assert container["PortMappings"] == [{"ContainerPort": 8080, "Protocol": "tcp"}]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"


def test_image_is_built_from_the_streaming_dockerfile_for_arm64(default_deployment: Synthesized) -> None:
    manifest = json.loads(next(default_deployment.outdir.glob("*.assets.json")).read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == "streaming/Dockerfile"
    assert image["source"]["platform"] == "linux/arm64"
    staged = default_deployment.outdir / image["source"]["directory"]
    # The build context is the repository root, as the Dockerfile expects, filtered by .dockerignore.
    assert (staged / "streaming" / "Dockerfile").is_file()
    assert (staged / "uv.lock").is_file()
    assert (staged / "layers" / "switchboard").is_dir()
    assert not (staged / ".venv").exists()
    assert not (staged / "tests").exists()


def test_environment_fills_the_streaming_settings_and_secrets_stay_out(default_deployment: Synthesized) -> None:
    container = _container(default_deployment)
    variables = {item["Name"]: item["Value"] for item in container["Environment"]}
    required = {name.upper() for name, info in StreamingSettings.model_fields.items() if info.is_required()}
    assert required <= set(variables), required - set(variables)
    fields = StreamingSettings.model_fields.items()
    known = {(info.alias or name).upper() for name, info in fields} | {"POWERTOOLS_LOG_LEVEL"}
    assert set(variables) <= known, set(variables) - known
    assert variables["SWITCHBOARD_PROVIDERS"] == "agents"
    assert variables["PUBLIC_STREAM_URL"] == f"wss://{DOMAIN}/media"
    assert variables["DRAIN_SECONDS"] == "100"
    assert variables["AGENTS_DIR"] == "/app/agents"
    # Nothing goes through ECS's secret injection: the service reads every secret itself, with its task role.
    assert "Secrets" not in container
    secrets = set(default_deployment.resources("AWS::SecretsManager::Secret"))
    for name in ("TWILIO_SECRET_ARN", "STREAM_TOKEN_SECRET_ARN", "OPENAI_SECRET_ARN", "REDIS_AUTH_SECRET_ARN"):
        assert variables[name]["Ref"] in secrets
    assert variables["REDIS_AUTH_SECRET_ARN"] == {
        "Ref": default_deployment.logical_id(default_deployment.stack.cache.credentials)
    }
    for name in variables:
        if not name.endswith("_SECRET_ARN"):
            assert not any(word in name for word in ("TOKEN", "PASSWORD", "KEY")), name
    # Neither a literal secret nor a dynamic reference that CloudFormation would resolve into the task definition.
    assert "{{resolve:" not in json.dumps(container)


@pytest.mark.parametrize(
    ("deployment_name", "attribute", "port"),
    [("default_deployment", "Endpoint.Address", 6379), ("cluster_deployment", "PrimaryEndPoint.Address", 6380)],
)
def test_redis_url_names_the_cache_endpoint_without_credentials(
    request: pytest.FixtureRequest, deployment_name: str, attribute: str, port: int
) -> None:
    deployment: Synthesized = request.getfixturevalue(deployment_name)
    variables = {item["Name"]: item["Value"] for item in _container(deployment)["Environment"]}
    cache = deployment.stack.get_logical_id(deployment.stack.cache.resource)
    assert variables["REDIS_URL"] == {"Fn::Join": ["", ["rediss://", {"Fn::GetAtt": [cache, attribute]}, f":{port}"]]}
    assert "@" not in json.dumps(variables["REDIS_URL"])


def test_load_balancer_serves_https_for_long_websockets(default_deployment: Synthesized) -> None:
    template = default_deployment.template
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {
            "Scheme": "internet-facing",
            "LoadBalancerAttributes": Match.array_with(
                [
                    {"Key": "idle_timeout.timeout_seconds", "Value": "300"},
                    {"Key": "access_logs.s3.enabled", "Value": "true"},
                ]
            ),
        },
    )
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {"Port": 443, "Protocol": "HTTPS", "SslPolicy": Match.string_like_regexp("TLS13")},
    )
    template.resource_properties_count_is("AWS::ElasticLoadBalancingV2::Listener", {"Protocol": "HTTP"}, 0)
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {
            "Port": 8080,
            "Protocol": "HTTP",
            "TargetType": "ip",
            "HealthCheckPath": HEALTH_PATH,
            "TargetGroupAttributes": Match.array_with(
                [{"Key": "deregistration_delay.timeout_seconds", "Value": "120"}]
            ),
        },
    )


def test_without_a_certificate_the_stack_requests_one_for_the_domain(default_deployment: Synthesized) -> None:
    default_deployment.template.has_resource_properties(
        "AWS::CertificateManager::Certificate", {"DomainName": DOMAIN, "ValidationMethod": "DNS"}
    )


def test_given_certificate_and_zone_are_used(cluster_deployment: Synthesized) -> None:
    template = cluster_deployment.template
    template.resource_count_is("AWS::CertificateManager::Certificate", 0)
    template.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener", {"Certificates": [{"CertificateArn": CERTIFICATE_ARN}]}
    )
    template.has_resource_properties("AWS::Route53::RecordSet", {"Name": f"{DOMAIN}.", "Type": "A"})


def test_service_runs_in_private_subnets_and_rolls_back_failed_deploys(default_deployment: Synthesized) -> None:
    service = next(iter(default_deployment.resources("AWS::ECS::Service").values()))["Properties"]
    assert service["LaunchType"] == "FARGATE"
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert service["DeploymentConfiguration"]["MinimumHealthyPercent"] == 100
    default_deployment.template.has_resource_properties(
        "AWS::ECS::Cluster", {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]}
    )


def test_scales_on_cpu_and_on_active_calls_per_task(
    default_deployment: Synthesized, cluster_deployment: Synthesized
) -> None:
    template = default_deployment.template
    template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget", {"MinCapacity": 2, "MaxCapacity": 10}
    )
    cluster_deployment.template.has_resource_properties(
        "AWS::ApplicationAutoScaling::ScalableTarget", {"MinCapacity": 3}
    )
    policies = [
        p["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        for p in default_deployment.resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
    ]
    assert len(policies) == 2
    cpu = next(p for p in policies if "PredefinedMetricSpecification" in p)
    assert cpu["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    calls = next(p for p in policies if "CustomizedMetricSpecification" in p)
    assert calls["TargetValue"] == 20
    assert calls["CustomizedMetricSpecification"] == {
        "Dimensions": [{"Name": "service", "Value": SERVICE}],
        "MetricName": ACTIVE_CALLS_METRIC,
        "Namespace": NAMESPACE,
        "Statistic": "Average",
    }


def _task_statements(deployment: Synthesized) -> list[dict[str, Any]]:
    role_id = deployment.logical_id(deployment.stack.media.task_definition.task_role)
    return [
        statement
        for policy in deployment.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _by_action(statements: list[dict[str, Any]]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            found.setdefault(action, []).extend(resources)
    return found


def test_task_role_holds_exactly_what_the_service_calls(default_deployment: Synthesized) -> None:
    found = _by_action(_task_statements(default_deployment))
    assert set(found) == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "events:PutEvents",
        "execute-api:Invoke",
        "secretsmanager:GetSecretValue",
        "transcribe:StartStreamTranscription",
        "polly:SynthesizeSpeech",
        "polly:DescribeVoices",
    }
    calls = {"Fn::GetAtt": [default_deployment.logical_id(default_deployment.stack.tables.calls), "Arn"]}
    assert found["dynamodb:PutItem"] == [calls]
    (invoke,) = found["execute-api:Invoke"]
    assert json.dumps(invoke).endswith('/prod/POST/tools/*"]]}')
    stack = default_deployment.stack
    readable = (stack.secrets.twilio, stack.secrets.stream_token, stack.secrets.openai, stack.cache.credentials)
    assert sorted(found["secretsmanager:GetSecretValue"], key=json.dumps) == sorted(
        ({"Ref": default_deployment.logical_id(secret)} for secret in readable), key=json.dumps
    )


def test_execution_role_reads_no_secret(default_deployment: Synthesized) -> None:
    # It pulls the image and ships the logs; the secrets are the service's own business (its task role).
    execution_role = default_deployment.stack.media.task_definition.execution_role
    assert execution_role is not None
    role_id = default_deployment.logical_id(execution_role)
    actions = {
        action
        for policy in default_deployment.resources("AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in (statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
    }
    assert actions
    assert not any(action.startswith("secretsmanager:") for action in actions), actions


def test_bedrock_streaming_only_on_the_configured_models(cluster_deployment: Synthesized) -> None:
    # The shipped agents are on OpenAI: the context's model is the only one.
    found = _by_action(_task_statements(cluster_deployment))
    (model,) = found["bedrock:InvokeModelWithResponseStream"]
    assert model == f"arn:aws:bedrock:{REGION}::foundation-model/{BEDROCK_MODEL}"
    assert not any(
        action.startswith("bedrock:") and action != "bedrock:InvokeModelWithResponseStream" for action in found
    )


def test_bedrock_agents_models_and_profiles_are_granted_without_context(
    bedrock_agents_deployment: Synthesized,
) -> None:
    found = _by_action(_task_statements(bedrock_agents_deployment))
    assert {action for action in found if action.startswith("bedrock:")} == {"bedrock:InvokeModelWithResponseStream"}
    profile = BEDROCK_AGENT_MODELS["clinic-receptionist"]
    foundation = BEDROCK_AGENT_MODELS["appointment-reminder"]
    assert sorted(found["bedrock:InvokeModelWithResponseStream"], key=json.dumps) == sorted(
        [
            # The profile in this region, in this account...
            {
                "Fn::Join": [
                    "",
                    [f"arn:aws:bedrock:{REGION}:", {"Ref": "AWS::AccountId"}, f":inference-profile/{profile}"],
                ]
            },
            # ...and its model wherever the profile sends the request.
            f"arn:aws:bedrock:*::foundation-model/{profile.removeprefix('us.')}",
            # A plain model id is invoked in this region only.
            f"arn:aws:bedrock:{REGION}::foundation-model/{foundation}",
        ],
        key=json.dumps,
    )


def test_dockerfile_serves_what_the_stack_expects() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "streaming" / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "streaming"]' in dockerfile
    assert "AGENTS_DIR=/app/agents" in dockerfile
