# Publish one Akece event with rdkafka-ruby (CloudEvents 1.0, Kafka protocol binding, binary mode).
# UNTESTED: documentation only. The test suite cannot install Ruby gems on its machines, so unlike
# the other producer examples this one is not run against a broker; it mirrors them line for line.
# Usage: gem install rdkafka && ruby publish.rb [EVENT_FILE]
# Env: KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), AKECE_EVENTS_TOPIC (default akece.events).
require "rdkafka"
require "securerandom"
require "time"

body = File.binread(ARGV[0] || File.join(__dir__, "..", "message_created.json")) # sent byte for byte
event_id = SecureRandom.uuid
account_id = "1"      # must equal the body's account.id, or the event is quarantined
conversation = "1234" # the body's conversation.display_id

producer = Rdkafka::Config.new(
  "bootstrap.servers" => ENV.fetch("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
  "acks" => "all",
  "enable.idempotence" => true,
  "partitioner" => "murmur2_random" # the partition Java's client picks for a key (librdkafka's default differs)
).producer
report = producer.produce(
  topic: ENV.fetch("AKECE_EVENTS_TOPIC", "akece.events"),
  key: "#{account_id}:#{conversation}",
  payload: body,
  headers: {
    "ce_specversion" => "1.0",
    "ce_id" => event_id,
    "ce_source" => "akece://examples/ruby",
    "ce_type" => "message_created",
    "ce_time" => Time.now.utc.iso8601(3),
    "ce_accountid" => account_id,
    "content-type" => "application/json"
  }
).wait(max_wait_timeout: 30)
producer.close
puts "published #{event_id} partition=#{report.partition} offset=#{report.offset}"
