"""Checking that a webhook or a media-stream upgrade really comes from Twilio.

Twilio signs every request with `X-Twilio-Signature`: HMAC-SHA1 keyed with the account Auth Token over
the full URL it requested plus the POST parameters. twilio's own `RequestValidator` does the
arithmetic (sorting, the with/without-port variants, the `bodySHA256` JSON variant, the comparison);
this module only feeds it the right inputs and turns its yes/no into an exception:

- The URL is rebuilt from the configured public base, never from the request's Host header: behind
  API Gateway the Lambda sees an internal host and no stage, and a Host header is the caller's to choose.
- Form bodies keep every value of a repeated name, so an extra `Name=other` appended by a forger breaks
  the signature instead of slipping past it.
- Every failure raises `InvalidSignature`; nothing here answers a bare `False` that a caller could ignore.

A valid signature proves Twilio sent the request once, not that this is the first delivery: Twilio
signatures carry no timestamp, so handlers must be idempotent (status callbacks use SequenceNumber).
"""

from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, parse_qsl, urlsplit

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"

# The query parameter Twilio adds when it signs a JSON body: the body's SHA-256, the URL carries the rest.
_BODY_HASH_PARAM = "bodySHA256"

type FormParams = Mapping[str, str] | Iterable[tuple[str, str]]


