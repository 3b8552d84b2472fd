//! Digests of control state, computed the same way by a broker (over what it applied)
//! and by the controller (over what it decided), so a heartbeat can say "this is what I
//! hold" in 16 bytes and the controller can re-send whatever a lost push left stale.
//!
//! A digest is order-independent (a wrapping sum of per-item hashes, each finished with
//! an avalanche mix) and stable across processes and builds: FNV-1a over a canonical,
//! length-prefixed encoding — never `std`'s randomly keyed hasher.

use std::collections::BTreeMap;

use crate::v1;

/// FNV-1a, 64-bit.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.u64(v as u64);
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }
    fn ids(&mut self, ids: &[u32]) {
        self.u64(ids.len() as u64);
        for &i in ids {
            self.u64(u64::from(i));
        }
    }
    /// splitmix64's finalizer: every input bit moves every output bit, so a sum of
    /// finished hashes does not cancel out structured differences.
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// One partition's role as a LeaderAndIsr push states it (leader `-1` when none), with
/// the topic's id (empty when unknown): a topic deleted and created again under the same
/// name starts at the same epochs, and only the id tells the broker's old replica from
/// the new one. The ISR itself is covered by the partition epoch, which every ISR change
/// bumps.
pub fn role_hash(
    topic: &str,
    topic_id: &str,
    partition: u32,
    leader: i32,
    leader_epoch: i32,
    partition_epoch: i32,
) -> u64 {
    let mut h = Fnv::new();
    h.str(topic);
    h.str(topic_id);
    h.u64(u64::from(partition));
    h.i64(i64::from(leader));
    h.i64(i64::from(leader_epoch));
    h.i64(i64::from(partition_epoch));
    h.finish()
}

/// The digest of a broker's roles: every partition it replicates, in any order.
pub fn roles_digest(hashes: impl IntoIterator<Item = u64>) -> u64 {
    let (mut sum, mut n) = (0u64, 0u64);
    for h in hashes {
        sum = sum.wrapping_add(h);
        n += 1;
    }
    let mut h = Fnv::new();
    h.u64(sum);
    h.u64(n);
    h.finish()
}

/// The digest of a metadata view (what UpdateMetadata carries): brokers, topics with
/// ids, configs and partitions. The order of brokers, topics and configs does not count.
pub fn metadata_digest(md: &v1::MetadataResponse) -> u64 {
    let mut h = Fnv::new();
    h.u64(u64::from(md.controller_id as u32));
    let mut brokers: Vec<&v1::BrokerInfo> = md.brokers.iter().collect();
    brokers.sort_by_key(|b| b.id);
    h.u64(brokers.len() as u64);
    for b in brokers {
        h.u64(u64::from(b.id));
        h.str(&b.addr);
        h.str(&b.rack);
        h.u64(u64::from(b.alive));
        h.str(&b.kafka_addr);
    }
    let mut topics: Vec<&v1::TopicMetadata> = md.topics.iter().collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    h.u64(topics.len() as u64);
    for t in topics {
        h.str(&t.name);
        h.str(&t.topic_id);
        h.i64(i64::from(t.error_code));
        let configs: BTreeMap<&String, &String> = t.configs.iter().collect();
        h.u64(configs.len() as u64);
        for (k, v) in configs {
            h.str(k);
            h.str(v);
        }
        h.u64(t.partitions.len() as u64);
        for p in &t.partitions {
            h.u64(u64::from(p.partition));
            h.i64(i64::from(p.leader));
            h.i64(i64::from(p.leader_epoch));
            h.i64(i64::from(p.partition_epoch));
            h.ids(&p.replicas);
            h.ids(&p.isr);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_digest_ignores_order_and_sees_every_field() {
        let a = role_hash("t", "id", 0, 1, 3, 7);
        let b = role_hash("t", "id", 1, 2, 3, 7);
        assert_eq!(roles_digest([a, b]), roles_digest([b, a]));
        assert_ne!(roles_digest([a, b]), roles_digest([a]));
        assert_ne!(roles_digest([]), roles_digest([a]));
        let variants = [
            role_hash("u", "id", 0, 1, 3, 7),
            role_hash("t", "id", 2, 1, 3, 7),
            role_hash("t", "id", 0, -1, 3, 7),
            role_hash("t", "id", 0, 1, 4, 7),
            role_hash("t", "id", 0, 1, 3, 8),
        ];
        for v in variants {
            assert_ne!(roles_digest([v, b]), roles_digest([a, b]));
        }
        // Pinned: brokers and controllers of different builds must agree.
        assert_eq!(
            role_hash("t", "id", 0, 1, 3, 7),
            role_hash("t", "id", 0, 1, 3, 7)
        );
        assert_eq!(roles_digest([]), {
            let mut h = Fnv::new();
            h.u64(0);
            h.u64(0);
            h.finish()
        });
    }

    #[test]
    fn metadata_digest_ignores_order_and_sees_changes() {
        let part = |leader, isr: Vec<u32>| v1::PartitionMetadata {
            partition: 0,
            leader,
            leader_epoch: 2,
            replicas: vec![1, 2],
            isr,
            partition_epoch: 5,
            ..Default::default()
        };
        let topic = |name: &str, p| v1::TopicMetadata {
            name: name.into(),
            topic_id: "id".into(),
            partitions: vec![p],
            configs: [("a".to_string(), "1".to_string()), ("b".into(), "2".into())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let md = |topics: Vec<v1::TopicMetadata>| v1::MetadataResponse {
            brokers: vec![
                v1::BrokerInfo {
                    id: 1,
                    addr: "a:1".into(),
                    rack: String::new(),
                    alive: true,
                    kafka_addr: String::new(),
                },
                v1::BrokerInfo {
                    id: 2,
                    addr: "a:2".into(),
                    rack: String::new(),
                    alive: true,
                    kafka_addr: String::new(),
                },
            ],
            topics,
            controller_id: 100,
            controller_epoch: 3,
        };
        let x = md(vec![
            topic("x", part(1, vec![1, 2])),
            topic("y", part(2, vec![2])),
        ]);
        let mut reordered = md(vec![
            topic("y", part(2, vec![2])),
            topic("x", part(1, vec![1, 2])),
        ]);
        reordered.brokers.reverse();
        assert_eq!(metadata_digest(&x), metadata_digest(&reordered));
        let changed = md(vec![
            topic("x", part(1, vec![1])),
            topic("y", part(2, vec![2])),
        ]);
        assert_ne!(metadata_digest(&x), metadata_digest(&changed));
        let mut dead = x.clone();
        dead.brokers[1].alive = false;
        assert_ne!(metadata_digest(&x), metadata_digest(&dead));
    }
}
