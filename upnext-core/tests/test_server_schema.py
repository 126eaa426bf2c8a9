"""Schemathesis against the OpenAPI schema (memory://): no request makes a server error.

Also checks responses against the documented schemas, status codes and content
types. Bounded: a few examples per operation, no shrinking, well under a minute.
One check is left out: "schema-valid data is accepted" cannot hold for the
opaque `cursor`, a string only the backend that made it can read (a foreign
one is 422).
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from typing import Any

import pytest


def _needs(*modules: str) -> None:
    """Skip the module without `modules`; under CI / UPNEXT_REQUIRE_SERVICES, fail instead."""
    for name in modules:
        if importlib.util.find_spec(name.partition(".")[0]) is None:
            message = (
                f"{name} is not installed: pip install 'upnext-core[server]' and the test tools"
            )
            if os.environ.get("CI") or os.environ.get("UPNEXT_REQUIRE_SERVICES"):
                pytest.fail(message, pytrace=False)
            pytest.skip(message, allow_module_level=True)


_needs("fastapi", "schemathesis")

import schemathesis  # noqa: E402
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402
from upnext.server import create_app  # noqa: E402

pytest.importorskip("schemathesis")


APP = create_app(f"memory://schema-{uuid.uuid4().hex}", queues=["q"])
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
