"""``akece-webhooks demo`` (what ``make run`` starts): the whole pipeline, a receiver, demo webhooks."""

from services.demo.cli import register

__all__ = ["register"]
