"""The router: one delivery record per (event, matching enabled webhook), at least once.

``core.route`` is the pure decision; ``worker.RouterWorker`` the Kafka shell; ``cli`` the
``akece-webhooks router`` command.
"""
