"""cdk-nag AwsSolutions findings this stack acknowledges, each with the reason it stands.

Every acknowledgement names the resource it is for (never the whole stack) and, for wildcard
permissions, the exact resource string it covers, so a new finding anywhere else still fails the tests.
"""

from typing import TYPE_CHECKING

from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import IConstruct

if TYPE_CHECKING:
    from infra.stack import SwitchboardStack

XRAY = (
    "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level permissions: CDK adds them "
    "on Resource::* for tracing=ACTIVE (Powertools Tracer)."
)
PYTHON_312 = (
    "The project pins Python 3.12 everywhere (GUIDE.md section 3): the functions run what the tests ran, and "
    "the layer's wheels are built for cp312. Moving runtime is a project decision, not a per-function one."
)
COGNITO = (
    "No end users sign in: /calls, /schedules and /tools are IAM-authorized (SigV4 from the business's "
    "own roles and from the media service), and Twilio's webhooks are checked by signature in code."
)


def _acknowledge(
    construct: IConstruct, rule: str, reason: str, *, applies_to: list[str | RegexAppliesTo] | None = None
) -> None:
    NagSuppressions.add_resource_suppressions(
        construct,
        [NagPackSuppression(id=rule, reason=reason, applies_to=applies_to)],
        apply_to_children=True,
    )


