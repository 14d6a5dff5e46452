"""The re-enqueue engine: dead letters (``akece-webhooks dlq replay``) and a webhook's events
(``akece-webhooks recover``) sent again, once, with a crash-safe record of each run.

- ``engine``: plan, claim, send, confirm (the ``Engine``); ``plans``: its vocabulary (``Source``, ``Send``,
  ``Skip``, ``Options``, ``Plan``, ``Summary``); ``sending``: the send phase (acks before checkpoints).
- ``dlq_source``: the dead-letter source; ``recover``: the events-topic source (re-routed for one webhook).
- ``runs``: the runs and their claims, on a compacted topic; ``ratelimit``: the token bucket;
  ``progress``: the progress line; ``window``: time windows over a topic, read as offset ranges.

The commands and HTTP routes that start runs live in ``services.ops``.
"""
