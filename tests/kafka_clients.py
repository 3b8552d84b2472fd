"""Flows of confluent-kafka (librdkafka 2.x) against a Sluice Kafka listener, run by
tests/kafka_clients.rs. Each flow prints one JSON line with what it saw and exits 0, or
prints why it failed on stderr and exits 1. Every wait has a deadline.

  idempotent BOOTSTRAP TOPIC N      an idempotent producer (acks=all) writes N records
  commit BOOTSTRAP TOPIC GROUP N    a consumer assigns every partition by hand, reads
                                    the N records, commits what it read (generation -1)
  autocreate BOOTSTRAP TOPIC NOPE N a consumer that may not create topics asks for NOPE;
                                    then an idempotent producer writes N records to
                                    TOPIC, which does not exist yet
  group BOOTSTRAP TOPIC GROUP N     two group.protocol=consumer members share TOPIC and
                                    its N records; one leaves, the other takes over and
                                    reads N more records written after; an admin
                                    describes the group while both are in it
  offsets BOOTSTRAP TOPIC           writes three records stamped 1000, 5000 and 3000 ms
                                    and lists earliest, latest, max-timestamp and
                                    by-timestamp offsets with the admin client
  classic BOOTSTRAP TOPIC GROUP N   the same with group.protocol=classic (JoinGroup,
                                    SyncGroup, client-side assignors); the admin's
                                    describe falls back to DescribeGroups
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient


class Failed(Exception):
    pass


def deadline(seconds):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() < end


def fatal_errors(errors):
    def on_error(err):
        # Transport hiccups are retried by the client; fatal or unsupported is not.
        if err.fatal() or err.code() in (
            -165,  # _UNSUPPORTED_FEATURE
            35,  # UNSUPPORTED_VERSION
        ):
            errors.append(str(err))

    return on_error


def produce(bootstrap, topic, values, errors, extra=None):
    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "error_cb": fatal_errors(errors),
    }
    conf.update(extra or {})
    p = Producer(conf)
    delivered = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"delivery of {msg.value()!r}: {err}")
        else:
            delivered.append((msg.partition(), msg.offset()))

    for i, v in enumerate(values):
        while True:
            try:
                p.produce(topic, value=v, key=str(i).encode(), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    alive = deadline(30)
    while len(delivered) + len(
        [e for e in errors if e.startswith("delivery")]
    ) < len(values):
        if errors or not alive():
            break
        p.poll(0.1)
    p.flush(5)
    if errors:
        raise Failed("producer: " + "; ".join(errors[:5]))
    if len(delivered) != len(values):
        raise Failed(f"producer: {len(delivered)} of {len(values)} delivered in 30 s")
    return delivered


def idempotent(bootstrap, topic, n):
    errors = []
    values = [f"idem-{i}".encode() for i in range(n)]
    delivered = produce(bootstrap, topic, values, errors)
    return {"delivered": len(delivered), "distinct_offsets": len(set(delivered))}


def autocreate(bootstrap, topic, nope, n):
    errors = []
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "autocreate",
            "allow.auto.create.topics": False,
            "error_cb": fatal_errors(errors),
        }
    )
    md = c.list_topics(nope, timeout=10)
    absent = md.topics[nope].error is not None if nope in md.topics else True
    c.close()
    values = [f"auto-{i}".encode() for i in range(n)]
    delivered = produce(bootstrap, topic, values, errors)
    return {"nope_absent": absent, "delivered": len(delivered)}


def partitions_of(consumer, topic):
    md = consumer.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise Failed(f"metadata of {topic}: {t.error if t else 'absent'}")
    return sorted(t.partitions)


def commit(bootstrap, topic, group, n):
    errors = []
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "error_cb": fatal_errors(errors),
        }
    )
    parts = partitions_of(c, topic)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    last = {}
    read = 0
    alive = deadline(30)
    while read < n:
        if errors:
            raise Failed("consumer: " + "; ".join(errors))
        if not alive():
            raise Failed(f"consumer: {read} of {n} records read in 30 s")
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            raise Failed(f"consumer: {m.error()}")
        read += 1
        last[m.partition()] = m.offset()
    # Commit the next offset to read of each partition, synchronously.
    offsets = [TopicPartition(topic, p, o + 1) for p, o in sorted(last.items())]
    try:
        answered = c.commit(offsets=offsets, asynchronous=False)
    except KafkaException as e:
        raise Failed(f"commit: {e}")
    bad = [str(tp) for tp in answered if tp.error is not None]
    if bad:
        raise Failed(f"commit: {bad}")
    # And read back through the client's own OffsetFetch.
    committed = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
    c.close()
    return {
        "read": read,
        "committed": {str(tp.partition): tp.offset for tp in committed},
    }


def describe(bootstrap, group_id):
    """The group as an admin sees it (ConsumerGroupDescribe): state, and each
    member's assigned partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.describe_consumer_groups([group_id], request_timeout=10)
    try:
        d = futures[group_id].result(timeout=15)
    except KafkaException as e:
        raise Failed(f"describe {group_id}: {e}")
    return {
        "state": str(d.state),
        "members": sorted(
            sorted(tp.partition for tp in m.assignment.topic_partitions)
            for m in d.members
        ),
    }


