// Publish one Akece event with Apache Kafka's Java client (CloudEvents 1.0, Kafka binding, binary mode).
// Usage: java -cp "$(cat classpath.txt)" PublishMessageCreated.java [EVENT_FILE]
// Env: KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), AKECE_EVENTS_TOPIC (default akece.events).
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.Properties;
import java.util.UUID;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class PublishMessageCreated {
    public static void main(String[] args) throws Exception {
        String file = args.length > 0 ? args[0] : "../message_created.json";
        byte[] body = Files.readAllBytes(Path.of(file));  // sent byte for byte: receivers get exactly this
        String bootstrap = System.getenv().getOrDefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092");
        String topic = System.getenv().getOrDefault("AKECE_EVENTS_TOPIC", "akece.events");

        String eventId = UUID.randomUUID().toString();
        String accountId = "1";        // must equal the body's account.id, or the event is quarantined
        String conversation = "1234";  // the body's conversation.display_id
        ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(
                topic, (accountId + ":" + conversation).getBytes(StandardCharsets.UTF_8), body);
        header(record, "ce_specversion", "1.0");
        header(record, "ce_id", eventId);
        header(record, "ce_source", "akece://examples/java");
        header(record, "ce_type", "message_created");
        header(record, "ce_time", Instant.now().truncatedTo(ChronoUnit.MILLIS).toString());
        header(record, "ce_accountid", accountId);
        header(record, "content-type", "application/json");

        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
            var meta = producer.send(record).get();
            System.out.printf("published %s partition=%d offset=%d%n", eventId, meta.partition(), meta.offset());
        }
    }

    private static void header(ProducerRecord<byte[], byte[]> record, String name, String value) {
        record.headers().add(name, value.getBytes(StandardCharsets.UTF_8));
    }
}
