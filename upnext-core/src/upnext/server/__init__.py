"""The upnext server: REST API, OpenAPI schema and dashboard (needs ``upnext-core[server]``).

    from upnext.server import create_app
    app = create_app("redis://localhost:6379/0")   # serve with any ASGI server

`upnext server` runs it under uvicorn.
"""

from upnext.server._app import ENV_TOKEN, MAX_BODY, check_bind, create_app

__all__ = ["ENV_TOKEN", "MAX_BODY", "check_bind", "create_app"]