class TwilioSecurityError(Exception):
    """A request claiming to come from Twilio failed a check. `reason` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidSignature(TwilioSecurityError):
    """X-Twilio-Signature is missing or does not match the request."""


class _MultiValueParams(dict[str, list[str]]):
    """Form parameters in the shape RequestValidator reads repeated names from.

    The validator calls `getall(name)` when the object has it (as Flask's MultiDict does) and signs
    every distinct value; a plain dict would give it only one value per name and a list of pairs
    makes it raise TypeError.
    """

    def getall(self, name: str) -> list[str]:
        return self[name]


def form_params(body: str) -> list[tuple[str, str]]:
    """A form-encoded body as Twilio sends it, every pair kept in order, blank values included.

    Twilio signs `Digits=` with its empty value, so dropping blanks would break valid signatures.
    Decoding API Gateway's base64 body (`isBase64Encoded`) to text comes first and is the caller's job.
    """
    return parse_qsl(body, keep_blank_values=True)


def signature_from_headers(headers: Mapping[str, str]) -> str | None:
    """X-Twilio-Signature from a header map whatever its case.

    REST APIs keep the case Twilio sent, HTTP APIs and WebSocket servers lowercase header names.
    """
    wanted = SIGNATURE_HEADER.lower()
    for name, value in headers.items():
        if name.lower() == wanted:
            return value
    return None


def _checked_url(url: str, *, scheme: str, name: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise ValueError(f"{name} must be a {scheme}:// URL, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"{name} has no host: {url!r}")
    if "?" in url or "#" in url:
        raise ValueError(f"{name} must not carry a query string or fragment: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{name} must not carry credentials")
    try:
        parts.port  # noqa: B018 - reading it is the check: urllib raises on a port that is not a number.
    except ValueError as exc:
        raise ValueError(f"{name} has an invalid port: {url!r}") from exc
    return url


def _with_default_port(url: str) -> str | None:
    """`url` with its scheme's default port written out, or None when it already names a port.

    RequestValidator also tries the URL with a port, but picks 80 for any scheme other than https,
    so for wss://host/... it would try :80 where Twilio would write :443.
    """
    parts = urlsplit(url)
    if parts.port is not None:
        return None
    return parts._replace(netloc=f"{parts.netloc}:443").geturl()


def _require(signature: str | None) -> str:
    if not signature:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER} header")
    return signature


def _to_multi(params: FormParams) -> _MultiValueParams:
    if isinstance(params, str):
        # A str is an Iterable too, of characters: catch the raw body passed by mistake.
        raise TypeError("pass the parsed form (form_params(body)), not the raw body")
    pairs = params.items() if isinstance(params, Mapping) else params
    multi = _MultiValueParams()
    for name, value in pairs:
        multi.setdefault(name, []).append(value)
    return multi


class TwilioSignature:
    """Validates Twilio's signatures against the public URLs Twilio was given.

    `public_api_url` is the https base of the webhooks as configured in Twilio, with the API Gateway
    stage when the URL has one (`https://abc.execute-api.eu-west-1.amazonaws.com/prod`) or a custom
    domain (`https://voice.example.com`). `public_stream_url` is the exact wss:// URL put in
    `<Stream url>`; Twilio strips query strings from it, hence none is allowed.
    """

    def __init__(
        self, auth_token: str, *, public_api_url: str | None = None, public_stream_url: str | None = None
    ) -> None:
        if not auth_token:
            raise ValueError("auth_token is empty")
        if public_api_url is None and public_stream_url is None:
            raise ValueError("give public_api_url (webhooks), public_stream_url (media stream) or both")
        # A trailing slash would make base + "/route" a different URL from the one Twilio signed.
        self._api_base = (
            None
            if public_api_url is None
            else _checked_url(public_api_url, scheme="https", name="public_api_url").rstrip("/")
        )
        self._stream_url = (
            None
            if public_stream_url is None
            else _checked_url(public_stream_url, scheme="wss", name="public_stream_url")
        )
        self._stream_urls: tuple[str, ...] = ()
        if self._stream_url is not None:
            with_port = _with_default_port(self._stream_url)
            self._stream_urls = (self._stream_url,) if with_port is None else (self._stream_url, with_port)
        self._validator = RequestValidator(auth_token)

    @property
    def stream_url(self) -> str:
        """The URL to put in `<Stream url>`: the one `validate_websocket` checks against."""
        if self._stream_url is None:
            raise ValueError("this TwilioSignature was built without public_stream_url")
        return self._stream_url

    def url_for(self, path: str, query: str = "") -> str:
        """The public URL Twilio signed for a request to `path` with `query`.

        `path` is the route below `public_api_url`, without the stage (REST API `event["path"]`; an
        HTTP API on a named stage puts `/<stage>` in front of `rawPath`: strip it). `query` is the raw
        query string as received, without the `?`.
        """
        if self._api_base is None:
            raise ValueError("this TwilioSignature was built without public_api_url")
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        url = self._api_base + path
        return f"{url}?{query}" if query else url

    def validate_form(self, path: str, query: str, params: FormParams, signature: str | None) -> None:
        """Check a form-encoded webhook (voice, status callback, AMD). Raises InvalidSignature."""
        sig = _require(signature)
        if not self._check(self.url_for(path, query), _to_multi(params), sig):
            raise InvalidSignature("signature mismatch")

    def validate_json(self, path: str, query: str, body: str, signature: str | None) -> None:
        """Check a webhook with a JSON body: the signature covers the URL, whose bodySHA256 covers the body."""
        sig = _require(signature)
        # Parsed as RequestValidator parses it (blank values dropped): without the parameter it would
        # treat the body string as a params dict and raise TypeError.
        if _BODY_HASH_PARAM not in parse_qs(query):
            raise InvalidSignature(f"no {_BODY_HASH_PARAM} in the query of a JSON webhook")
        url = self.url_for(path, query)
        if self._check(url, body, sig):
            return
        # validate() folds the URL signature and the body hash into one bool. With no body it checks
        # the URL signature alone, which is everything Twilio signed here: if that holds, the body
        # is what changed.
        if self._check(url, {}, sig):
            raise InvalidSignature("body hash mismatch")
        raise InvalidSignature("signature mismatch")

    def validate_websocket(self, signature: str | None) -> None:
        """Check the media stream's upgrade request, signed over the public wss:// URL with no params.

        Not enough on its own (whether Twilio always sends it is unclear): the stream token checked
        on `start` is what binds the connection to a call.
        """
        sig = _require(signature)
        if not self._stream_urls:
            raise ValueError("this TwilioSignature was built without public_stream_url")
        if not any(self._check(url, {}, sig) for url in self._stream_urls):
            raise InvalidSignature("signature mismatch")

    def _check(self, url: str, params: _MultiValueParams | dict[str, str] | str, signature: str) -> bool:
        try:
            return bool(self._validator.validate(url, params, signature))
        except UnicodeError as exc:
            # Lone surrogates (possible from JSON-decoded events) cannot be UTF-8 encoded for the HMAC.
            raise InvalidSignature("request is not valid UTF-8") from exc
