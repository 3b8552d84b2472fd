package sluice;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Transactions through the Java client (kafka-clients, unchanged): exactly-once
 * consume-transform-produce, a zombie fenced by a second instance, a producer that dies
 * inside a transaction, and a read_committed reader. One JSON object on stdout per flow;
 * tests/kafka_txn.rs checks it.
 */
public final class KafkaTxn {
    private KafkaTxn() {}

    public static void main(String[] args) throws Exception {
        String boot = args[1];
        Map<String, Object> out;
        switch (args[0]) {
            case "etl" -> out = etl(boot, args[2], args[3], args[4], args[5],
                    Long.parseLong(args[6]), Long.parseLong(args[7]), args[8]);
            case "zombie" -> out = zombie(boot, args[2], args[3]);
            case "die-in-txn" -> {
                dieInTxn(boot, args[2], args[3], Integer.parseInt(args[4]),
                        Integer.parseInt(args[5]));
                return;
            }
            case "read-committed" -> out = readCommitted(boot, args[2], Long.parseLong(args[3]));
            default -> {
                System.err.println("unknown command " + args[0]);
                System.exit(2);
                return;
            }
        }
        System.out.println(Json.write(out));
        System.out.flush();
        System.exit(0);
    }

    static KafkaProducer<String, String> producer(String boot, String txnId, int timeoutMs) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, timeoutMs);
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 3000);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 60000);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 60000);
        p.put(ProducerConfig.LINGER_MS_CONFIG, 1);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<String, String> consumer(String boot, String group, String protocol) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        }
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 50);
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 5000);
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return new KafkaConsumer<>(p);
    }

    /**
     * Reads IN in a group and writes each value to OUT with "|etl" appended, the output
     * and the consumed offsets committed in one transaction per poll: the standard
     * exactly-once loop, which aborts and rewinds to the committed offsets on an
     * abortable error. Stops once the group's committed offsets cover TOTAL records.
     */
    static Map<String, Object> etl(String boot, String in, String outTopic, String group,
            String txnId, long total, long deadlineMs, String protocol) {
        Map<String, Object> out = new TreeMap<>();
        List<String> errors = new ArrayList<>();
        long committedTxns = 0;
        long abortedTxns = 0;
        long done = 0;
        long deadline = System.currentTimeMillis() + deadlineMs;
        try (KafkaProducer<String, String> producer = producer(boot, txnId, 10000);
                KafkaConsumer<String, String> consumer = consumer(boot, group, protocol)) {
            producer.initTransactions();
            consumer.subscribe(List.of(in));
            while (done < total && System.currentTimeMillis() < deadline) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                if (records.isEmpty()) {
                    continue;
                }
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                try {
                    producer.beginTransaction();
                    for (ConsumerRecord<String, String> r : records) {
                        producer.send(new ProducerRecord<>(outTopic, r.key(), r.value() + "|etl"));
                        offsets.put(new TopicPartition(r.topic(), r.partition()),
                                new OffsetAndMetadata(r.offset() + 1, r.leaderEpoch(), ""));
                    }
                    producer.sendOffsetsToTransaction(offsets, consumer.groupMetadata());
                    producer.commitTransaction();
                    committedTxns++;
                    done = 0;
                    for (OffsetAndMetadata o : consumer.committed(consumer.assignment()).values()) {
                        if (o != null) {
                            done += o.offset();
                        }
                    }
                } catch (ProducerFencedException | InvalidProducerEpochException e) {
                    errors.add("fenced: " + e);
                    out.put("fenced", true);
                    break;
                } catch (KafkaException e) {
                    errors.add(e.getClass().getSimpleName() + ": " + e.getMessage());
                    try {
                        producer.abortTransaction();
                        abortedTxns++;
                    } catch (KafkaException again) {
                        errors.add("abort: " + again);
                        break;
                    }
                    // Back to what the group committed: the aborted output is redone.
                    Set<TopicPartition> assigned = consumer.assignment();
                    Map<TopicPartition, OffsetAndMetadata> committed = consumer.committed(assigned);
                    for (TopicPartition tp : assigned) {
                        OffsetAndMetadata c = committed.get(tp);
                        if (c == null) {
                            consumer.seekToBeginning(List.of(tp));
                        } else {
                            consumer.seek(tp, c.offset());
                        }
                    }
                }
            }
        }
        out.put("committed_txns", committedTxns);
        out.put("aborted_txns", abortedTxns);
        out.put("done", done);
        out.put("errors", errors);
        return out;
    }

    /**
     * Two instances of one transactional id: the first sends ten records in a
     * transaction, the second starts (fencing the first) and commits its own ten; the
     * first's commit must fail.
     */
    static Map<String, Object> zombie(String boot, String topic, String txnId) {
        Map<String, Object> out = new TreeMap<>();
        KafkaProducer<String, String> a = producer(boot, txnId, 60000);
        a.initTransactions();
        a.beginTransaction();
        for (int i = 0; i < 10; i++) {
            a.send(new ProducerRecord<>(topic, "k" + i, "zombie-" + i));
        }
        a.flush();
        try (KafkaProducer<String, String> b = producer(boot, txnId, 60000)) {
            b.initTransactions();
            b.beginTransaction();
            for (int i = 0; i < 10; i++) {
                b.send(new ProducerRecord<>(topic, "k" + i, "live-" + i));
            }
            b.commitTransaction();
            out.put("live_committed", true);
        }
        try {
            a.send(new ProducerRecord<>(topic, "k", "zombie-late"));
            a.commitTransaction();
            out.put("zombie_commit", "ok");
        } catch (KafkaException e) {
            out.put("zombie_commit", e.getClass().getSimpleName());
        }
        a.close(Duration.ZERO);
        return out;
    }

    /** Sends N records in a transaction, flushes, and halts without a commit or close. */
    static void dieInTxn(String boot, String topic, String txnId, int n, int timeoutMs) {
        KafkaProducer<String, String> p = producer(boot, txnId, timeoutMs);
        p.initTransactions();
        p.beginTransaction();
        for (int i = 0; i < n; i++) {
            p.send(new ProducerRecord<>(topic, "d" + i, "dead-" + i));
        }
        p.flush();
        System.out.println("{\"sent\":" + n + "}");
        System.out.flush();
        Runtime.getRuntime().halt(0);
    }

    /**
     * Every partition of TOPIC read with isolation.level=read_committed, from the start
     * to the end offsets it reports (the last stable offsets); also the
     * read_uncommitted end offsets (the high watermarks), for comparison.
     */
    static Map<String, Object> readCommitted(String boot, String topic, long timeoutMs) {
        Map<String, Object> out = new TreeMap<>();
        List<String> values = new ArrayList<>();
        Map<String, Object> stable = new TreeMap<>();
        Map<String, Object> high = new TreeMap<>();
        try (KafkaConsumer<String, String> c = consumer(boot, null, null)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo pi : c.partitionsFor(topic)) {
                tps.add(new TopicPartition(topic, pi.partition()));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            for (TopicPartition tp : tps) {
                stable.put(String.valueOf(tp.partition()), end.get(tp));
            }
            Properties p = new Properties();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, boot);
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            try (KafkaConsumer<String, String> u = new KafkaConsumer<>(p)) {
                for (Map.Entry<TopicPartition, Long> e : u.endOffsets(tps).entrySet()) {
                    high.put(String.valueOf(e.getKey().partition()), e.getValue());
                }
            }
            long deadline = System.currentTimeMillis() + timeoutMs;
            while (System.currentTimeMillis() < deadline) {
                boolean all = true;
                for (TopicPartition tp : tps) {
                    all &= c.position(tp) >= end.get(tp);
                }
                if (all) {
                    break;
                }
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    values.add(r.value());
                }
            }
        }
        out.put("values", values);
        out.put("stable_end", stable);
        out.put("high_watermark", high);
        return out;
    }
}
