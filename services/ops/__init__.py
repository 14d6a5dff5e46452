"""Operations: reading what the pipeline did, and the commands and routes that act on it.

- ``dlq``: listing the dead-letter topic by time window (records: ``services.contract.dead_letters``).
- ``attempts``: a delivery's attempts, and the recent ones, from the attempt log.
- ``circuits``: which webhooks' circuits are open, read from the attempt log.
- ``status``: the on-call screen (lag, retry tiers, DLQ, disabled webhooks, open circuits, runs).
- ``render``: tables and texts of the above, and of replay plans.
- ``api``: the HTTP routes for dead letters, attempts, replay and recover (mounted by the API);
  ``api_requests``: what they read from a request and how they refuse one; ``api_runs``: starting runs.
- ``cli``: ``akece-webhooks dlq list|show|replay``, ``recover``, ``status``.

It reads through ``services.replay.window`` and starts runs of the engine (``services.replay``);
the engine imports nothing from here.
"""
