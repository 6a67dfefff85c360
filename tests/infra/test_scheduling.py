"""Scheduler group and role for outbound schedules, the call events bus and the retry rule."""

import json

from switchboard.events import SOURCE, CallEventType
from tests.infra.conftest import Synthesized


def test_schedule_group_and_the_role_scheduler_assumes(default_deployment: Synthesized) -> None:
    scheduling = default_deployment.stack.scheduling
    default_deployment.template.has_resource_properties("AWS::Scheduler::ScheduleGroup", {"Name": "switchboard-dials"})
    role = default_deployment.resources("AWS::IAM::Role")[default_deployment.logical_id(scheduling.role)]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    statements = [
        statement
        for policy in default_deployment.resources("AWS::IAM::Policy").values()
        if {"Ref": default_deployment.logical_id(scheduling.role)} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    actions = {json.dumps(s["Action"]): s["Resource"] for s in statements}
    assert json.dumps(actions['"lambda:InvokeFunction"']).endswith(':function:switchboard-dialer"]]}')
    assert actions['"sqs:SendMessage"'] == {
        "Fn::GetAtt": [default_deployment.logical_id(scheduling.dead_letters), "Arn"]
    }
    assert len(statements) == 2


def test_dead_letter_queue_is_encrypted_and_tls_only(default_deployment: Synthesized) -> None:
    default_deployment.template.has_resource_properties("AWS::SQS::Queue", {"SqsManagedSseEnabled": True})
    policy = next(iter(default_deployment.resources("AWS::SQS::QueuePolicy").values()))["Properties"]["PolicyDocument"]
    assert any(
        s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}} and s["Effect"] == "Deny"
        for s in policy["Statement"]
    )


def test_call_events_bus_and_retry_rule_to_the_dialer(default_deployment: Synthesized) -> None:
    default_deployment.template.has_resource_properties("AWS::Events::EventBus", {"Name": "switchboard-calls"})
    (rule,) = default_deployment.resources("AWS::Events::Rule").values()
    props = rule["Properties"]
    assert props["EventBusName"] == {"Ref": default_deployment.logical_id(default_deployment.stack.scheduling.bus)}
    assert props["EventPattern"] == {
        "source": [SOURCE],
        "detail-type": [CallEventType.CALL_COMPLETED.value],
        "detail": {"direction": ["outbound"]},
    }
    (target,) = props["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [default_deployment.logical_id(default_deployment.stack.api.dialer), "Arn"]}
    assert "DeadLetterConfig" in target
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 3


def test_functions_publish_to_the_bus_they_are_told(default_deployment: Synthesized) -> None:
    bus = {"Ref": default_deployment.logical_id(default_deployment.stack.scheduling.bus)}
    api = default_deployment.stack.api
    for function in (api.voice_webhook, api.status_callback, api.tool_actions):
        props = default_deployment.resources("AWS::Lambda::Function")[default_deployment.logical_id(function)][
            "Properties"
        ]
        assert props["Environment"]["Variables"]["EVENT_BUS_NAME"] == bus
