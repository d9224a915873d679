#!/bin/sh
# Creates the recommender's topics on the Compose Kafka (the kafka-init service runs it once).
# Names come from recsys_core/keys.py (TOPICS, dead_letter_topic); the stream workers would
# create the same topics if missing (adapters.kafka.ensure_topics), this makes them explicit:
# input topics keyed by user (catalog by movie) with RECSYS_STREAM_PARTITIONS partitions,
# catalog compacted, one-partition dead-letter topics. Topics that exist are left alone.
set -eu

BOOTSTRAP="${BOOTSTRAP_SERVER:-kafka:9092}"
PARTITIONS="${RECSYS_STREAM_PARTITIONS:-8}"
PREFIX="${RECSYS_TOPIC_PREFIX:-}"
REPLICATION="${KAFKA_REPLICATION_FACTOR:-1}"
TOPICS_CMD="${KAFKA_TOPICS_CMD:-/opt/kafka/bin/kafka-topics.sh}"

create() {
  name="$PREFIX$1"
  partitions="$2"
  shift 2
  "$TOPICS_CMD" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor "$REPLICATION" "$@"
}

create ratings.v1 "$PARTITIONS"
create watches.v1 "$PARTITIONS"
create catalog.v1 "$PARTITIONS" --config cleanup.policy=compact
create follows.v1 "$PARTITIONS"
create ratings.v1.dlq 1
create watches.v1.dlq 1
create catalog.v1.dlq 1
create follows.v1.dlq 1

echo "topics on $BOOTSTRAP:"
"$TOPICS_CMD" --bootstrap-server "$BOOTSTRAP" --list
