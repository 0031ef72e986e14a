"""Development and demo tools, not part of the production services.

The local Kafka-compatible broker (Tansu, for development and CI only), the
demo of the whole loop, and the end-to-end scoring benchmark. Production runs
Apache Kafka and the services in ``scoring``, ``ingest`` and ``training``.
"""
