"""Signature checks, with requests signed the way Twilio signs them: by twilio's own RequestValidator."""

import base64
import hashlib
import hmac
import json
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from switchboard.twilio_signature import (
    InvalidSignature,
    TwilioSignature,
    form_params,
    signature_from_headers,
)

TOKEN = "12345678901234567890123456789012"
OTHER_TOKEN = "abcdefabcdefabcdefabcdefabcdefab"
API_BASE = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
STREAM_URL = "wss://media.example.com/media"
VOICE_PATH = "/twilio/voice"
VOICE_URL = API_BASE + VOICE_PATH
PARAMS = {
    "CallSid": "CA0123456789abcdef0123456789abcdef",
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "From": "+15550100200",
    "To": "+15550100300",
    "CallStatus": "ringing",
    "Digits": "",
}


class _TwilioMultiDict(dict[str, list[str]]):
    """What Twilio's signing sees for a repeated name: RequestValidator reads it through getall()."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def _sign(url: str, params: object = None, token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params or {}))


@pytest.fixture
def checker() -> TwilioSignature:
    return TwilioSignature(TOKEN, public_api_url=API_BASE, public_stream_url=STREAM_URL)


def _reason(exc: pytest.ExceptionInfo[InvalidSignature]) -> str:
    return exc.value.reason


# --- form webhooks ---------------------------------------------------------------------------------


def test_valid_form_webhook(checker: TwilioSignature) -> None:
    checker.validate_form(VOICE_PATH, "", PARAMS, _sign(VOICE_URL, PARAMS))


def test_valid_form_webhook_from_parsed_body(checker: TwilioSignature) -> None:
    body = urlencode(PARAMS)
    checker.validate_form(VOICE_PATH, "", form_params(body), _sign(VOICE_URL, PARAMS))


def test_independent_hmac_cross_check(checker: TwilioSignature) -> None:
    # Twilio's documented algorithm, by hand: URL then name+value sorted by name, HMAC-SHA1, base64.
    data = VOICE_URL + "".join(name + PARAMS[name] for name in sorted(PARAMS))
    signature = base64.b64encode(hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()
    checker.validate_form(VOICE_PATH, "", PARAMS, signature)


def test_forged_signature(checker: TwilioSignature) -> None:
    with pytest.raises(InvalidSignature) as exc:
        checker.validate_form(VOICE_PATH, "", PARAMS, base64.b64encode(b"x" * 20).decode())
    assert _reason(exc) == "signature mismatch"


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_signature(checker: TwilioSignature, signature: str | None) -> None:
    with pytest.raises(InvalidSignature) as exc:
        checker.validate_form(VOICE_PATH, "", PARAMS, signature)
    assert _reason(exc) == "missing X-Twilio-Signature header"


def test_signed_with_another_token(checker: TwilioSignature) -> None:
    with pytest.raises(InvalidSignature):
        checker.validate_form(VOICE_PATH, "", PARAMS, _sign(VOICE_URL, PARAMS, token=OTHER_TOKEN))


@pytest.mark.parametrize(
    "tampered",
    [
        {**PARAMS, "From": "+15550100999"},
        {**PARAMS, "Digits": "1"},
        {**PARAMS, "Extra": "x"},
        {name: value for name, value in PARAMS.items() if name != "CallStatus"},
    ],
    ids=["value-changed", "blank-value-filled", "param-added", "param-removed"],
)
def test_tampered_params(checker: TwilioSignature, tampered: dict[str, str]) -> None:
    with pytest.raises(InvalidSignature):
        checker.validate_form(VOICE_PATH, "", tampered, _sign(VOICE_URL, PARAMS))


@pytest.mark.parametrize("extra_first", [True, False], ids=["extra-first", "extra-last"])
def test_repeated_name_added_by_a_forger_is_rejected(checker: TwilioSignature, extra_first: bool) -> None:
    # Collapsed into a dict, one of these orders would keep the signed value and let the extra one
    # through unsigned, to be read by whatever code takes the first (or last) value.
    extra = ("From", "+15550100999")
    pairs = [extra, *PARAMS.items()] if extra_first else [*PARAMS.items(), extra]
    with pytest.raises(InvalidSignature):
        checker.validate_form(VOICE_PATH, "", pairs, _sign(VOICE_URL, PARAMS))


def test_repeated_name_signed_with_all_values_is_valid(checker: TwilioSignature) -> None:
    signed = _TwilioMultiDict({name: [value] for name, value in PARAMS.items()})
    signed["Tag"] = ["b", "a"]
    pairs = [*PARAMS.items(), ("Tag", "b"), ("Tag", "a")]
    checker.validate_form(VOICE_PATH, "", pairs, _sign(VOICE_URL, signed))


@pytest.mark.parametrize(
    "signed_url",
    [
        "https://evil.example.com/prod/twilio/voice",
        API_BASE + "/twilio/status",
        "http://abc123.execute-api.eu-west-1.amazonaws.com/prod/twilio/voice",
        "https://abc123.execute-api.eu-west-1.amazonaws.com:8443/prod/twilio/voice",
    ],
    ids=["other-host", "other-path", "http", "other-port"],
)
def test_signed_for_another_url(checker: TwilioSignature, signed_url: str) -> None:
    with pytest.raises(InvalidSignature):
        checker.validate_form(VOICE_PATH, "", PARAMS, _sign(signed_url, PARAMS))


def test_stage_is_part_of_the_signed_url(checker: TwilioSignature) -> None:
    assert checker.url_for(VOICE_PATH) == "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/twilio/voice"
    without_stage = "https://abc123.execute-api.eu-west-1.amazonaws.com/twilio/voice"
    with pytest.raises(InvalidSignature):
        checker.validate_form(VOICE_PATH, "", PARAMS, _sign(without_stage, PARAMS))


def test_custom_domain_without_stage() -> None:
    checker = TwilioSignature(TOKEN, public_api_url="https://voice.example.com/", public_stream_url=STREAM_URL)
    assert checker.url_for(VOICE_PATH) == "https://voice.example.com/twilio/voice"
    checker.validate_form(VOICE_PATH, "", PARAMS, _sign("https://voice.example.com/twilio/voice", PARAMS))


def test_default_port_written_or_not(checker: TwilioSignature) -> None:
    # RequestValidator tries the URL with and without the port, since Twilio is inconsistent about it.
    with_port = "https://abc123.execute-api.eu-west-1.amazonaws.com:443/prod/twilio/voice"
    checker.validate_form(VOICE_PATH, "", PARAMS, _sign(with_port, PARAMS))
    checker.validate_form(VOICE_PATH, "", PARAMS, _sign(VOICE_URL, PARAMS))


def test_configured_port_is_also_accepted_without_it() -> None:
    checker = TwilioSignature(TOKEN, public_api_url="https://voice.example.com:443", public_stream_url=STREAM_URL)
    checker.validate_form(VOICE_PATH, "", PARAMS, _sign("https://voice.example.com/twilio/voice", PARAMS))
    checker.validate_form(VOICE_PATH, "", PARAMS, _sign("https://voice.example.com:443/twilio/voice", PARAMS))


def test_query_string_is_signed(checker: TwilioSignature) -> None:
    query = "agent=clinic-receptionist&attempt=2"
    signature = _sign(f"{VOICE_URL}?{query}", PARAMS)
    assert checker.url_for(VOICE_PATH, query) == f"{VOICE_URL}?{query}"
    checker.validate_form(VOICE_PATH, query, PARAMS, signature)
    with pytest.raises(InvalidSignature):
        checker.validate_form(VOICE_PATH, "agent=clinic-receptionist&attempt=3", PARAMS, signature)
    with pytest.raises(InvalidSignature):
        checker.validate_form(VOICE_PATH, "", PARAMS, signature)


def test_unencodable_input_fails_as_invalid_signature(checker: TwilioSignature) -> None:
    with pytest.raises(InvalidSignature) as exc:
        checker.validate_form(VOICE_PATH, "", {"From": "\ud800"}, _sign(VOICE_URL, PARAMS))
    assert _reason(exc) == "request is not valid UTF-8"


@given(st.lists(st.tuples(st.text(), st.text()), max_size=5), st.text())
def test_arbitrary_form_fails_only_as_invalid_signature(pairs: list[tuple[str, str]], signature: str) -> None:
    checker = TwilioSignature(TOKEN, public_api_url=API_BASE, public_stream_url=STREAM_URL)
    with pytest.raises(InvalidSignature):
        checker.validate_form(VOICE_PATH, "", pairs, signature)


def test_raw_body_instead_of_params_is_a_programming_error(checker: TwilioSignature) -> None:
    with pytest.raises(TypeError):
        checker.validate_form(VOICE_PATH, "", "From=%2B15550100200", "sig")  # type: ignore[arg-type]


def test_path_must_be_absolute(checker: TwilioSignature) -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        checker.url_for("twilio/voice")


# --- JSON webhooks (bodySHA256) ----------------------------------------------------------------------

JSON_PATH = "/twilio/events"
JSON_BODY = json.dumps({"CallSid": PARAMS["CallSid"], "event": "completed"})


def _json_request(body: str) -> tuple[str, str]:
    query = "bodySHA256=" + hashlib.sha256(body.encode()).hexdigest()
    return query, _sign(f"{API_BASE}{JSON_PATH}?{query}")


def test_json_body_valid(checker: TwilioSignature) -> None:
    query, signature = _json_request(JSON_BODY)
    checker.validate_json(JSON_PATH, query, JSON_BODY, signature)


def test_json_body_tampered(checker: TwilioSignature) -> None:
    query, signature = _json_request(JSON_BODY)
    with pytest.raises(InvalidSignature) as exc:
        checker.validate_json(JSON_PATH, query, JSON_BODY.replace("completed", "failed"), signature)
    assert _reason(exc) == "body hash mismatch"


def test_json_body_hash_replaced_along_with_body(checker: TwilioSignature) -> None:
    _, signature = _json_request(JSON_BODY)
    forged_body = JSON_BODY.replace("completed", "failed")
    forged_query, _ = _json_request(forged_body)
    with pytest.raises(InvalidSignature) as exc:
        checker.validate_json(JSON_PATH, forged_query, forged_body, signature)
    assert _reason(exc) == "signature mismatch"


@pytest.mark.parametrize("query", ["", "bodySHA256=", "other=1"])
def test_json_without_body_hash(checker: TwilioSignature, query: str) -> None:
    signature = _sign(f"{API_BASE}{JSON_PATH}?{query}" if query else f"{API_BASE}{JSON_PATH}")
    with pytest.raises(InvalidSignature, match="no bodySHA256"):
        checker.validate_json(JSON_PATH, query, JSON_BODY, signature)


def test_json_missing_signature(checker: TwilioSignature) -> None:
    query, _ = _json_request(JSON_BODY)
    with pytest.raises(InvalidSignature, match="missing"):
        checker.validate_json(JSON_PATH, query, JSON_BODY, None)


# --- media stream upgrade ----------------------------------------------------------------------------


def test_websocket_signed_over_wss_url(checker: TwilioSignature) -> None:
    assert checker.stream_url == STREAM_URL
    checker.validate_websocket(_sign(STREAM_URL))


def test_websocket_signed_with_explicit_default_port(checker: TwilioSignature) -> None:
    checker.validate_websocket(_sign("wss://media.example.com:443/media"))


def test_websocket_signed_over_https_variant(checker: TwilioSignature) -> None:
    with pytest.raises(InvalidSignature):
        checker.validate_websocket(_sign("https://media.example.com/media"))


def test_websocket_signed_with_params(checker: TwilioSignature) -> None:
    with pytest.raises(InvalidSignature):
        checker.validate_websocket(_sign(STREAM_URL, {"CallSid": PARAMS["CallSid"]}))


def test_websocket_signed_with_another_token(checker: TwilioSignature) -> None:
    with pytest.raises(InvalidSignature):
        checker.validate_websocket(_sign(STREAM_URL, token=OTHER_TOKEN))


@pytest.mark.parametrize(
    "signed_url",
    ["wss://evil.example.com/media", "wss://media.example.com/other", "wss://media.example.com:8443/media"],
)
def test_websocket_signed_for_another_url(checker: TwilioSignature, signed_url: str) -> None:
    with pytest.raises(InvalidSignature, match="signature mismatch"):
        checker.validate_websocket(_sign(signed_url))


def test_websocket_on_a_configured_port() -> None:
    checker = TwilioSignature(TOKEN, public_api_url=API_BASE, public_stream_url="wss://media.example.com:8443/media")
    checker.validate_websocket(_sign("wss://media.example.com:8443/media"))
    # RequestValidator also accepts the URL with its port stripped (Twilio signs either form)...
    checker.validate_websocket(_sign("wss://media.example.com/media"))
    # ...but never another port.
    with pytest.raises(InvalidSignature):
        checker.validate_websocket(_sign("wss://media.example.com:9443/media"))


def test_websocket_missing_signature(checker: TwilioSignature) -> None:
    with pytest.raises(InvalidSignature, match="missing"):
        checker.validate_websocket(None)


# --- configuration and helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "stream", "message"),
    [
        ("http://voice.example.com", STREAM_URL, "public_api_url must be a https:// URL"),
        ("voice.example.com", STREAM_URL, "public_api_url must be a https:// URL"),
        ("https://", STREAM_URL, "public_api_url has no host"),
        ("https://voice.example.com/prod?x=1", STREAM_URL, "query string"),
        ("https://voice.example.com/prod?", STREAM_URL, "query string"),
        ("https://voice.example.com/#frag", STREAM_URL, "fragment"),
        ("https://user:pw@voice.example.com", STREAM_URL, "credentials"),
        ("https://voice.example.com:http", STREAM_URL, "invalid port"),
        (API_BASE, "ws://media.example.com/media", "public_stream_url must be a wss:// URL"),
        (API_BASE, "https://media.example.com/media", "public_stream_url must be a wss:// URL"),
        (API_BASE, "wss://media.example.com/media?token=x", "query string"),
    ],
)
def test_configuration_is_checked(api: str, stream: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TwilioSignature(TOKEN, public_api_url=api, public_stream_url=stream)


def test_empty_token_is_refused() -> None:
    with pytest.raises(ValueError, match="auth_token"):
        TwilioSignature("", public_api_url=API_BASE, public_stream_url=STREAM_URL)


def test_form_params_keeps_blanks_repeats_and_decoding() -> None:
    body = "Digits=&From=%2B15550100200&SpeechResult=hello+there&Tag=a&Tag=b&Caf%C3%A9=" + quote("ü")
    assert form_params(body) == [
        ("Digits", ""),
        ("From", "+15550100200"),
        ("SpeechResult", "hello there"),
        ("Tag", "a"),
        ("Tag", "b"),
        ("Café", "ü"),
    ]


@pytest.mark.parametrize("name", ["X-Twilio-Signature", "x-twilio-signature", "X-TWILIO-SIGNATURE"])
def test_signature_from_headers_ignores_case(name: str) -> None:
    assert signature_from_headers({"Content-Type": "x", name: "sig"}) == "sig"


def test_signature_from_headers_absent() -> None:
    assert signature_from_headers({"Content-Type": "x"}) is None


def test_each_url_is_needed_only_where_it_is_used() -> None:
    webhooks = TwilioSignature(TOKEN, public_api_url=API_BASE)
    assert webhooks.url_for("/twilio/status") == API_BASE + "/twilio/status"
    with pytest.raises(ValueError, match="public_stream_url"):
        webhooks.validate_websocket("sig")
    media = TwilioSignature(TOKEN, public_stream_url=STREAM_URL)
    assert media.stream_url == STREAM_URL
    with pytest.raises(ValueError, match="public_api_url"):
        media.url_for("/twilio/voice")
    with pytest.raises(ValueError, match="or both"):
        TwilioSignature(TOKEN)
