package sluice;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The Java Kafka client (kafka-clients, unchanged) against Sluice's Kafka listener. Each
 * sub-command runs one flow and prints one JSON object on stdout; tests/kafka_java.rs
 * checks it against what Sluice's own CLI reports. The client logs to stderr.
 */
public final class KafkaJava {
    private KafkaJava() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: KafkaJava COMMAND BOOTSTRAP ARGS...");
            System.exit(2);
        }
        String boot = args[1];
        Map<String, Object> out;
        switch (args[0]) {
            case "produce" -> out = produce(boot, args[2], Integer.parseInt(args[3]),
                    Long.parseLong(args[4]));
            case "consume" -> out = consume(boot, args[2], args[3], Integer.parseInt(args[4]),
                    Long.parseLong(args[5]), args.length > 6 ? args[6] : "consumer");
            case "produce-until" -> out = produceUntil(boot, args[2], Path.of(args[3]),
                    Long.parseLong(args[4]));
            case "group-share" -> out = groupShare(boot, args[2], args[3], Integer.parseInt(args[4]),
                    Long.parseLong(args[5]));
            case "produce-codecs" -> out = produceCodecs(boot, args[2], Integer.parseInt(args[3]));
            case "read" -> out = read(boot, args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]),
                    Long.parseLong(args[5]));
            case "consume-until" -> out = consumeUntil(boot, args[2], Path.of(args[3]),
                    Long.parseLong(args[4]));
            case "admin-topics" -> out = adminTopics(boot, args[2], args[3]);
            case "admin-offsets" -> out = adminOffsets(boot, args[2], Long.parseLong(args[3]));
            case "admin-groups" -> out = adminGroups(boot, args[2], args[3]);
            case "admin-delete" -> out = adminDelete(boot, args[2]);
            default -> {
                System.err.println("unknown command " + args[0]);
                System.exit(2);
                return;
            }
        }
        System.out.println(Json.write(out));
        System.out.flush();
        // Client threads (a closed producer's sender, metrics) must not hold the JVM.
        System.exit(0);
    }

    static Properties producerProps(String boot) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        return p;
    }

    /**
     * An idempotent producer (acks=all) writes records "k{i}" -> "v{i}" with headers seq=i
     * and src=java and timestamp `ts0` + i, partitioned by key; reports where each landed.
     */
    static Map<String, Object> produce(String boot, String topic, int n, long ts0) throws Exception {
        Properties p = producerProps(boot);
        List<Object> records = new ArrayList<>();
        List<String> errors = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            List<java.util.concurrent.Future<org.apache.kafka.clients.producer.RecordMetadata>> sent =
                    new ArrayList<>();
            for (int i = 0; i < n; i++) {
                List<Header> headers = List.of(
                        new RecordHeader("seq", Integer.toString(i).getBytes(StandardCharsets.UTF_8)),
                        new RecordHeader("src", "java".getBytes(StandardCharsets.UTF_8)));
                sent.add(producer.send(new ProducerRecord<>(topic, null, ts0 + i, "k" + i, "v" + i, headers)));
            }
            producer.flush();
            for (int i = 0; i < n; i++) {
                try {
                    var md = sent.get(i).get(60, TimeUnit.SECONDS);
                    records.add(List.of(i, md.partition(), md.offset()));
                } catch (ExecutionException e) {
                    errors.add("v" + i + ": " + e.getCause());
                }
            }
        }
        Map<String, Object> out = new TreeMap<>();
        out.put("acked", records.size());
        out.put("records", records);
        out.put("errors", errors);
        return out;
    }

    /**
     * A member of `group` (group.protocol `protocol`: consumer, KIP-848, or classic)
     * reads `n` records (or until the deadline), commits synchronously and leaves. Each
     * record as [partition, offset, key, value, header seq, header src, timestamp].
     */
    static Map<String, Object> consume(String boot, String topic, String group, int n, long limitMs,
            String protocol) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<Object> records = new ArrayList<>();
        Set<Integer> assigned = new TreeSet<>();
        Map<String, Object> committed = new TreeMap<>();
        long deadline = System.currentTimeMillis() + limitMs;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p)) {
            consumer.subscribe(List.of(topic));
            while (records.size() < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    Header seq = r.headers().lastHeader("seq");
                    Header src = r.headers().lastHeader("src");
                    records.add(List.of(r.partition(), r.offset(), String.valueOf(r.key()),
                            String.valueOf(r.value()),
                            seq == null ? "" : new String(seq.value(), StandardCharsets.UTF_8),
                            src == null ? "" : new String(src.value(), StandardCharsets.UTF_8),
                            r.timestamp()));
                }
                for (TopicPartition tp : consumer.assignment()) {
                    assigned.add(tp.partition());
                }
            }
            consumer.commitSync(Duration.ofSeconds(15));
            Map<TopicPartition, OffsetAndMetadata> c =
                    consumer.committed(consumer.assignment(), Duration.ofSeconds(15));
            for (var e : c.entrySet()) {
                if (e.getValue() != null) {
                    committed.put(Integer.toString(e.getKey().partition()), e.getValue().offset());
                }
            }
        }
        Map<String, Object> out = new TreeMap<>();
        out.put("records", records);
        out.put("assigned", new ArrayList<>(assigned));
        out.put("committed", committed);
        return out;
    }

    /**
     * An idempotent producer (acks=all, retries on) writes "s{i}" to partition 0 until
     * `stop` exists (or `limitMs` passes), then reports every acknowledged (i, offset) and
     * every record that failed.
     */
    static Map<String, Object> produceUntil(String boot, String topic, Path stop, long limitMs)
            throws Exception {
        Properties p = producerProps(boot);
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        p.put(ProducerConfig.RETRY_BACKOFF_MS_CONFIG, "50");
        p.put(ProducerConfig.RECONNECT_BACKOFF_MS_CONFIG, "50");
        p.put(ProducerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        p.put(ProducerConfig.METADATA_MAX_AGE_CONFIG, "1000");
        ConcurrentLinkedQueue<List<Object>> acked = new ConcurrentLinkedQueue<>();
        ConcurrentLinkedQueue<String> failed = new ConcurrentLinkedQueue<>();
        AtomicLong unsettled = new AtomicLong();
        long deadline = System.currentTimeMillis() + limitMs;
        long sent = 0;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            while (!Files.exists(stop) && System.currentTimeMillis() < deadline) {
                // A bounded window (requests always in flight, so some are at the kill);
                // the test's timeline is in records, not buffered bytes.
                if (unsettled.get() >= 500) {
                    Thread.sleep(1);
                    continue;
                }
                final long i = sent++;
                unsettled.incrementAndGet();
                producer.send(new ProducerRecord<>(topic, 0, null, "s" + i), (md, e) -> {
                    if (e == null) {
                        acked.add(List.of(i, md.offset()));
                    } else {
                        failed.add("s" + i + ": " + e);
                    }
                    unsettled.decrementAndGet();
                });
            }
            producer.flush();
        }
        Map<String, Object> out = new TreeMap<>();
        out.put("sent", sent);
        out.put("acked", new ArrayList<>(acked));
        out.put("failed", new ArrayList<>(failed));
        return out;
    }

    /**
     * For each codec (none, gzip, snappy, lz4, zstd) an idempotent producer with that
     * `compression.type` writes `n` records "{codec}-k{i}" -> "{codec}-v{i}"; reports how
     * many each had acknowledged and every error.
     */
    static Map<String, Object> produceCodecs(String boot, String topic, int n) throws Exception {
        Map<String, Object> acked = new TreeMap<>();
        List<String> errors = new ArrayList<>();
        for (String codec : List.of("none", "gzip", "snappy", "lz4", "zstd")) {
            Properties p = producerProps(boot);
            p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
            int ok = 0;
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
                List<java.util.concurrent.Future<org.apache.kafka.clients.producer.RecordMetadata>> sent =
                        new ArrayList<>();
                for (int i = 0; i < n; i++) {
                    sent.add(producer.send(new ProducerRecord<>(topic, codec + "-k" + i, codec + "-v" + i)));
                }
                for (var f : sent) {
                    try {
                        f.get(60, TimeUnit.SECONDS);
                        ok++;
                    } catch (ExecutionException e) {
                        errors.add(codec + ": " + e.getCause());
                    }
                }
            }
            acked.put(codec, ok);
        }
        Map<String, Object> out = new TreeMap<>();
        out.put("acked", acked);
        out.put("errors", errors);
        return out;
    }

    /**
     * Partitions 0..partitions-1 of `topic` by assignment (no group) from their start,
     * until `n` records (or `limitMs`): each as [partition, offset, key, value, headers
     * as name=value joined by ',', timestamp].
     */
    static Map<String, Object> read(String boot, String topic, int partitions, int n, long limitMs) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<Object> records = new ArrayList<>();
        long deadline = System.currentTimeMillis() + limitMs;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < partitions; i++) {
                tps.add(new TopicPartition(topic, i));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            while (records.size() < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    List<String> headers = new ArrayList<>();
                    for (Header h : r.headers()) {
                        headers.add(h.key() + "=" + (h.value() == null ? "" : new String(h.value(), StandardCharsets.UTF_8)));
                    }
                    records.add(List.of(r.partition(), r.offset(), String.valueOf(r.key()),
                            String.valueOf(r.value()), String.join(",", headers), r.timestamp()));
                }
            }
        }
        Map<String, Object> out = new TreeMap<>();
        out.put("records", records);
        return out;
    }

    static KafkaConsumer<String, String> member(String boot, String group) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "5");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return new KafkaConsumer<>(p);
    }

    /** Commits refused for a stale member epoch and then retried (see pollAndCommit). */
    static int staleCommits = 0;

    /**
     * One poll of `c`, its records counted in `seen` ("partition-offset" -> times), then a
     * commit. A commit sent while the heartbeat that moves the member to its next epoch is
     * answered carries the old epoch; Sluice refuses it (STALE_MEMBER_EPOCH, which the
     * client throws as CommitFailedException) where Kafka 4.3+ accepts it for partitions
     * the member still holds (KIP-1251). Retried once the client has the new epoch, as an
     * application must against Sluice.
     */
    static void pollAndCommit(KafkaConsumer<String, String> c, Map<String, Integer> seen)
            throws InterruptedException {
        for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(50))) {
            seen.merge(r.partition() + "-" + r.offset(), 1, Integer::sum);
        }
        for (int attempt = 0;; attempt++) {
            try {
                c.commitSync(Duration.ofSeconds(10));
                return;
            } catch (org.apache.kafka.clients.consumer.CommitFailedException e) {
                if (attempt >= 50 || !String.valueOf(e.getMessage()).contains("stale member epoch")) {
                    throw e;
                }
                staleCommits++;
                Thread.sleep(20);
            }
        }
    }

    static List<Integer> partitionsOf(KafkaConsumer<String, String> c) {
        return c.assignment().stream().map(TopicPartition::partition).sorted().toList();
    }

    /**
     * Two KIP-848 members of `group` (5 records a poll, committing after each): A starts
     * alone, B joins once A has read some; both poll until they share the partitions,
     * which the AdminClient then describes; they read until `n` records were seen; A
     * leaves and B polls until it holds every partition. Reports each record's count.
     */
    static Map<String, Object> groupShare(String boot, String topic, String group, int n, long limitMs)
            throws Exception {
        Map<String, Object> out = new TreeMap<>();
        Map<String, Integer> seen = new TreeMap<>();
        long t0 = System.currentTimeMillis();
        long deadline = t0 + limitMs;
        try (KafkaConsumer<String, String> a = member(boot, group); Admin admin = admin(boot)) {
            a.subscribe(List.of(topic));
            while (!(a.assignment().size() > 0 && seen.size() >= 20) && System.currentTimeMillis() < deadline) {
                pollAndCommit(a, seen);
            }
            out.put("a_alone", partitionsOf(a));
            try (KafkaConsumer<String, String> b = member(boot, group)) {
                b.subscribe(List.of(topic));
                long joined = System.currentTimeMillis();
                while (System.currentTimeMillis() < deadline) {
                    pollAndCommit(a, seen);
                    pollAndCommit(b, seen);
                    if (!a.assignment().isEmpty() && !b.assignment().isEmpty()
                            && a.assignment().size() + b.assignment().size() == 4) {
                        break;
                    }
                }
                out.put("shared_ms", System.currentTimeMillis() - joined);
                out.put("split", List.of(partitionsOf(a), partitionsOf(b)));
                out.put("described", attempt(admin.describeConsumerGroups(List.of(group)).all(), m -> {
                    ConsumerGroupDescription d = m.get(group);
                    Map<String, Object> g = new TreeMap<>();
                    g.put("state", String.valueOf(d.groupState()));
                    g.put("members", d.members().stream().map(mb -> mb.assignment().topicPartitions()
                            .stream().map(TopicPartition::partition).sorted().toList())
                            .sorted((x, y) -> x.toString().compareTo(y.toString())).toList());
                    return g;
                }));
                while (seen.size() < n && System.currentTimeMillis() < deadline) {
                    pollAndCommit(a, seen);
                    pollAndCommit(b, seen);
                }
                a.close(Duration.ofSeconds(10));
                long left = System.currentTimeMillis();
                while (b.assignment().size() < 4 && System.currentTimeMillis() < deadline) {
                    pollAndCommit(b, seen);
                }
                out.put("takeover_ms", System.currentTimeMillis() - left);
                out.put("after_leave", partitionsOf(b));
                Map<String, Object> committed = new TreeMap<>();
                b.committed(b.assignment(), Duration.ofSeconds(10)).forEach((tp, om) ->
                        committed.put(Integer.toString(tp.partition()), om == null ? -1 : om.offset()));
                out.put("committed", committed);
            }
        }
        out.put("stale_commits", staleCommits);
        out.put("seen", seen.size());
        out.put("twice", seen.entrySet().stream().filter(e -> e.getValue() > 1).map(Map.Entry::getKey).toList());
        return out;
    }

    /**
     * A consumer of partition 0 by assignment (no group) reads from the beginning until
     * `stop` exists and it has reached the end offset it then asks for (or `limitMs`
     * passes); reports every record as [offset, value].
     */
    static Map<String, Object> consumeUntil(String boot, String topic, Path stop, long limitMs) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        p.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, "1000");
        p.put(ConsumerConfig.RECONNECT_BACKOFF_MS_CONFIG, "50");
        p.put(ConsumerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        List<Object> records = new ArrayList<>();
        List<String> errors = new ArrayList<>();
        TopicPartition tp = new TopicPartition(topic, 0);
        long deadline = System.currentTimeMillis() + limitMs;
        Long end = null;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p)) {
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            while (System.currentTimeMillis() < deadline) {
                if (end == null && Files.exists(stop)) {
                    end = consumer.endOffsets(List.of(tp), Duration.ofSeconds(10)).get(tp);
                }
                if (end != null && consumer.position(tp) >= end) {
                    break;
                }
                try {
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(100))) {
                        records.add(List.of(r.offset(), String.valueOf(r.value())));
                    }
                } catch (org.apache.kafka.common.KafkaException e) {
                    // Surfaced, not swallowed: the test fails on any.
                    errors.add(e.toString());
                }
            }
        }
        Map<String, Object> out = new TreeMap<>();
        out.put("records", records);
        out.put("end", end == null ? -1 : end);
        out.put("errors", errors);
        return out;
    }

    static Admin admin(String boot) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "20000");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        return Admin.create(p);
    }

    /** What an admin call ended in: its value, or its error's class and message. */
    static <T> Object attempt(KafkaFuture<T> f, java.util.function.Function<T, Object> ok) {
        try {
            return ok.apply(f.get(20, TimeUnit.SECONDS));
        } catch (Exception e) {
            Throwable c = e instanceof ExecutionException ? e.getCause() : e;
            Map<String, Object> err = new TreeMap<>();
            err.put("error", c.getClass().getSimpleName());
            err.put("message", String.valueOf(c.getMessage()));
            return err;
        }
    }

    /** A topic id as 32 hex digits, as `sluice topic describe` prints it. */
    static String hex(org.apache.kafka.common.Uuid id) {
        return String.format("%016x%016x", id.getMostSignificantBits(), id.getLeastSignificantBits());
    }

    static Map<String, Object> describeTopic(TopicDescription d) {
        Map<String, Object> t = new TreeMap<>();
        t.put("name", d.name());
        t.put("id", hex(d.topicId()));
        t.put("internal", d.isInternal());
        List<Object> parts = new ArrayList<>();
        for (TopicPartitionInfo i : d.partitions()) {
            Map<String, Object> p = new TreeMap<>();
            p.put("partition", i.partition());
            p.put("leader", i.leader() == null ? -1 : i.leader().id());
            p.put("replicas", i.replicas().stream().map(Node::id).toList());
            p.put("isr", i.isr().stream().map(Node::id).toList());
            parts.add(p);
        }
        t.put("partitions", parts);
        return t;
    }

    static Map<String, Object> configs(Config c) {
        Map<String, Object> m = new TreeMap<>();
        for (ConfigEntry e : c.entries()) {
            m.put(e.name(), List.of(String.valueOf(e.value()), e.source().toString()));
        }
        return m;
    }

    static Object describeConfigs(Admin a, String topic) {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        return attempt(a.describeConfigs(List.of(r)).all(), m -> configs(m.get(r)));
    }

    /**
     * createTopics (`topic` with 3 partitions, RF 3 and configs, and `other` with the
     * broker's defaults), listTopics, describeTopics, describeCluster, describeConfigs,
     * incrementalAlterConfigs (SET and DELETE), createPartitions (3 -> 5), and each
     * answer after.
     */
    static Map<String, Object> adminTopics(String boot, String topic, String other) {
        Map<String, Object> out = new TreeMap<>();
        try (Admin a = admin(boot)) {
            NewTopic t = new NewTopic(topic, 3, (short) 3).configs(Map.of(
                    "retention.ms", "3600000", "cleanup.policy", "compact",
                    "min.insync.replicas", "2"));
            NewTopic o = new NewTopic(other, java.util.Optional.empty(), java.util.Optional.empty());
            CreateTopicsResult created = a.createTopics(List.of(t, o));
            out.put("create", attempt(created.all(), v -> "ok"));
            out.put("create_id", attempt(created.topicId(topic), KafkaJava::hex));
            out.put("create_partitions", attempt(created.numPartitions(other), v -> v));
            out.put("create_rf", attempt(created.replicationFactor(other), v -> v));
            out.put("create_again", attempt(a.createTopics(List.of(t)).all(), v -> "ok"));
            out.put("list", attempt(a.listTopics().names(), v -> new ArrayList<>(new TreeSet<>(v))));
            out.put("describe", attempt(a.describeTopics(List.of(topic, other)).allTopicNames(),
                    m -> {
                        Map<String, Object> d = new TreeMap<>();
                        m.forEach((k, v) -> d.put(k, describeTopic(v)));
                        return d;
                    }));
            out.put("describe_missing", attempt(a.describeTopics(List.of("no-such-topic"))
                    .allTopicNames(), v -> "ok"));
            // By topic id (Metadata v12 with ids): the topic the id names, and an unknown id.
            Object byId = attempt(created.topicId(topic), id -> attempt(
                    a.describeTopics(org.apache.kafka.common.TopicCollection.ofTopicIds(List.of(id)))
                            .allTopicIds(), m -> describeTopic(m.get(id))));
            out.put("describe_by_id", byId);
            org.apache.kafka.common.Uuid unknown = org.apache.kafka.common.Uuid.randomUuid();
            out.put("describe_by_id_missing", attempt(
                    a.describeTopics(org.apache.kafka.common.TopicCollection.ofTopicIds(List.of(unknown)))
                            .allTopicIds(), v -> "ok"));
            DescribeClusterResult c = a.describeCluster();
            Map<String, Object> cluster = new TreeMap<>();
            cluster.put("id", attempt(c.clusterId(), v -> v));
            cluster.put("controller", attempt(c.controller(), Node::id));
            cluster.put("nodes", attempt(c.nodes(), ns -> ns.stream()
                    .map(n -> List.of(n.id(), n.host() + ":" + n.port()))
                    .sorted((x, y) -> Integer.compare((Integer) x.get(0), (Integer) y.get(0)))
                    .toList()));
            out.put("cluster", cluster);
            out.put("configs", describeConfigs(a, topic));
            ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            Map<ConfigResource, Collection<AlterConfigOp>> ops = Map.of(r, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000000"), AlterConfigOp.OpType.SET),
                    new AlterConfigOp(new ConfigEntry("cleanup.policy", ""), AlterConfigOp.OpType.DELETE)));
            out.put("alter", attempt(a.incrementalAlterConfigs(ops).all(), v -> "ok"));
            Map<ConfigResource, Collection<AlterConfigOp>> bad = Map.of(r, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "soon"), AlterConfigOp.OpType.SET)));
            out.put("alter_invalid", attempt(a.incrementalAlterConfigs(bad).all(), v -> "ok"));
            out.put("configs_after", describeConfigs(a, topic));
            out.put("partitions", attempt(
                    a.createPartitions(Map.of(topic, NewPartitions.increaseTo(5))).all(), v -> "ok"));
            out.put("partitions_fewer", attempt(
                    a.createPartitions(Map.of(topic, NewPartitions.increaseTo(2))).all(), v -> "ok"));
            out.put("describe_after", attempt(a.describeTopics(List.of(topic)).allTopicNames(),
                    m -> describeTopic(m.get(topic))));
            // Preferred elections (KIP-460): of every partition (null), where each already
            // has its preferred leader, and of one named partition.
            out.put("elect_all", attempt(a.electLeaders(org.apache.kafka.common.ElectionType.PREFERRED, null)
                    .partitions(), m -> m.size()));
            out.put("elect_all_result", attempt(
                    a.electLeaders(org.apache.kafka.common.ElectionType.PREFERRED, null).all(), v -> "ok"));
            out.put("elect_named", attempt(a.electLeaders(org.apache.kafka.common.ElectionType.PREFERRED,
                    Set.of(new TopicPartition(topic, 0))).all(), v -> "ok"));
        }
        return out;
    }

    /** listOffsets of every partition of `topic`: earliest, latest, and by timestamp `ts`. */
    static Map<String, Object> adminOffsets(String boot, String topic, long ts) {
        Map<String, Object> out = new TreeMap<>();
        try (Admin a = admin(boot)) {
            Object described = attempt(a.describeTopics(List.of(topic)).allTopicNames(),
                    m -> m.get(topic).partitions().size());
            if (!(described instanceof Integer n)) {
                out.put("describe", described);
                return out;
            }
            Map<String, OffsetSpec> specs = Map.of("earliest", OffsetSpec.earliest(), "latest",
                    OffsetSpec.latest(), "timestamp", OffsetSpec.forTimestamp(ts), "max_timestamp",
                    OffsetSpec.maxTimestamp());
            for (var spec : specs.entrySet()) {
                Map<TopicPartition, OffsetSpec> ask = new HashMap<>();
                for (int i = 0; i < n; i++) {
                    ask.put(new TopicPartition(topic, i), spec.getValue());
                }
                out.put(spec.getKey(), attempt(a.listOffsets(ask).all(), m -> {
                    Map<String, Object> per = new TreeMap<>();
                    for (var e : m.entrySet()) {
                        ListOffsetsResult.ListOffsetsResultInfo info = e.getValue();
                        per.put(Integer.toString(e.getKey().partition()),
                                List.of(info.offset(), info.timestamp()));
                    }
                    return per;
                }));
            }
        }
        return out;
    }

    /**
     * listConsumerGroups, describeConsumerGroups and listConsumerGroupOffsets of `group`
     * (and of a group that does not exist), then deleteConsumerGroups and the list after.
     */
    static Map<String, Object> adminGroups(String boot, String group, String missing) {
        Map<String, Object> out = new TreeMap<>();
        try (Admin a = admin(boot)) {
            out.put("list", attempt(a.listConsumerGroups().all(), gs -> gs.stream()
                    .map(ConsumerGroupListing::groupId).sorted().toList()));
            out.put("describe", attempt(a.describeConsumerGroups(List.of(group)).all(), m -> {
                ConsumerGroupDescription d = m.get(group);
                Map<String, Object> g = new TreeMap<>();
                g.put("state", String.valueOf(d.groupState()));
                g.put("type", String.valueOf(d.type()));
                g.put("coordinator", d.coordinator() == null ? -1 : d.coordinator().id());
                g.put("members", d.members().stream().map(MemberDescription::consumerId).toList());
                return g;
            }));
            out.put("describe_missing", attempt(a.describeConsumerGroups(List.of(missing)).all(),
                    m -> String.valueOf(m.get(missing).groupState())));
            out.put("offsets", attempt(a.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata(),
                    m -> {
                        Map<String, Object> per = new TreeMap<>();
                        for (var e : m.entrySet()) {
                            per.put(e.getKey().topic() + "-" + e.getKey().partition(),
                                    e.getValue() == null ? -1 : e.getValue().offset());
                        }
                        return per;
                    }));
            out.put("delete", attempt(a.deleteConsumerGroups(List.of(group)).all(), v -> "ok"));
            out.put("delete_missing", attempt(a.deleteConsumerGroups(List.of(missing)).all(), v -> "ok"));
            out.put("list_after", attempt(a.listConsumerGroups().all(), gs -> gs.stream()
                    .map(ConsumerGroupListing::groupId).sorted().toList()));
        }
        return out;
    }

    /** deleteTopics of `topic` (and of one that does not exist), and listTopics after. */
    static Map<String, Object> adminDelete(String boot, String topic) {
        Map<String, Object> out = new TreeMap<>();
        try (Admin a = admin(boot)) {
            out.put("delete", attempt(a.deleteTopics(List.of(topic)).all(), v -> "ok"));
            out.put("delete_missing", attempt(a.deleteTopics(List.of("no-such-topic")).all(), v -> "ok"));
            out.put("list_after", attempt(a.listTopics().names(), v -> new ArrayList<>(new TreeSet<>(v))));
        }
        return out;
    }
}
