"""Development tools, not part of the pipeline: the local Apache Kafka broker behind ``make kafka``.

- ``kafka_local``: ``akece-webhooks kafka start|stop|status|reset`` (a KRaft broker from the Apache
  release, in a data dir of its own); ``kafka_local_secure``: its SASL/TLS listeners.
- ``kafka_local_cluster``: ``kafka start --nodes 3``, N such nodes forming one quorum (fault tests).
- ``cli``: registers those commands.
"""
