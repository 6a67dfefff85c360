"""What the platform published on an EventBridge bus, as the tests read it: on moto, a rule delivers the
bus's events to an SQS queue, and the tests drain the queue."""

import json
from typing import Any

import boto3


class PublishedEvents:
    """Every `switchboard` event put on the routed buses, in arrival order. Create inside mock_aws."""

    def __init__(self, bus: str, queue_name: str = "call-events") -> None:
        self._events = boto3.client("events")
        self._sqs: Any = boto3.client("sqs")  # no type stubs installed for SQS
        self._queue_url = self._sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        self._queue_arn = self._sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.route(bus)

    def route(self, bus: str) -> None:
        """Capture `bus` too (it must exist)."""
        self._events.put_rule(
            Name="all-call-events", EventBusName=bus, EventPattern=json.dumps({"source": ["switchboard"]})
        )
        self._events.put_targets(
            Rule="all-call-events", EventBusName=bus, Targets=[{"Id": "queue", "Arn": self._queue_arn}]
        )

    def drain(self) -> list[dict[str, Any]]:
        """The events that arrived since the last drain."""
        events: list[dict[str, Any]] = []
        while True:
            messages = self._sqs.receive_message(QueueUrl=self._queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return events
            for message in messages:
                events.append(json.loads(message["Body"]))
                self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
