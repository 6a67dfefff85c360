"""Outbound calls later: the Scheduler group the dialer creates its schedules in, the role Scheduler
invokes the dialer with, the queue for dials Scheduler could not deliver; and the call events bus, with
the rule that sends unanswered outbound calls back to the dialer for a retry."""

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from switchboard.events import SOURCE, CallEventType


class Scheduling(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.bus = events.EventBus(self, "CallEvents", event_bus_name=f"{stack.stack_name}-calls")
        self.group = scheduler.ScheduleGroup(self, "Group", schedule_group_name=f"{stack.stack_name}-dials")
        self.dead_letters = sqs.Queue(
            self,
            "UndeliveredDials",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                # Only this account's schedules may use the role (confused deputy).
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            ),
            description="EventBridge Scheduler: invoke the dialer with a scheduled dial",
        )
        # SendMessage only: grant_send_messages adds GetQueueAttributes / GetQueueUrl, which Scheduler never calls.
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.dead_letters.queue_arn])
        )

    def schedule_arns(self) -> str:
        return Stack.of(self).format_arn(
            service="scheduler",
            resource="schedule",
            resource_name=f"{self.group.schedule_group_name}/*",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )

    def allow_invoking(self, function_arn: str) -> None:
        self.role.add_to_policy(iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[function_arn]))

    def retry_unanswered_calls(self, dialer: lambda_.IFunction) -> None:
        """CallCompleted of outbound calls to the dialer, which schedules a retry when the agent wants one."""
        events.Rule(
            self,
            "RetryOutboundCalls",
            event_bus=self.bus,
            description="Outbound calls that ended: the dialer decides on a retry",
            event_pattern=events.EventPattern(
                source=[SOURCE],
                detail_type=[CallEventType.CALL_COMPLETED.value],
                detail={"direction": ["outbound"]},
            ),
            targets=[
                targets.LambdaFunction(
                    dialer, dead_letter_queue=self.dead_letters, retry_attempts=3, max_event_age=Duration.hours(2)
                )
            ],
        )
