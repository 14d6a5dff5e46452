"""Akece Webhooks: the webhook delivery pipeline on Apache Kafka."""

__version__ = "0.1.0"
