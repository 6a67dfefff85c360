"""The secrets the platform reads at run time (through Powertools Parameters), created by the stack.

The stack never holds a value a person chose. Twilio's credentials are generated unusable and the OpenAI
key's secret is generated as a marker of "no key yet"; both are set with `aws secretsmanager
put-secret-value` after the deploy (docs/deploy.md). The stream-token key is generated and never needs to be
seen by anyone. Every value is generated, none is written in the template: CloudFormation generates a value
when it creates the secret and again only when the generator's settings change, so a later deploy leaves
the value a person put there in place.

The Twilio secret is generated in the shape the code validates (an account SID Twilio never issues, all
zeros, and a random auth token): the media service reads it at start and refuses to start on anything
else, which on the first deploy would fail the service's health and roll the whole stack back. With it,
the stack deploys and every Twilio request is refused (its signature cannot match a random token) until
the real credentials are set.

The OpenAI secret is generated as a JSON object with an "unset" key (and a random "placeholder"), not as a
bare random string: the service reads a value with an "unset" key as "no key yet" and runs agents on OpenAI
through their scripted flow (saying so at start), where a random string would be sent to OpenAI as a key and
every turn would fail.
"""

import json

from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

# Matches twilio_rest's account SID pattern; Twilio issues no account with this SID.
UNSET_ACCOUNT_SID = "AC" + "0" * 32
# What the OpenAI secret holds until a key is set: the "unset" key is what the service looks for
# (streaming/__main__.py); the sentence is for whoever opens the secret in the console.
UNSET_OPENAI_KEY = {"unset": "replace this whole secret with the OpenAI key"}


class PlatformSecrets(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.twilio = secretsmanager.Secret(
            self,
            "Twilio",
            description='Twilio credentials, JSON {"account_sid": "AC...", "auth_token": "..."}: set after deploy.',
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"account_sid": UNSET_ACCOUNT_SID}),
                generate_string_key="auth_token",
                exclude_punctuation=True,
                password_length=32,
            ),
        )
        self.stream_token = secretsmanager.Secret(
            self,
            "StreamToken",
            description="HMAC key of the per-call media stream tokens (generated; shared by webhook and service).",
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=64),
        )
        self.openai = secretsmanager.Secret(
            self,
            "OpenAI",
            description="OpenAI API key (plain string) for OpenAI agents: a JSON marker until one is set after deploy.",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps(UNSET_OPENAI_KEY), generate_string_key="placeholder"
            ),
        )
