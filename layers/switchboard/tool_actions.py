"""The tools an agent may call, what their arguments look like, and the one place they are run.

- One pydantic model per tool's arguments (`extra="forbid"`: an argument the tool does not take, such as
  a recipient for send_sms, is refused, not ignored). `tool_schemas(agent)` gives them to the LLM as
  OpenAI function tools, for the tools that agent has.
- `ToolActions.invoke` runs one request of the streaming service. The call, and through it the agent
  and the caller's number, come from the call record, never from the request; every policy is applied
  here, whatever the arguments say.
- Idempotent (Powertools Idempotency, DynamoDB): the same call, tool and arguments (as canonical JSON)
  have one side effect. A duplicate that arrives while the first is running gets `ToolCallInProgress`
  (the client retries shortly); one that arrives after it gets the stored result. A failed action (the
  provider broke) is not stored, so that a retry can succeed.
- Every invocation is written to the call record, as `TOOL#<invocation_id>` with an id derived from the
  idempotency key (so a replay is the same item), and announced once as a ToolInvoked event.
"""

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    BasePersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from switchboard.action import ActionResult
from switchboard.agent import AgentConfig, BookingPolicy, SmsPolicy, TransferPolicy
from switchboard.booking import AppointmentBook, BookingRequest
from switchboard.call import Call, CallSid
from switchboard.events import CallEvent, CallEvents, CallEventType, EventPublishError
from switchboard.observability import logger, metrics
from switchboard.records import CallNotFound, CallRecords
from switchboard.sms import TextMessages
from switchboard.tool import ToolInvocation, ToolName, ToolOutcome, ToolRequest, ToolResult
from switchboard.transfer import CallTransfers

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import CreateTableInputTypeDef

AGENT_ENDED = "agent_ended"
# The idempotency records' key is `<prefix>#<hash>`: fixed, so it does not change with the function's name.
IDEMPOTENCY_KEY_PREFIX = "switchboard-tool"
# Long enough to cover the longest call (Conversation.max_call_s is at most 4 h): a retry within the call
# always finds the first result.
DEFAULT_IDEMPOTENCY_TTL_S = 4 * 3600 + 600
# The arguments of every tool fit in well under this; more is not an LLM's tool call.
MAX_ARGUMENTS_CHARS = 4096
MAX_ARGUMENTS_DEPTH = 8

_METRIC_BY_OUTCOME: Final = {
    ToolOutcome.SUCCEEDED: "ToolSucceeded",
    ToolOutcome.REFUSED: "ToolRefused",
    ToolOutcome.FAILED: "ToolFailed",
}


