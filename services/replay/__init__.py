"""The re-enqueue engine: dead letters (``akece-webhooks dlq replay``) and a webhook's events
(``akece-webhooks recover``) sent again, once, with a crash-safe record of each run.

- ``engine``: the ``Engine`` running one run: ``planner.Planner`` plans it, ``claims.Claimant`` claims it,
  ``sending.RunSender`` sends it (acks before checkpoints); ``plans``: their vocabulary (``Source``,
  ``Send``, ``Skip``, ``Options``, ``Plan``, ``Summary``).
- ``dlq_source``: the dead-letter source; ``recover``: the events-topic source (re-routed for one webhook).
- ``runs``: the runs and their claims, on a compacted topic (``RunBook``: all of them, loaded);
  ``ratelimit``: the token bucket; ``progress``: the progress line; ``window``: time windows over a
  topic, read as offset ranges.

The commands and HTTP routes that start runs live in ``services.ops``.
"""
