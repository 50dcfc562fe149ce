"""Anthropic's Messages API: request and response shapes (``protocol``), the generation behind
a request (``serving``) and the routes (``routes``)."""

from .routes import router

__all__ = ["router"]
