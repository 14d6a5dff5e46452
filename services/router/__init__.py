"""The router: one delivery record per (event, matching enabled webhook), at least once.

``core.route`` is the pure decision (``RoutePolicy.from_settings``); ``worker.RouterWorker`` the
Kafka shell. ``services.run`` builds it for ``akece-webhooks router`` and ``run --role router``.
"""
