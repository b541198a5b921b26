"""Checks webhook payloads against GitHub's published schemas: the `x-webhooks` section of
@octokit/openapi's description (OpenAPI 3.0, so `nullable` is honoured).

Usage: validate_webhooks.py DESCRIPTION WEBHOOK=FILE...   (WEBHOOK: ping,
workflow-job-queued, ...). Prints each violation with its path; exits 1 if there is any.
"""

import json
import sys

from openapi_schema_validator import OAS30Validator


def main(description, pairs):
    with open(description) as f:
        hooks = json.load(f)["x-webhooks"]
    errors = 0
    for pair in pairs:
        name, _, path = pair.partition("=")
        if name not in hooks:
            print(f"{name}: no such webhook in {description}")
            errors += 1
            continue
        schema = hooks[name]["post"]["requestBody"]["content"]["application/json"]["schema"]
        with open(path) as f:
            payload = json.load(f)
        for e in OAS30Validator(schema).iter_errors(payload):
            where = "/".join(str(p) for p in e.absolute_path) or "(top)"
            print(f"{name} ({path}): {where}: {e.message}")
            errors += 1
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
