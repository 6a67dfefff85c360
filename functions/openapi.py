"""The API's OpenAPI document, generated from the functions' own routes and models.

Each Lambda has its own Powertools resolver; API Gateway puts them behind one API, so the document
merges their paths and schemas. `python -m functions.openapi` rewrites docs/openapi.json; a test fails
when the checked-in document no longer matches the code.
"""

import importlib
import json
import sys
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

HANDLERS = (
    "functions.voice_webhook.handler",
    "functions.status_callback.handler",
    "functions.tool_actions.handler",
    "functions.dialer.handler",
)
SPEC_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
TITLE = "Switchboard API"
DESCRIPTION = (
    "Twilio webhooks (public, each request's X-Twilio-Signature checked in code) and the IAM-authorized "
    "API for tool actions, outbound calls and schedules."
)


class SpecConflict(RuntimeError):
    """Two functions define the same path and method, or one schema name two ways."""


def build_spec() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for module_name in HANDLERS:
        app: APIGatewayRestResolver = importlib.import_module(module_name).app
        spec = json.loads(app.get_openapi_json_schema(title=TITLE, version="1"))
        for path, operations in spec.get("paths", {}).items():
            merged = paths.setdefault(path, {})
            for method, operation in operations.items():
                if method in merged:
                    raise SpecConflict(f"{method.upper()} {path} is defined by two functions")
                merged[method] = operation
        for name, schema in spec.get("components", {}).get("schemas", {}).items():
            if name in schemas and schemas[name] != schema:
                raise SpecConflict(f"schema {name} is defined differently by two functions")
            schemas[name] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": "1", "description": DESCRIPTION},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=True) + "\n"


def main() -> int:
    SPEC_PATH.write_text(render(build_spec()))
    print(f"wrote {SPEC_PATH.relative_to(Path.cwd()) if SPEC_PATH.is_relative_to(Path.cwd()) else SPEC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
