"""The upnext server: REST API, OpenAPI schema and dashboard (needs ``upnext-core[server]``).

    from upnext.server import create_app
    app = create_app("redis://localhost:6379/0")   # serve with any ASGI server

`upnext server` runs it under uvicorn.
"""

from upnext.server._app import ENV_TOKEN, MAX_BODY, check_bind, create_app
from upnext.server._hosts import ENV_ALLOWED_HOSTS

__all__ = ["ENV_ALLOWED_HOSTS", "ENV_TOKEN", "MAX_BODY", "check_bind", "create_app"]
