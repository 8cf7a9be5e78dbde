"""ibkr-workers: the Kafka-to-Interactive-Brokers execution bridge."""

__version__ = "0.1.0"
