"""Who may open a media stream: Twilio, for a call our voice webhook answered, once per token.

Two checks, both before any audio flows:

1. The upgrade request's X-Twilio-Signature, over the public wss:// URL (proves Twilio opened it, if
   Twilio sent one; on its own it binds the socket to no call and can be replayed).
2. The per-call stream token in `start.customParameters["token"]`, minted by the voice webhook for this
   CallSid: genuine, unexpired, issued for the start's callSid, and used once. Single use is a Redis
   SET NX of the token's id that lives until the token expires, so a replayed token (a captured
   `start` sent again, on any task of the service) finds its id taken and is refused.

Each refusal is a StreamRejected with a low-cardinality `reason` for the RejectedStream metric and a
short close reason for the peer; nothing here logs the token or any phone number.
"""

from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streaming.protocol import StartInfo
from switchboard.stream_token import InvalidStreamToken, StreamClaims, StreamTokenSigner
from switchboard.twilio_signature import InvalidSignature, TwilioSignature, signature_from_headers

# WebSocket close codes (RFC 6455 §7.4.1).
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011

TOKEN_PARAMETER = "token"  # noqa: S105 - the name of a <Parameter>, not a secret


class StreamRejected(Exception):
    """The stream may not carry a call. `reason` is for metrics and logs, `close_reason` for the peer."""

    def __init__(self, reason: str, close_reason: str, *, code: int = POLICY_VIOLATION, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail or close_reason}")
        self.reason = reason
        self.close_reason = close_reason
        self.code = code
        self.detail = detail


def token_claim_key(token_id: str) -> str:
    return f"stream-token:{token_id}"


class StreamAuth:
    def __init__(self, signature: TwilioSignature, tokens: StreamTokenSigner, redis: aioredis.Redis) -> None:
        self._signature = signature
        self._tokens = tokens
        self._redis = redis

    def check_upgrade(self, headers: Mapping[str, str]) -> None:
        """The upgrade's X-Twilio-Signature matches the public stream URL, or StreamRejected."""
        try:
            self._signature.validate_websocket(signature_from_headers(headers))
        except InvalidSignature as exc:
            raise StreamRejected("signature", "invalid signature", detail=exc.reason) from None

    async def check_start(self, start: StartInfo) -> StreamClaims:
        """The start's token is valid for its callSid and was never used before, or StreamRejected.

        The token is claimed here: a stream refused after this point needs a new token to try again,
        which is what /twilio/stream-ended hands out when it resumes a call.
        """
        token = start.custom_parameters.get(TOKEN_PARAMETER, "")
        try:
            claims = self._tokens.verify(token, start.call_sid)
        except InvalidStreamToken as exc:
            reason = "token_expired" if exc.reason == "expired" else "token_invalid"
            raise StreamRejected(reason, "invalid token", detail=exc.reason) from None
        try:
            # EXAT: the claim needs to outlive the token, not more; once it expires, verify refuses it anyway.
            first_use = await self._redis.set(
                token_claim_key(claims.token_id),
                claims.call_sid,
                nx=True,
                exat=int(claims.expires_at.timestamp()),
            )
        except RedisError as exc:
            # Without the claim, single use cannot be enforced: refuse rather than risk a replay. Twilio
            # then requests the <Connect action>, which resumes the call with a fresh token.
            raise StreamRejected(
                "unavailable", "try again later", code=INTERNAL_ERROR, detail=type(exc).__name__
            ) from None
        if not first_use:
            raise StreamRejected("token_replayed", "token already used", detail="token already used")
        return claims
