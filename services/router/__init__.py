"""The router: one delivery record per (event, matching enabled webhook), at least once.

``core.route`` is the pure decision (``RoutePolicy.from_settings``); the Kafka shell is
``worker.RouterWorker`` (fetch, route, hand on; rebalances and readiness) wiring ``outbox.Outbox``
(the records out: deliveries in per-partition record batches, invalid events to the invalid topic),
``commits.InFlight`` (batches waiting for their acknowledgements, committed in batch order) and
``gauges.RouterGauges`` (metrics and lag, per committed batch). ``services.run`` builds it for
``akece-webhooks router`` and ``run --role router``.
"""
