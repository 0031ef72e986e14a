"""Getting transactions in: validation, file readers, Kafka helpers, the bank simulator."""
