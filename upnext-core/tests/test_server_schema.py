"""Schemathesis against the OpenAPI schema (memory://): no request makes a server error.

Also checks responses against the documented schemas, status codes and content
types. Bounded: a few examples per operation, no shrinking, well under a minute.
One check is left out: "schema-valid data is accepted" cannot hold for the
opaque `cursor`, a string only the backend that made it can read (a foreign
one is 422).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from upnext.testing import needs_modules

needs_modules("fastapi", "schemathesis")

import schemathesis  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402
from upnext.server import create_app  # noqa: E402

pytest.importorskip("schemathesis")


# Schemathesis calls the app as Starlette's test client does, with Host "testserver".
APP = create_app(f"memory://schema-{uuid.uuid4().hex}", queues=["q"], allowed_hosts=["testserver"])
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_error(case: schemathesis.Case[Any]) -> None:
    """Every generated request, valid or not, gets a documented, non-5xx answer."""
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