def acknowledge_findings(stack: "SwitchboardStack") -> None:
    api = stack.api

    _acknowledge(
        stack.logs_bucket,
        "AwsSolutions-S1",
        "This bucket holds the load balancer's access logs and the VPC flow logs; logging access to the log "
        "bucket itself would need another bucket, and so on. Writes come only from the ELB and flow-log "
        "delivery principals (bucket policy), SSL is enforced and public access blocked.",
    )

    # -- secrets ---------------------------------------------------------------------------------------------
    vendor = (
        "The value is issued by a vendor (Twilio auth token, OpenAI key): rotation happens in the vendor's "
        "console, then `put-secret-value` (docs/deploy.md); the functions re-read it within 5 minutes (Powertools "
        "Parameters cache), the media service when its tasks are restarted (it reads its secrets at start)."
    )
    _acknowledge(stack.secrets.twilio, "AwsSolutions-SMG4", vendor)
    _acknowledge(stack.secrets.openai, "AwsSolutions-SMG4", vendor)
    _acknowledge(
        stack.secrets.stream_token,
        "AwsSolutions-SMG4",
        "HMAC key of stream tokens that live for seconds; a rotation would invalidate the tokens of calls being "
        "answered at that moment. Rotate by generating a new value (docs/deploy.md): the voice webhook picks it up "
        "within its 5-minute cache, the media service when its tasks are restarted.",
    )
    _acknowledge(
        stack.cache.credentials,
        "AwsSolutions-SMG4",
        "This stack sets the ElastiCache user's password from this secret's `password` key (a dynamic reference "
        "resolved at deploy): Secrets Manager rotation would change the secret without changing the user, and the "
        "service would then fail AUTH. A new password is a new secret, replaced in a deploy: the user's reference "
        "and the task definition change with its ARN, so CloudFormation updates the user and ECS rolls the tasks. "
        "The cache is reachable only from the service's security group, inside isolated subnets.",
    )

    if isinstance(stack.cache.resource, elasticache.CfnReplicationGroup):
        _acknowledge(
            stack.cache.resource,
            "AwsSolutions-AEC6",
            "The group authenticates with ElastiCache RBAC (UserGroupIds): AUTH with a user name and a generated "
            "password, the default user switched off, TLS required. The rule looks only for the older single "
            "AuthToken, which RBAC replaces (the two cannot be combined).",
        )
    _acknowledge(
        stack.scheduling.dead_letters,
        "AwsSolutions-SQS3",
        "This queue is itself the dead-letter queue of the dial schedules and of the retry rule; the "
        "UndeliveredDials alarm watches it.",
    )

    # -- network -----------------------------------------------------------------------------------------------
    for endpoint in ("TranscribeStreaming", "Polly", "EcrApi", "EcrDocker", "Logs", "BedrockRuntime"):
        child = stack.network.vpc.node.try_find_child(endpoint)
        if child is not None:
            _acknowledge(
                child,
                "CdkNagValidationFailure",
                "The endpoint's security group admits the VPC's own CIDR (Fn::GetAtt of the VPC) on 443, which "
                "the EC23 rule cannot evaluate; it is never 0.0.0.0/0.",
            )

    # -- API and functions ---------------------------------------------------------------------------------------
    _acknowledge(
        api.api,
        "AwsSolutions-APIG2",
        "Every route validates its body, path and query with Powertools' resolver and the functions' pydantic "
        "models (docs/openapi.json), answering 422 with the details; an API Gateway model would duplicate them "
        "and drift.",
    )
    _acknowledge(
        api.api,
        "AwsSolutions-APIG3",
        "No WAF by default: the Twilio routes refuse anything unsigned before any work, the others need SigV4, "
        "and the stage is throttled. A web ACL costs at least $5/month plus per request; add one with "
        "wafv2.CfnWebACLAssociation when the business's policy asks for it.",
    )
    _acknowledge(api.api, "AwsSolutions-COG4", COGNITO)
    twilio_resource = api.api.root.get_resource("twilio")
    if twilio_resource is not None:
        _acknowledge(
            twilio_resource,
            "AwsSolutions-APIG4",
            "Twilio cannot sign requests with SigV4 or carry a token: these webhooks are public by necessity. "
            "Each one checks X-Twilio-Signature over the configured public URL before anything else and "
            "answers 403 otherwise (switchboard.twilio_webhook, ForgedWebhook metric).",
        )
    cloudwatch_role = api.api.node.try_find_child("CloudWatchRole")
    if cloudwatch_role is not None:
        _acknowledge(
            cloudwatch_role,
            "AwsSolutions-IAM4",
            "API Gateway's account-wide logging role, as AWS documents it: AmazonAPIGatewayPushToCloudWatchLogs "
            "is the policy made for this one purpose. It is needed for the execution logs (APIG6).",
            applies_to=[
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
            ],
        )
    for function in (api.voice_webhook, api.status_callback, api.tool_actions, api.dialer):
        _acknowledge(function, "AwsSolutions-L1", PYTHON_312)
        _acknowledge(_role(function), "AwsSolutions-IAM5", XRAY, applies_to=["Resource::*"])
    _acknowledge(
        _role(api.dialer),
        "AwsSolutions-IAM5",
        "The dialer names its schedules at run time (a campaign's name, retry-<CallSid>, defer-<hash>): "
        "CreateSchedule is allowed on the stack's schedule group only.",
        applies_to=[_matching(service="scheduler")],
    )

    # -- media service -------------------------------------------------------------------------------------------
    media = stack.media
    _acknowledge(
        media.task_definition,
        "AwsSolutions-ECS2",
        "The environment holds names, URLs and secret ARNs only (StreamingSettings); REDIS_URL carries no "
        "credentials. Every secret value, the cache user's included, is read from Secrets Manager by the service "
        "at start with its task role (Powertools Parameters).",
    )
    _acknowledge(
        media.task_definition,
        "AwsSolutions-IAM5",
        "Transcribe's StartStreamTranscription and Polly's SynthesizeSpeech / DescribeVoices have no resource "
        "to scope to (Polly lexicons are not used); ECR's GetAuthorizationToken (execution role) is account-wide "
        "by design. The tools API is limited to POST /tools/* on this API's stage: the tool name is the path. "
        "A Bedrock cross-region inference profile sends each request to a region of its geography that Bedrock "
        "chooses (and may add to): its foundation model, named exactly, is granted in any region, and the profile "
        "itself in this region only.",
        applies_to=["Resource::*", _matching(service="execute-api"), _FOUNDATION_MODEL_IN_ANY_REGION],
    )
    _acknowledge(
        media.load_balancer,
        "AwsSolutions-EC23",
        "Twilio's media streams connect to this load balancer from Twilio's cloud, whose addresses are not a "
        "published, stable list: 443 is open to the internet. Only HTTPS is served (recommended TLS policy); "
        "each WebSocket upgrade must carry Twilio's signature and a single-use stream token.",
    )


# arn:aws:bedrock:*::foundation-model/<one model id, no wildcard> (infra/bedrock.py).
_FOUNDATION_MODEL_IN_ANY_REGION = RegexAppliesTo(
    regex=r"/^Resource::arn:(<AWS::Partition>|aws[a-z-]*):bedrock:\*::foundation-model\/[^*]+$/g"
)


def _role(function: lambda_.Function) -> iam.IRole:
    if function.role is None:
        raise ValueError(f"{function.node.path} has no role")
    return function.role


def _matching(*, service: str) -> RegexAppliesTo:
    """A wildcard resource of one service in this stack's account and region."""
    # The partition is a literal ("aws") with cdk.json's enablePartitionLiterals and a known region.
    return RegexAppliesTo(
        regex=f"/^Resource::arn:(<AWS::Partition>|aws[a-z-]*):{service}:[a-z0-9-]+:<AWS::AccountId>:.*$/g"
    )
