"""The management API stage: Chatwoot-compatible webhook CRUD over the compacted subscriptions topic.

- ``app``: ``create_app(settings, table, store, metrics)`` and the ``ApiWorker`` (name ``api``).
- ``routes``: the route table and thin handlers; ``openapi`` builds the checked-in ``openapi.json``.
- ``service``: create/update/delete/rotate shared by the API and the CLI; ``webhook_view`` (masking).
- ``validation``: Chatwoot's 422 messages as pure functions (tokens: ``services.shared.auth``).
- ``cli``: ``akece-webhooks webhooks list|create|update|delete|rotate-secret``; ``webhook_tools``: ``get``, ``test``.

It mounts the operations routes (``services.ops.api``) and the console; ``services.run`` builds the
``ApiWorker`` for ``akece-webhooks api`` and ``run --role api``.
"""
