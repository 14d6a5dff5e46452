package akece.peers;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import org.apache.camel.Exchange;
import org.apache.camel.builder.RouteBuilder;
import org.apache.camel.component.kafka.KafkaConstants;
import org.apache.camel.component.kafka.consumer.KafkaManualCommit;
import org.apache.camel.main.Main;

/**
 * The route an integration team would write: every record of a Kafka topic is POSTed to one
 * webhook URL, as it is, by {@code consumers} consumer threads (one synchronous request at a
 * time each). A non-2xx answer fails the exchange (camel-http's default).
 *
 * <p>{@code --commit auto}: the Kafka client's auto-commit (every 5 s). {@code --commit each}:
 * auto-commit off, the record's offset committed synchronously after its 2xx answer.
 *
 * <p>Arguments: {@code --bootstrap HOST:PORT --topic T --group G --url URL [--consumers 6]
 * [--commit auto|each]}. Headers sent: {@code Content-Type: application/json} and
 * {@code webhook-id}, the record's CloudEvents id ({@code ce_id} header). Stops on SIGTERM.
 */
public final class KafkaToHttp extends RouteBuilder {
    private static final String COMMIT = "peerCommit";

    private final Map<String, String> args;

    private KafkaToHttp(Map<String, String> args) {
        this.args = args;
    }

    @Override
    public void configure() {
        boolean each = "each".equals(args.get("commit"));
        String source = "kafka:" + args.get("topic")
                + "?brokers=" + args.get("bootstrap")
                + "&groupId=" + args.get("group")
                + "&consumersCount=" + args.getOrDefault("consumers", "6")
                + "&autoOffsetReset=earliest"
                + "&valueDeserializer=org.apache.kafka.common.serialization.ByteArrayDeserializer"
                + (each ? "&autoCommitEnable=false&allowManualCommit=true" : "&autoCommitEnable=true");
        from(source)
                .routeId("kafka-to-http")
                .process(KafkaToHttp::prepare)
                .to(args.get("url") + "?httpMethod=POST")
                .process(KafkaToHttp::commit);
    }

    /** Keep the body; replace the Kafka headers by the two HTTP headers the receiver reads. */
    private static void prepare(Exchange exchange) {
        Object id = exchange.getMessage().getHeader("ce_id");
        String deliveryId = id instanceof byte[] bytes ? new String(bytes, StandardCharsets.UTF_8) : String.valueOf(id);
        Object manual = exchange.getMessage().getHeader(KafkaConstants.MANUAL_COMMIT);
        if (manual != null) {
            exchange.setProperty(COMMIT, manual);
        }
        exchange.getMessage().removeHeaders("*");
        exchange.getMessage().setHeader(Exchange.CONTENT_TYPE, "application/json");
        exchange.getMessage().setHeader("webhook-id", deliveryId);
    }

    /** After a 2xx answer: commit this record's offset when manual commits are on. */
    private static void commit(Exchange exchange) {
        KafkaManualCommit manual = exchange.getProperty(COMMIT, KafkaManualCommit.class);
        if (manual != null) {
            manual.commit();
        }
    }

    static Map<String, String> parse(String[] argv) {
        Map<String, String> out = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            if (!argv[i].startsWith("--")) {
                throw new IllegalArgumentException("expected --name value pairs, got " + argv[i]);
            }
            out.put(argv[i].substring(2), argv[i + 1]);
        }
        for (String required : new String[] {"bootstrap", "topic", "group", "url"}) {
            if (!out.containsKey(required)) {
                throw new IllegalArgumentException("missing --" + required);
            }
        }
        String commit = out.getOrDefault("commit", "auto");
        if (!commit.equals("auto") && !commit.equals("each")) {
            throw new IllegalArgumentException("--commit must be auto or each, got " + commit);
        }
        return out;
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> args;
        try {
            args = parse(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("peers-camel: " + e.getMessage());
            System.exit(2);
            return;
        }
        Main main = new Main();
        main.configure().withShutdownTimeout(10);
        main.configure().addRoutesBuilder(new KafkaToHttp(args));
        main.run();
    }
}
