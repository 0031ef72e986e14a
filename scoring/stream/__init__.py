"""The streaming scorer: Kafka -> behavioural state -> model -> alerts database."""