# -- arguments ------------------------------------------------------------------------------------------


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class BookAppointmentArguments(_Arguments):
    start: str = Field(
        min_length=10,
        max_length=40,
        description="The start in the calendar's local time, ISO 8601 without offset, e.g. 2026-03-03T10:30.",
    )
    name: str = Field(min_length=1, max_length=80, description="The caller's full name, as they gave it.")
    reason: str | None = Field(default=None, max_length=200, description="The reason for the visit, in a few words.")

    @field_validator("start")
    @classmethod
    def _a_date_and_time(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO 8601 date and time such as 2026-03-03T10:30") from None
        return value


class SendSmsArguments(_Arguments):
    body: str = Field(min_length=1, max_length=480, description="The text of the message, in plain words.")


class TransferCallArguments(_Arguments):
    to: str = Field(min_length=1, max_length=64, description="Which line to transfer to, by its name.")


class EndCallArguments(_Arguments):
    reason: str | None = Field(default=None, max_length=200, description="Why the call is ending, in a few words.")


TOOL_ARGUMENTS: Final[dict[ToolName, type[_Arguments]]] = {
    ToolName.BOOK_APPOINTMENT: BookAppointmentArguments,
    ToolName.SEND_SMS: SendSmsArguments,
    ToolName.TRANSFER_CALL: TransferCallArguments,
    ToolName.END_CALL: EndCallArguments,
}


def _parameters(model: type[_Arguments]) -> dict[str, Any]:
    """A model's JSON schema as an LLM reads it best: no titles, optional fields as plain types."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
        variants = prop.get("anyOf")
        if isinstance(variants, list) and {"type": "null"} in variants and len(variants) == 2:
            # `str | None = None` reads as "optional" through `required`; the null variant only adds noise.
            del prop["anyOf"]
            prop.update(next(variant for variant in variants if variant != {"type": "null"}))
            if prop.get("default", ...) is None:
                del prop["default"]
    return schema


def _function(name: ToolName, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name.value, "description": description, "parameters": parameters}}


def idempotency_table_definition(name: str) -> "CreateTableInputTypeDef":
    """Powertools Idempotency's table as it documents it: partition key `id`, TTL on `expiration`."""
    return {
        "TableName": name,
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }


IDEMPOTENCY_TTL_ATTRIBUTE = "expiration"


def tool_schemas(agent: AgentConfig) -> list[dict[str, Any]]:
    """The agent's tools in OpenAI's function-tool format, for the `tools` of a chat completion request.

    Only the tools the agent has; descriptions carry its policies (time zone, slot length, the names of
    its transfer lines) so the LLM asks for what can succeed. The policies are enforced by the tool
    Lambda whatever the LLM sends.
    """
    tools = agent.tools
    schemas: list[dict[str, Any]] = []
    if (booking := tools.book_appointment) is not None:
        description = (
            f"Book an appointment for the caller in an open {booking.slot_minutes}-minute slot, within opening "
            f"hours and at most {booking.max_days_ahead} days ahead. Times are local to {booking.timezone}. "
            "Read the slot back to the caller before booking. If the slot cannot be booked, the result says why "
            "and offers open slots nearby."
        )
        if booking.may_reschedule:
            description += (
                " If this call is about an existing appointment, or one was booked earlier in the call, "
                "this moves it to the new time instead of adding a second one."
            )
        else:
            description += " One appointment per call."
        schemas.append(_function(ToolName.BOOK_APPOINTMENT, description, _parameters(BookAppointmentArguments)))
    if (sms := tools.send_sms) is not None:
        description = (
            "Send a text message to the caller's own phone; it cannot go to any other number. "
            f"At most {sms.max_per_call} per call."
        )
        schemas.append(_function(ToolName.SEND_SMS, description, _parameters(SendSmsArguments)))
    if (transfer := tools.transfer_call) is not None:
        parameters = _parameters(TransferCallArguments)
        parameters["properties"]["to"]["enum"] = sorted(transfer.allow)
        description = "Transfer the caller to a person on one of these lines: " + ", ".join(sorted(transfer.allow))
        schemas.append(_function(ToolName.TRANSFER_CALL, description + ".", parameters))
    if tools.end_call is not None:
        description = "End the call once the caller has nothing more; say goodbye first."
        schemas.append(_function(ToolName.END_CALL, description, _parameters(EndCallArguments)))
    return schemas


def _problems(tool: ToolName, model: type[_Arguments], exc: ValidationError) -> str:
    """The validation errors as one message the agent can act on (argument names shortened, list capped)."""
    problems = []
    for error in exc.errors(include_url=False)[:5]:
        field = ".".join(str(part) for part in error["loc"])[:40] or "arguments"
        if error["type"] == "extra_forbidden":
            problems.append(f"'{field}' is not an argument of {tool.value}")
        elif error["type"] == "missing":
            problems.append(f"'{field}' is required")
        else:
            problems.append(f"'{field}' {error['msg'][:120]}")
    takes = ", ".join(model.model_fields)
    return f"The {tool.value} arguments were not accepted: {'; '.join(problems)}. It takes: {takes}."


# -- running a tool -------------------------------------------------------------------------------------


class UnknownTool(LookupError):
    """No tool has this name."""


class BadArguments(ValueError):
    """The arguments are not something any tool takes (too large, too deep, not JSON numbers)."""


class ToolCallInProgress(RuntimeError):
    """The same tool call is running now; its result will be there for a retry."""


def canonical_arguments(arguments: dict[str, Any]) -> str:
    """The arguments as canonical JSON (sorted keys, no spaces): equal arguments give equal keys."""
    try:
        text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise BadArguments("arguments must be plain JSON (no NaN or Infinity)") from exc
    if len(text) > MAX_ARGUMENTS_CHARS:
        raise BadArguments(f"arguments are longer than {MAX_ARGUMENTS_CHARS} characters")
    if _depth(arguments) > MAX_ARGUMENTS_DEPTH:
        raise BadArguments(f"arguments are nested deeper than {MAX_ARGUMENTS_DEPTH} levels")
    return text


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(inner) for inner in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(inner) for inner in value), default=0)
    return 0


