"""Adapters to Redis and Kafka, shared by the stream workers, the trainer and the API."""
