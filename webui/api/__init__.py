"""The integration API (/api/v1/): see webui/api/core.py for who may call
and how errors look, webui/api/routes.py for the operations,
webui/api/openapi.py for their description (served as /api/v1/openapi.json)."""

from webui.api.routes import bp

__all__ = ["bp"]