class ToolCall(BaseModel):
    """What makes two tool requests the same one: the idempotency key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    call_sid: CallSid
    tool: ToolName
    arguments: str = Field(description="The arguments as canonical JSON.")

    @classmethod
    def of(cls, tool: ToolName, request: ToolRequest) -> "ToolCall":
        return cls(call_sid=request.call_sid, tool=tool, arguments=canonical_arguments(request.arguments))

    @property
    def invocation_id(self) -> str:
        """The id of this call's record: the same for every replay of the same tool call."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:32]


class ToolExecution(BaseModel):
    """What one run of a tool produced: kept by the idempotency store and returned to every replay."""

    model_config = ConfigDict(frozen=True)

    result: ToolResult
    invocation: ToolInvocation


class _NotKept(Exception):
    """Carries a failed run out of the idempotent function, so Powertools deletes its record."""

    def __init__(self, execution: ToolExecution) -> None:
        super().__init__(execution.result.message)
        self.execution = execution


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ToolActions:
    """Runs the tools the streaming service asks for, once per distinct request, under the agent's policies."""

    def __init__(
        self,
        *,
        records: CallRecords,
        agents: Callable[[str], AgentConfig | None],
        appointments: AppointmentBook,
        messages: TextMessages,
        transfers: CallTransfers,
        events: CallEvents,
        persistence: BasePersistenceLayer,
        idempotency_ttl_s: int = DEFAULT_IDEMPOTENCY_TTL_S,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.records = records
        self.agents = agents
        self.appointments = appointments
        self.messages = messages
        self.transfers = transfers
        self.events = events
        self.clock = clock
        self._config = IdempotencyConfig(expires_after_seconds=idempotency_ttl_s)
        self._run_once: Callable[..., ToolExecution] = idempotent_function(
            self._run,
            data_keyword_argument="tool_call",
            persistence_store=persistence,
            config=self._config,
            output_serializer=PydanticSerializer(ToolExecution),
            key_prefix=IDEMPOTENCY_KEY_PREFIX,
        )

    @staticmethod
    def tool_named(name: str) -> ToolName:
        try:
            return ToolName(name)
        except ValueError:
            raise UnknownTool(f"no tool named {name[:64]!r}") from None

    def invoke(self, tool_name: str, request: ToolRequest, lambda_context: LambdaContext | None = None) -> ToolResult:
        """Run (or replay) one tool request.

        Raises UnknownTool, CallNotFound, BadArguments (arguments no tool could take) and ToolCallInProgress.
        Policy refusals and invalid arguments are results (outcome `refused`), recorded like any other.
        """
        tool = self.tool_named(tool_name)
        tool_call = ToolCall.of(tool, request)
        call = self.records.get_call(request.call_sid)
        if call is None:
            raise CallNotFound(request.call_sid)
        if lambda_context is not None:
            # In-progress records then expire with the invocation, so a Lambda that timed out mid-run
            # does not hold its duplicates off for the whole TTL.
            self._config.register_lambda_context(lambda_context)
        try:
            execution = self._run_once(tool_call=tool_call, call=call)
        except IdempotencyAlreadyInProgressError as exc:
            raise ToolCallInProgress(f"{tool.value} with these arguments is already running for this call") from exc
        except _NotKept as failed:
            execution = failed.execution
        self._record(execution, call)
        return execution.result

    def dispatch(self, tool: ToolName, call: Call, arguments: dict[str, Any]) -> ActionResult:
        """Apply the agent's policy for `tool` to the arguments and, when it allows, do the action."""
        agent = self.agents(call.agent_id)
        policy = getattr(agent.tools, tool.value) if agent is not None else None
        if policy is None:
            return ActionResult.refused(f"{tool.value} is not available on this call.")
        model = TOOL_ARGUMENTS[tool]
        try:
            parsed = model.model_validate(arguments)
        except ValidationError as exc:
            return ActionResult.refused(_problems(tool, model, exc))
        if isinstance(parsed, BookAppointmentArguments) and isinstance(policy, BookingPolicy):
            request = BookingRequest(start=parsed.start, name=parsed.name, reason=parsed.reason)
            return self.appointments.book(policy, call, request, self.clock())
        if isinstance(parsed, SendSmsArguments) and isinstance(policy, SmsPolicy):
            return self.messages.send(call, policy, parsed.body)
        if isinstance(parsed, TransferCallArguments) and isinstance(policy, TransferPolicy):
            return self.transfers.transfer(call, policy, parsed.to)
        if isinstance(parsed, EndCallArguments):
            ended = self.records.end_conversation(call.call_sid, AGENT_ENDED)
            message = "The call will end after your goodbye." if ended else "The call is already ending."
            return ActionResult.succeeded(message)
        raise AssertionError(f"no action for {tool.value}")  # pragma: no cover - TOOL_ARGUMENTS covers every tool

    # -- internals -------------------------------------------------------------------------------------

    def _run(self, *, tool_call: ToolCall, call: Call) -> ToolExecution:
        requested_at = self.clock()
        arguments: dict[str, Any] = json.loads(tool_call.arguments)
        action = self.dispatch(tool_call.tool, call, arguments)
        completed_at = self.clock()
        invocation_id = tool_call.invocation_id
        if action.outcome is ToolOutcome.FAILED:
            # Not kept by the idempotency store, so a retry runs again: each attempt is its own record.
            invocation_id += f"-failed-{int(requested_at.timestamp() * 1000)}"
        result = ToolResult(
            tool=tool_call.tool,
            outcome=action.outcome,
            message=action.message,
            data=action.data,
            invocation_id=invocation_id,
        )
        invocation = ToolInvocation(
            call_sid=call.call_sid,
            invocation_id=invocation_id,
            tool=tool_call.tool,
            arguments=arguments,
            outcome=action.outcome,
            result={"message": action.message, **({"data": action.data} if action.data is not None else {})},
            error=action.error,
            requested_at=requested_at,
            completed_at=completed_at,
        )
        execution = ToolExecution(result=result, invocation=invocation)
        if action.outcome is ToolOutcome.FAILED:
            raise _NotKept(execution)
        return execution

    def _record(self, execution: ToolExecution, call: Call) -> None:
        """Write the invocation to the call record and announce it, once: a replay finds it written."""
        invocation = execution.invocation
        facts = {
            "tool": invocation.tool.value,
            "outcome": invocation.outcome.value,
            "invocation_id": invocation.invocation_id,
        }
        if not self.records.put_tool_invocation(invocation):
            metrics.add_metric(name="ToolReplayed", unit=MetricUnit.Count, value=1)
            logger.info("Tool call replayed", extra=facts)
            return
        metrics.add_metric(name=_METRIC_BY_OUTCOME[invocation.outcome], unit=MetricUnit.Count, value=1)
        if invocation.outcome is ToolOutcome.FAILED:
            logger.warning("Tool call failed", extra={**facts, "error": invocation.error})
        else:
            logger.info("Tool call done", extra=facts)
        event = CallEvent(
            type=CallEventType.TOOL_INVOKED,
            call_sid=call.call_sid,
            agent_id=call.agent_id,
            at=invocation.completed_at,
            facts=facts,
        )
        try:
            self.events.emit(event)
        except (EventPublishError, ClientError, BotoCoreError):
            # The record above is the truth; the event is a notification. Losing it must not fail the tool.
            logger.exception("ToolInvoked event not published", extra=facts)
            metrics.add_metric(name="EventNotPublished", unit=MetricUnit.Count, value=1)
