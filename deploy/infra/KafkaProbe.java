// Readiness probe for the harness Kafka broker (compiled once by infra.sh against the
// kafka-clients jar in the cached libs dir). Checks, with a real client: cluster metadata,
// topic creation, and an acks=all produce. Exits 0 when all succeed within the deadline. With
// KAFKA_PROBE_USERNAME and KAFKA_PROBE_PASSWORD in the environment (infra.sh with INFRA_AUTH=1) it
// authenticates with SASL SCRAM-SHA-512.
import java.util.Collections;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.AdminClient;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringSerializer;

public class KafkaProbe {
    public static void main(String[] args) throws Exception {
        String bootstrap = args.length > 0 ? args[0] : "127.0.0.1:19092";
        String topic = "__shopmesh_infra_probe";
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        Exception last = null;
        while (System.nanoTime() < deadline) {
            try {
                run(bootstrap, topic);
                System.out.println("kafka probe ok");
                return;
            } catch (Exception e) {
                last = e;
                Thread.sleep(500);
            }
        }
        System.err.println("kafka probe failed: " + last);
        System.exit(1);
    }

    // auth returns the client properties of the SCRAM credential in the environment (none if unset).
    static Properties auth() {
        Properties p = new Properties();
        String user = System.getenv("KAFKA_PROBE_USERNAME");
        String password = System.getenv("KAFKA_PROBE_PASSWORD");
        if (user != null && !user.isEmpty()) {
            p.put("security.protocol", "SASL_PLAINTEXT");
            p.put("sasl.mechanism", "SCRAM-SHA-512");
            p.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required username=\""
                    + user + "\" password=\"" + password + "\";");
        }
        return p;
    }

    static void run(String bootstrap, String topic) throws Exception {
        Properties ap = auth();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ap.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 5000);
        ap.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 10000);
        try (AdminClient admin = AdminClient.create(ap)) {
            int nodes = admin.describeCluster().nodes().get(10, TimeUnit.SECONDS).size();
            if (nodes < 1) throw new IllegalStateException("no brokers in metadata");
            try {
                admin.createTopics(Collections.singleton(new NewTopic(topic, 1, (short) 1)))
                        .all().get(10, TimeUnit.SECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof TopicExistsException)) throw e;
            }
        }
        Properties pp = auth();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 10000);
        pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 10000);
        pp.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 5000);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            p.send(new ProducerRecord<>(topic, "probe", "ok")).get(10, TimeUnit.SECONDS);
        }
    }
}
