"""Development tools, not part of the pipeline: the local Apache Kafka broker behind ``make kafka``.

- ``kafka_local``: ``LocalKafka``, one KRaft broker from the Apache release, in a data dir of its own
  (``broker_dir.BrokerDir``: the files in it); ``kafka_local_secure``: its SASL/TLS listeners.
- ``kafka_local_cluster``: ``LocalCluster`` (``kafka start --nodes 3``), N such nodes forming one quorum.
- ``jars``: Java and the Kafka jars; ``ports``: the ports a start picks; ``processes``: the broker's
  process and the data dir's lock; ``readiness``: the probes a start waits on; ``kafka_errors``.
- ``kafka_commands``: ``akece-webhooks kafka start|stop|status|reset``; ``cli`` registers them.
"""
