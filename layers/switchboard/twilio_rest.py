"""Twilio's REST API as the deployables reach it: credentials from Secrets Manager, one client per process.

The credentials are one secret, JSON {"account_sid": "AC…", "auth_token": "…"}, read through Powertools
Parameters so that a warm Lambda or the container does not call Secrets Manager on every request, and a
rotated token is picked up within `max_age`.
"""

from functools import cache

from aws_lambda_powertools.utilities import parameters
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

SECRET_MAX_AGE_S = 300
# Twilio answers in well under a second; a hung connection must not eat a webhook's 15 s budget.
REST_TIMEOUT_S = 5.0


class TwilioCredentials(BaseModel):
    model_config = ConfigDict(frozen=True)

    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr = Field(min_length=1)


def load_twilio_credentials(secret_arn: str) -> TwilioCredentials:
    """The Twilio credentials from their secret (cached by Powertools for SECRET_MAX_AGE_S)."""
    raw = parameters.get_secret(secret_arn, transform="json", max_age=SECRET_MAX_AGE_S)
    return TwilioCredentials.model_validate(raw)


@cache
def twilio_client(account_sid: str, auth_token: str, api_base_url: str | None = None) -> Client:
    """A Twilio REST client; `api_base_url` points it at a Twilio-compatible server (a local test double).

    Cached per credentials so the HTTP connection pool is reused across warm invocations.
    """
    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=REST_TIMEOUT_S))
    if api_base_url is not None:
        client.api.base_url = api_base_url.rstrip("/")
    return client


def client_for(credentials: TwilioCredentials, api_base_url: str | None = None) -> Client:
    return twilio_client(credentials.account_sid, credentials.auth_token.get_secret_value(), api_base_url)
