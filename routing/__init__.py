"""Routers: turn prompts into strong-win probabilities. No Celery, no database here."""

from routing.base import Router
from routing.registry import available, get_router, register
from routing.thresholds import route_strong, threshold_for_strong_share

__all__ = ["Router", "available", "get_router", "register", "route_strong", "threshold_for_strong_share"]
