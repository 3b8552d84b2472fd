//! What the third-party client flows (kafka-python, kafkajs) share on the Rust side.

use super::Dev;

/// The `sluice consume -f '%o|%k|%s|%T|%h\n'` lines of the records a client flow wrote:
/// `n` per codec, in order, keyed `{codec}-k{i}`, valued `{codec}-v{i}`, stamped
/// 1_700_000_000_000 + i, with headers `codec` and `i`.
pub fn stamped_records(codecs: &[&str], n: usize) -> Vec<String> {
    codecs
        .iter()
        .enumerate()
        .flat_map(|(c, name)| {
            (0..n).map(move |i| {
                format!(
                    "{}|{name}-k{i}|{name}-v{i}|{}|codec={name},i={i}",
                    c * n + i,
                    1_700_000_000_000u64 + i as u64
                )
            })
        })
        .collect()
}

/// Every record of `topic` as `sluice consume` prints it in [`stamped_records`]' form.
pub fn read_stamped(dev: &Dev, topic: &str) -> Vec<String> {
    dev.ok(
        &[
            "consume",
            topic,
            "--from-beginning",
            "-e",
            "-f",
            "%o|%k|%s|%T|%h\n",
        ],
        "",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// A group `group` with offset 3 committed on `topic` (one partition, three records),
/// for an admin client to find.
pub fn group_with_offsets(dev: &Dev, topic: &str, group: &str) {
    dev.ok(&["topic", "create", topic, "--partitions", "1"], "");
    dev.ok(&["produce", topic], "a\nb\nc\n");
    dev.ok(
        &[
            "group",
            "reset-offsets",
            group,
            "--topic",
            topic,
            "--to-latest",
        ],
        "",
    );
}
