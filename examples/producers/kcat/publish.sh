#!/usr/bin/env bash
# Publish one Akece event with kcat (CloudEvents 1.0, Kafka protocol binding, binary mode).
# Usage: ./publish.sh [EVENT_FILE]
# Env: KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), AKECE_EVENTS_TOPIC (default akece.events).
set -euo pipefail
file=${1:-"$(dirname "$0")/../message_created.json"}
event_id=$(cat /proc/sys/kernel/random/uuid)   # or: uuidgen
account=1          # must equal the body's account.id, or the event is quarantined
conversation=1234  # the body's conversation.display_id

# A file argument (without -l) is sent whole, as one message; stdin would be split on newlines.
# partitioner=murmur2_random: the partition Java's client (and every other producer here) picks for a key;
# librdkafka's default (CRC32) would put the same conversation on another partition than theirs.
kcat -P -b "${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}" -t "${AKECE_EVENTS_TOPIC:-akece.events}" \
  -X acks=all -X partitioner=murmur2_random -k "$account:$conversation" \
  -H ce_specversion=1.0 \
  -H "ce_id=$event_id" \
  -H ce_source=akece://examples/kcat \
  -H ce_type=message_created \
  -H "ce_time=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" \
  -H "ce_accountid=$account" \
  -H content-type=application/json \
  "$file"
echo "published $event_id"
