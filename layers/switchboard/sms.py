"""Text messages an agent sends during a call: only to the caller's own number, and only so many per call.

The recipient is never an argument: it is the customer's number from the call record (the caller of an
inbound call, the callee of an outbound one), and the sender is the number of ours on the call. The cap
is an atomic counter, `sms_sent` on the call item of the records table: of two concurrent sends at the
limit, one gets the last message. A send that Twilio refuses gives its count back, so a retry may succeed.
"""

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from switchboard.action import ActionResult
from switchboard.agent import SmsPolicy
from switchboard.call import Call, CallDirection
from switchboard.records import CALL_SK, TABLE_PK, TABLE_SK, CallNotFound, _call_pk

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

# On the call item beside the Call fields: how many messages this call has sent (or is sending).
SMS_SENT_ATTRIBUTE = "sms_sent"


def our_number(call: Call) -> str:
    """The number of ours on the call: the one called (inbound) or the one calling (outbound)."""
    return call.to_number if call.direction is CallDirection.INBOUND else call.from_number


def twilio_error(exc: Exception) -> str:
    """Twilio's account of a failure, for the call record (not for the agent)."""
    if isinstance(exc, TwilioRestException):
        return f"Twilio error {exc.code} (HTTP {exc.status}): {exc.msg}"
    return f"{type(exc).__name__}: {exc}"


class TextMessages:
    """Sends SMS through Twilio's Messages API under an agent's SmsPolicy. Thread-safe."""

    def __init__(self, calls_table: str, dynamodb: "DynamoDBClient", twilio: Client) -> None:
        self.calls_table = calls_table
        self.dynamodb = dynamodb
        self.twilio = twilio

    def send(self, call: Call, policy: SmsPolicy, body: str) -> ActionResult:
        count = self.take(call.call_sid, policy.max_per_call)
        if count is None:
            return ActionResult.refused(
                f"I have already sent the {policy.max_per_call} text message(s) allowed on this call."
            )
        try:
            message = self.twilio.messages.create(to=call.customer_number, from_=our_number(call), body=body)
        except (TwilioException, OSError) as exc:
            # OSError covers the HTTP client's connection errors and timeouts (requests' exceptions are OSErrors).
            self.release(call.call_sid)
            return ActionResult.failed("The text message could not be sent.", twilio_error(exc))
        data: dict[str, Any] = {"message_sid": message.sid, "remaining_on_this_call": policy.max_per_call - count}
        return ActionResult.succeeded("The text message is on its way to the caller's phone.", data)

    def take(self, call_sid: str, limit: int) -> int | None:
        """Count one more message for the call and return the count, or None when `limit` is reached."""
        try:
            response = self.dynamodb.update_item(
                TableName=self.calls_table,
                Key={TABLE_PK: {"S": _call_pk(call_sid)}, TABLE_SK: {"S": CALL_SK}},
                UpdateExpression="SET #n = if_not_exists(#n, :zero) + :one",
                ConditionExpression="attribute_exists(#pk) AND (attribute_not_exists(#n) OR #n < :limit)",
                ExpressionAttributeNames={"#pk": TABLE_PK, "#n": SMS_SENT_ATTRIBUTE},
                ExpressionAttributeValues={":zero": {"N": "0"}, ":one": {"N": "1"}, ":limit": {"N": str(limit)}},
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            if not self._call_exists(call_sid):
                raise CallNotFound(call_sid) from exc
            return None
        return int(response["Attributes"][SMS_SENT_ATTRIBUTE]["N"])

    def release(self, call_sid: str) -> None:
        """Give back a count taken for a message that was not sent."""
        try:
            self.dynamodb.update_item(
                TableName=self.calls_table,
                Key={TABLE_PK: {"S": _call_pk(call_sid)}, TABLE_SK: {"S": CALL_SK}},
                UpdateExpression="SET #n = #n - :one",
                ConditionExpression="#n > :zero",
                ExpressionAttributeNames={"#n": SMS_SENT_ATTRIBUTE},
                ExpressionAttributeValues={":zero": {"N": "0"}, ":one": {"N": "1"}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def sent(self, call_sid: str) -> int:
        """How many messages the call has counted."""
        response = self.dynamodb.get_item(
            TableName=self.calls_table,
            Key={TABLE_PK: {"S": _call_pk(call_sid)}, TABLE_SK: {"S": CALL_SK}},
            ConsistentRead=True,
            ProjectionExpression="#n",
            ExpressionAttributeNames={"#n": SMS_SENT_ATTRIBUTE},
        )
        value = response.get("Item", {}).get(SMS_SENT_ATTRIBUTE)
        return int(value["N"]) if value is not None and "N" in value else 0

    def _call_exists(self, call_sid: str) -> bool:
        response = self.dynamodb.get_item(
            TableName=self.calls_table,
            Key={TABLE_PK: {"S": _call_pk(call_sid)}, TABLE_SK: {"S": CALL_SK}},
            ConsistentRead=True,
            ProjectionExpression="#pk",
            ExpressionAttributeNames={"#pk": TABLE_PK},
        )
        return "Item" in response
