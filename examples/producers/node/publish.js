// Publish one Akece event with kafkajs (CloudEvents 1.0, Kafka protocol binding, binary mode).
// Usage: node publish.js [EVENT_FILE]
// Env: KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), AKECE_EVENTS_TOPIC (default akece.events).
const { Kafka, logLevel } = require("kafkajs");
const { randomUUID } = require("node:crypto");
const { readFileSync } = require("node:fs");

async function main() {
  const body = readFileSync(process.argv[2] || "../message_created.json"); // a Buffer, sent byte for byte
  const brokers = (process.env.KAFKA_BOOTSTRAP_SERVERS || "127.0.0.1:9092").split(",");
  const topic = process.env.AKECE_EVENTS_TOPIC || "akece.events";

  const eventId = randomUUID();
  const accountId = "1"; // must equal the body's account.id, or the event is quarantined
  const conversation = "1234"; // the body's conversation.display_id
  const kafka = new Kafka({ clientId: "akece-example", brokers, logLevel: logLevel.ERROR });
  const producer = kafka.producer({ idempotent: true });
  await producer.connect();
  try {
    const [result] = await producer.send({
      topic,
      acks: -1,
      messages: [{
        key: `${accountId}:${conversation}`,
        value: body,
        headers: {
          ce_specversion: "1.0",
          ce_id: eventId,
          ce_source: "akece://examples/node",
          ce_type: "message_created",
          ce_time: new Date().toISOString(),
          ce_accountid: accountId,
          "content-type": "application/json",
        },
      }],
    });
    console.log(`published ${eventId} partition=${result.partition} offset=${result.baseOffset}`);
  } finally {
    await producer.disconnect();
  }
}

main().catch((err) => {
  console.error(`publish failed: ${err.message}`);
  process.exit(1);
});
