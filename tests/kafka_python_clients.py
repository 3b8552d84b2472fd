"""Flows of kafka-python (pure Python, PyPI) against a Sluice Kafka listener, run by
tests/kafka_python.rs. Each flow prints one JSON line with what it saw and exits 0, or
prints why it failed on stderr and exits 1. Every wait has a deadline.

  codecs BOOTSTRAP TOPIC N          for each codec (none, gzip, snappy, lz4, zstd), an
                                    acks=all producer writes N records with keys, headers
                                    and timestamps to partition 0
  read BOOTSTRAP TOPIC N            reads N records of partition 0 from the beginning
                                    (assign + seek): key, value, headers, timestamp each
  group BOOTSTRAP TOPIC GROUP N     two classic-protocol members split TOPIC and its N
                                    records; a third joins (a rebalance to three shares),
                                    then two leave and the last takes every partition
  admin BOOTSTRAP TOPIC GROUP       the admin client: create, list, describe (topics,
                                    configs, groups, group offsets), grow, delete
"""

import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


class Failed(Exception):
    pass


def deadline(seconds):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() < end


def codecs(bootstrap, topic, n):
    sent = 0
    for codec in CODECS:
        p = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", compression_type=codec, linger_ms=20
        )
        name = codec or "none"
        futures = [
            p.send(
                topic,
                key=f"{name}-k{i}".encode(),
                value=f"{name}-v{i}".encode(),
                headers=[("codec", name.encode()), ("i", str(i).encode())],
                partition=0,
                timestamp_ms=1_700_000_000_000 + i,
            )
            for i in range(n)
        ]
        p.flush(timeout=30)
        for f in futures:
            try:
                f.get(timeout=30)
            except Exception as e:  # noqa: BLE001 - the client's own error types
                raise Failed(f"{name}: {e!r}")
        sent += len(futures)
        p.close()
    return {"sent": sent}


def read(bootstrap, topic, n):
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    out = []
    alive = deadline(30)
    while len(out) < n:
        if not alive():
            raise Failed(f"read {len(out)} of {n} in 30 s")
        for records in c.poll(timeout_ms=200).values():
            for r in records:
                out.append(
                    {
                        "offset": r.offset,
                        "key": r.key.decode() if r.key is not None else None,
                        "value": r.value.decode() if r.value is not None else None,
                        "headers": [[k, v.decode()] for k, v in r.headers],
                        "timestamp": r.timestamp,
                    }
                )
    c.close()
    return {"records": out}


def group(bootstrap, topic, group_id, n):
    """Each member polls in its own thread, as an application runs one consumer per
    thread; the main thread watches their assignments and what they read."""
    import threading

    lock = threading.Lock()
    seen = {}
    errors = []

    class Member(threading.Thread):
        def __init__(self):
            super().__init__(daemon=True)
            self.stop = threading.Event()
            self.share = []
            self.c = KafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=group_id,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                session_timeout_ms=6000,
                heartbeat_interval_ms=500,
                max_poll_interval_ms=30000,
            )
            self.c.subscribe([topic])

        def run(self):
            try:
                while not self.stop.is_set():
                    got = self.c.poll(timeout_ms=100)
                    with lock:
                        for records in got.values():
                            for r in records:
                                seen[r.value] = seen.get(r.value, 0) + 1
                        self.share = sorted(tp.partition for tp in self.c.assignment())
                    if got:
                        self.c.commit()
                self.c.close()
            except Exception as e:  # noqa: BLE001 - reported to the main thread
                errors.append(repr(e))

    def shares(members):
        with lock:
            return [list(m.share) for m in members]

    def wait(members, k, what, need=0):
        alive = deadline(60)
        while True:
            if errors:
                raise Failed("; ".join(errors))
            s = shares(members)
            flat = sorted(p for share in s for p in share)
            with lock:
                enough = len(seen) >= need
            if len(s) == k and all(s) and flat == [0, 1, 2, 3] and enough:
                return s
            if not alive():
                raise Failed(f"{what}: {s}, {len(seen)} of {need} records after 60 s")
            time.sleep(0.05)

    members = [Member(), Member()]
    for m in members:
        m.start()
    two = wait(members, 2, "two members", n)
    third = Member()
    third.start()
    members.append(third)
    three = wait(members, 3, "a third joined")
    for m in members[:2]:
        m.stop.set()
        m.join(30)
    members = members[2:]
    last = wait(members, 1, "two left")
    members[0].stop.set()
    members[0].join(30)
    return {
        "two": two,
        "three": three,
        "last": last,
        "distinct": len(seen),
        "duplicates": sum(c - 1 for c in seen.values()),
    }


def admin(bootstrap, topic, group_id):
    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    a.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=2,
                replication_factor=1,
                topic_configs={"retention.ms": "3600000"},
            )
        ]
    )
    listed = topic in a.list_topics()
    described = a.describe_topics([topic])
    partitions = len(described[0]["partitions"])
    configs = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    retention = configs["topic"][topic]["retention.ms"]["value"]
    a.create_partitions({topic: NewPartitions(total_count=3)})
    grown = len(a.describe_topics([topic])[0]["partitions"])
    groups = [g["group_id"] for g in a.list_groups()]
    offsets = {
        f"{tp.topic}-{tp.partition}": o.offset
        for tp, o in a.list_group_offsets(group_id)[group_id].items()
    }
    group_state = a.describe_groups([group_id])[group_id]["group_state"]
    a.delete_topics([topic])
    alive = deadline(30)
    while topic in a.list_topics():
        if not alive():
            raise Failed(f"{topic} still listed 30 s after its delete")
        time.sleep(0.2)
    a.close()
    return {
        "listed": listed,
        "partitions": partitions,
        "retention": retention,
        "grown": grown,
        "groups": groups,
        "offsets": offsets,
        "group_state": group_state,
    }


def main():
    flow, args = sys.argv[1], sys.argv[2:]
    try:
        if flow == "codecs":
            out = codecs(args[0], args[1], int(args[2]))
        elif flow == "read":
            out = read(args[0], args[1], int(args[2]))
        elif flow == "group":
            out = group(args[0], args[1], args[2], int(args[3]))
        elif flow == "admin":
            out = admin(args[0], args[1], args[2])
        else:
            raise Failed(f"unknown flow {flow}")
    except Failed as e:
        print(f"{flow}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
