//! Server-side partition assignors (KIP-848): given the members' subscriptions, the
//! partitions of every subscribed topic and the current target assignment, compute the
//! next target assignment. Sans-IO and deterministic (members and partitions are walked
//! in sorted order), so every coordinator replica computes the same answer.
//!
//! - [`uniform`] (the default): every partition of a subscribed topic goes to exactly one
//!   member subscribed to that topic; members' counts differ by at most one whenever
//!   that is possible given who may own what; and it is sticky: a partition stays with
//!   its current owner unless that owner is over its share or no longer subscribed.
//! - [`range`]: per topic, partitions in contiguous ranges over the topic's subscribers
//!   in member-id order (Kafka's range assignor), for co-partitioned joins.

use std::collections::{BTreeMap, BTreeSet};

/// A member id.
pub type MemberId = String;
/// (topic, partition).
pub type Tp = (String, u32);
/// Member → owned partitions.
pub type Assignment = BTreeMap<MemberId, BTreeSet<Tp>>;

/// What the assignor needs of a member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscriber {
    /// Topics (already resolved from regexes) the member subscribes to.
    pub topics: BTreeSet<String>,
}

/// The uniform, sticky assignor.
pub fn uniform(
    members: &BTreeMap<MemberId, Subscriber>,
    partitions: &BTreeMap<String, u32>,
    current: &Assignment,
) -> Assignment {
    let mut out: Assignment = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    if members.is_empty() {
        return out;
    }
    // Every partition someone may own, and who may own it.
    let mut eligible: BTreeMap<Tp, Vec<&MemberId>> = BTreeMap::new();
    for (topic, &n) in partitions {
        let subs: Vec<&MemberId> = members
            .iter()
            .filter(|(_, s)| s.topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subs.is_empty() {
            continue;
        }
        for p in 0..n {
            eligible.insert((topic.clone(), p), subs.clone());
        }
    }
    // 1. Stickiness: every current owner that still may own a partition keeps it; the
    //    balancing pass below takes from those over their share only what it must.
    let mut owner: BTreeMap<Tp, MemberId> = BTreeMap::new();
    for (m, owned) in current {
        if !members.contains_key(m) {
            continue;
        }
        for tp in owned {
            if eligible.get(tp).is_some_and(|e| e.contains(&m)) && !owner.contains_key(tp) {
                owner.insert(tp.clone(), m.clone());
                out.get_mut(m).expect("a member").insert(tp.clone());
            }
        }
    }
    // 2. Everything left goes to the eligible member owning the fewest (ties: member id).
    for (tp, subs) in &eligible {
        if owner.contains_key(tp) {
            continue;
        }
        let m = subs
            .iter()
            .min_by_key(|m| (out[**m].len(), **m))
            .expect("a partition with subscribers");
        out.get_mut(*m).expect("a member").insert(tp.clone());
        owner.insert(tp.clone(), (*m).clone());
    }
    // 3. Balance: while some member owns two or more than an eligible other, move one
    //    partition across the widest such gap, from the fullest member (ties: the last
    //    partition, the first member id — a member over its share keeps its first
    //    partitions and gives up its last ones, as Kafka's uniform assignor does, which
    //    clients' tests expect). Each move lowers the sum of squared counts, so this ends;
    //    and since every move takes from a member above the others, a member that joins
    //    takes its share from the fullest, and nothing moves between members already at
    //    their share.
    loop {
        let mut best: Option<((usize, usize), &Tp, &MemberId)> = None;
        for (tp, subs) in eligible.iter().rev() {
            let from_count = out[&owner[tp]].len();
            for to in subs {
                let to_count = out[*to].len();
                if to_count + 1 >= from_count {
                    continue;
                }
                let key = (from_count - to_count, from_count);
                if best.as_ref().is_none_or(|(k, _, _)| key > *k) {
                    best = Some((key, tp, to));
                }
            }
        }
        let Some((_, tp, to)) = best else { break };
        let (tp, to) = (tp.clone(), to.clone());
        let from = owner.insert(tp.clone(), to.clone()).expect("owned");
        out.get_mut(&from).expect("a member").remove(&tp);
        out.get_mut(&to).expect("a member").insert(tp);
    }
    out
}

/// The range assignor: per topic, contiguous ranges over its subscribers in id order,
/// the first `n % k` subscribers one partition more.
pub fn range(
    members: &BTreeMap<MemberId, Subscriber>,
    partitions: &BTreeMap<String, u32>,
) -> Assignment {
    let mut out: Assignment = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for (topic, &n) in partitions {
        let subs: Vec<&MemberId> = members
            .iter()
            .filter(|(_, s)| s.topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subs.is_empty() {
            continue;
        }
        let k = subs.len() as u32;
        let (per, extra) = (n / k, n % k);
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let take = per + u32::from((i as u32) < extra);
            for p in next..next + take {
                out.get_mut(*m)
                    .expect("a member")
                    .insert((topic.clone(), p));
            }
            next += take;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subs(topics: &[&str]) -> Subscriber {
        Subscriber {
            topics: topics.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn counts(a: &Assignment) -> Vec<usize> {
        a.values().map(|s| s.len()).collect()
    }

    /// Every subscribed partition is owned exactly once, by a subscriber of its topic.
    fn check_complete(
        members: &BTreeMap<MemberId, Subscriber>,
        partitions: &BTreeMap<String, u32>,
        a: &Assignment,
    ) -> Result<(), TestCaseError> {
        let mut seen = BTreeSet::new();
        for (m, owned) in a {
            for tp in owned {
                prop_assert!(
                    members[m].topics.contains(&tp.0),
                    "{m} owns {tp:?} unsubscribed"
                );
                prop_assert!(tp.1 < partitions[&tp.0], "{tp:?} does not exist");
                prop_assert!(seen.insert(tp.clone()), "{tp:?} owned twice");
            }
        }
        for (t, &n) in partitions {
            if members.values().any(|s| s.topics.contains(t)) {
                for p in 0..n {
                    prop_assert!(seen.contains(&(t.clone(), p)), "{t}-{p} unowned");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_join_takes_its_share_and_nothing_else_moves() {
        let parts: BTreeMap<String, u32> = [("t".to_string(), 12)].into();
        let mut members: BTreeMap<MemberId, Subscriber> = ["a", "b", "c"]
            .iter()
            .map(|m| (m.to_string(), subs(&["t"])))
            .collect();
        let first = uniform(&members, &parts, &Assignment::new());
        assert_eq!(counts(&first), vec![4, 4, 4]);
        members.insert("d".into(), subs(&["t"]));
        let second = uniform(&members, &parts, &first);
        assert_eq!(counts(&second), vec![3, 3, 3, 3]);
        for m in ["a", "b", "c"] {
            assert!(
                second[m].is_subset(&first[m]),
                "{m} only gives up partitions"
            );
        }
    }

    #[test]
    fn a_member_over_its_share_keeps_its_lowest_partitions_as_kafka_does() {
        // Kafka's uniform assignor lets a member keep the first partitions of what it
        // owns up to its share and hands out the rest; librdkafka's 0113
        // `x_incremental_rebalances` (KIP-848) expects exactly its choices.
        let parts: BTreeMap<String, u32> = [("t".to_string(), 6)].into();
        let mut members: BTreeMap<MemberId, Subscriber> = [("a".to_string(), subs(&["t"]))].into();
        let ps = |a: &Assignment, m: &str| a[m].iter().map(|(_, p)| *p).collect::<Vec<_>>();
        let one = uniform(&members, &parts, &Assignment::new());
        assert_eq!(ps(&one, "a"), vec![0, 1, 2, 3, 4, 5]);
        members.insert("b".into(), subs(&["t"]));
        let two = uniform(&members, &parts, &one);
        assert_eq!(
            (ps(&two, "a"), ps(&two, "b")),
            (vec![0, 1, 2], vec![3, 4, 5])
        );
        members.insert("c".into(), subs(&["t"]));
        let three = uniform(&members, &parts, &two);
        assert_eq!(
            (ps(&three, "a"), ps(&three, "b"), ps(&three, "c")),
            (vec![0, 1], vec![3, 4], vec![2, 5])
        );
    }

    #[test]
    fn range_gives_contiguous_ranges_in_member_order() {
        let parts: BTreeMap<String, u32> = [("t".to_string(), 7)].into();
        let members: BTreeMap<MemberId, Subscriber> = ["a", "b", "c"]
            .iter()
            .map(|m| (m.to_string(), subs(&["t"])))
            .collect();
        let a = range(&members, &parts);
        let ps = |m: &str| a[m].iter().map(|(_, p)| *p).collect::<Vec<_>>();
        assert_eq!(
            (ps("a"), ps("b"), ps("c")),
            (vec![0, 1, 2], vec![3, 4], vec![5, 6])
        );
    }

    fn setup() -> impl Strategy<Value = (BTreeMap<MemberId, Subscriber>, BTreeMap<String, u32>)> {
        let topics = prop::collection::btree_map("[a-d]", 1u32..9, 1..4);
        (topics, 1usize..7).prop_flat_map(|(topics, n)| {
            let names: Vec<String> = topics.keys().cloned().collect();
            let member = prop::sample::subsequence(names.clone(), 1..=names.len());
            (
                prop::collection::vec(member, n).prop_map(|ms| {
                    ms.into_iter()
                        .enumerate()
                        .map(|(i, ts)| {
                            (
                                format!("m{i:02}"),
                                Subscriber {
                                    topics: ts.into_iter().collect(),
                                },
                            )
                        })
                        .collect()
                }),
                Just(topics),
            )
        })
    }

    proptest! {
        #[test]
        fn uniform_is_complete_and_balanced_within_one_for_equal_subscriptions(
            (members, parts) in setup(),
            same in any::<bool>(),
        ) {
            let members: BTreeMap<MemberId, Subscriber> = if same {
                let all = Subscriber { topics: parts.keys().cloned().collect() };
                members.keys().map(|m| (m.clone(), all.clone())).collect()
            } else {
                members
            };
            let a = uniform(&members, &parts, &Assignment::new());
            check_complete(&members, &parts, &a)?;
            if same {
                let c = counts(&a);
                prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{c:?}");
            }
            // No member could take a partition from one with two more (the balance pass's
            // fixed point): balanced as far as subscriptions allow.
            for (m, owned) in &a {
                for tp in owned {
                    for (o, s) in &members {
                        if s.topics.contains(&tp.0) {
                            prop_assert!(a[o].len() + 1 >= owned.len(), "{o} could take {tp:?} from {m}");
                        }
                    }
                }
            }
            // Deterministic, and a second computation from the result changes nothing.
            prop_assert_eq!(&uniform(&members, &parts, &a), &a);
        }

        #[test]
        fn uniform_is_sticky_when_a_member_joins_or_leaves(
            (members, parts) in setup(),
            leave in any::<bool>(),
            joiner in "[a-z]{1,3}",
            history in any::<u64>(),
        ) {
            let all = Subscriber { topics: parts.keys().cloned().collect() };
            let mut members: BTreeMap<MemberId, Subscriber> =
                members.keys().map(|m| (m.clone(), all.clone())).collect();
            // A balanced assignment with some history: partitions first scattered at
            // random, then balanced (stickily) from there.
            let ids: Vec<&MemberId> = members.keys().collect();
            let mut rng = history | 1;
            let mut scattered = Assignment::new();
            for (t, &n) in &parts {
                for p in 0..n {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let m = ids[(rng % ids.len() as u64) as usize];
                    scattered.entry(m.clone()).or_default().insert((t.clone(), p));
                }
            }
            let before = uniform(&members, &parts, &scattered);
            let leaves = leave && members.len() > 1;
            let joined = !leaves && !members.contains_key(&joiner);
            if leaves {
                let gone = members.keys().next().unwrap().clone();
                members.remove(&gone);
            } else if joined {
                members.insert(joiner.clone(), all.clone());
            }
            let after = uniform(&members, &parts, &before);
            // A join only takes from the others, a leave only gives to them: nothing
            // moves between two members that stay.
            for (m, owned) in &before {
                let Some(now) = after.get(m) else { continue };
                if joined {
                    prop_assert!(now.is_subset(owned), "{m} gained on a join: {owned:?} -> {now:?}");
                } else {
                    prop_assert!(owned.is_subset(now), "{m} lost on a leave: {owned:?} -> {now:?}");
                }
            }
            check_complete(&members, &parts, &after)?;
            let c = counts(&after);
            prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{c:?}");
            // Fewest moves: a partition changes owner only if its owner left, or the owner
            // was over the new share (then it moves off that owner, never between two
            // members both at or under their share).
            let total: usize = parts.values().map(|&n| n as usize).sum();
            let share_max = total.div_ceil(members.len());
            for (m, owned) in &before {
                let Some(now) = after.get(m) else { continue };
                let lost = owned.difference(now).count();
                let over = owned.len().saturating_sub(share_max.min(owned.len()));
                prop_assert!(lost <= over.max(owned.len().saturating_sub(total / members.len())),
                    "{m} lost {lost} of {} (share {}..={share_max})", owned.len(), total / members.len());
            }
        }
    }
}