def group(bootstrap, topic, group_id, n, protocol="consumer"):
    errors = []

    def member():
        config = {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "group.protocol": protocol,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "error_cb": fatal_errors(errors),
        }
        if protocol == "classic":
            # librdkafka's default assignors (range, roundrobin), run by the leader
            # client; a short session so a leave is noticed quickly either way.
            config.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
        return Consumer(config)

    members = [member(), member()]
    for m in members:
        m.subscribe([topic])
    seen = {}  # value -> times read
    owners = {}

    def poll(m, i):
        msg = m.poll(0.1)
        if errors:
            raise Failed("consumer: " + "; ".join(errors))
        if msg is not None:
            if msg.error():
                raise Failed(f"consumer {i}: {msg.error()}")
            v = msg.value().decode()
            seen[v] = seen.get(v, 0) + 1
            m.commit(message=msg, asynchronous=False)
        owners[i] = sorted(tp.partition for tp in m.assignment())

    # Both members get a share, together every partition, and read every record.
    alive = deadline(40)
    while True:
        for i, m in enumerate(members):
            poll(m, i)
        shares = [owners.get(0, []), owners.get(1, [])]
        split = (
            all(shares)
            and not set(shares[0]) & set(shares[1])
            and len(shares[0]) + len(shares[1]) == 4
        )
        if split and len(seen) >= n:
            break
        if not alive():
            raise Failed(
                f"two members: assignments {shares}, {len(seen)} of {n} records in 40 s"
            )
    split_shares = shares
    described = describe(bootstrap, group_id)
    # One leaves; the other takes every partition.
    members[1].close()
    alive = deadline(40)
    while len(owners.get(0, [])) != 4:
        poll(members[0], 0)
        if not alive():
            raise Failed(f"after a leave: member 0 owns {owners.get(0)} after 40 s")
    # Records written now all reach the remaining member.
    more = [f"after-{i}".encode() for i in range(n)]
    produce(bootstrap, topic, more, errors)
    alive = deadline(30)
    while not all(v.decode() in seen for v in more):
        poll(members[0], 0)
        if not alive():
            got = sum(v.decode() in seen for v in more)
            raise Failed(f"after a leave: {got} of {n} new records read in 30 s")
    members[0].close()
    return {
        "described": described,
        "split": split_shares,
        "after_leave": owners[0],
        "distinct": len(seen),
        "duplicates": sum(c - 1 for c in seen.values()),
    }


def offsets(bootstrap, topic):
    from confluent_kafka.admin import OffsetSpec

    errors = []
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 50,
            "error_cb": fatal_errors(errors),
        }
    )
    for i, ts in enumerate([1000, 5000, 3000]):
        p.produce(topic, value=f"r{i}".encode(), partition=0, timestamp=ts)
    if p.flush(30) != 0 or errors:
        raise Failed("produce: " + "; ".join(errors))
    admin = AdminClient({"bootstrap.servers": bootstrap})
    specs = {
        "earliest": OffsetSpec.earliest(),
        "latest": OffsetSpec.latest(),
        "max_timestamp": OffsetSpec.max_timestamp(),
        "at_2000": OffsetSpec.for_timestamp(2000),
        "at_9000": OffsetSpec.for_timestamp(9000),
    }
    out = {}
    for name, spec in specs.items():
        tp = TopicPartition(topic, 0)
        try:
            r = admin.list_offsets({tp: spec}, request_timeout=10)[tp].result(timeout=15)
        except KafkaException as e:
            raise Failed(f"list_offsets {name}: {e}")
        out[name] = {"offset": r.offset, "timestamp": r.timestamp}
    return out


def main():
    flow, args = sys.argv[1], sys.argv[2:]
    try:
        if flow == "idempotent":
            out = idempotent(args[0], args[1], int(args[2]))
        elif flow == "commit":
            out = commit(args[0], args[1], args[2], int(args[3]))
        elif flow == "autocreate":
            out = autocreate(args[0], args[1], args[2], int(args[3]))
        elif flow == "group":
            out = group(args[0], args[1], args[2], int(args[3]))
        elif flow == "offsets":
            out = offsets(args[0], args[1])
        elif flow == "classic":
            out = group(args[0], args[1], args[2], int(args[3]), "classic")
        else:
            raise Failed(f"unknown flow {flow}")
    except Failed as e:
        print(f"{flow}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
