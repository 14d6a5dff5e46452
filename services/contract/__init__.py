"""The contract between the stages: what travels on Kafka, written and read only through here.

- ``topics``: every topic's name and configuration (``Topics``, ``topic_specs``, ``format_delay``).
- ``headers``: every record header name and the helpers that read and replace them.
- ``deliveries``: the delivery record (``DeliveryMeta``, ``first_attempt_headers``, ids and keys).
- ``attempts``: the attempt record of the attempt log (``AttemptRecord``, ``decode``).
- ``dead_letters``: the dead-letter record read back (``DeadLetter``).
- ``times``: how those records write and read times (ISO-8601 UTC, Unix seconds).

It imports no other package of ours (not even for types: ``topics.TopicSettings`` says what it reads of
the settings): every stage and ``services.shared`` may import it.
"""
