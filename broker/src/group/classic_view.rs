//! How `sluice group describe` shows a classic group of the `consumer` protocol type:
//! each member's subscription and partitions, decoded from the Kafka ConsumerProtocol
//! metadata and assignment the coordinator otherwise only relays.

use super::ClassicGroup;

impl ClassicGroup {
    /// Members as `sluice group describe` shows them: for the `consumer` protocol type,
    /// the topics each subscribes to and the partitions it was assigned (decoded from
    /// Kafka's ConsumerProtocol metadata and assignment; what does not decode shows as
    /// nothing), the generation as its epoch.
    pub fn consumer_members(&self) -> Vec<crate::group::state::MemberView> {
        use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
        let consumer = self.protocol_type.as_deref() == Some("consumer");
        self.members
            .iter()
            .map(|(id, l)| {
                let mut view = crate::group::state::MemberView {
                    member_id: id.clone(),
                    instance_id: l.m.instance_id.clone(),
                    epoch: self.generation,
                    topics: Default::default(),
                    regex: None,
                    owned: Default::default(),
                    target: Default::default(),
                };
                if consumer {
                    if let Some(s) = decode::<ConsumerProtocolSubscription>(&self.metadata_of(&l.m))
                    {
                        view.topics = s.topics.iter().map(|t| t.to_string()).collect();
                    }
                    if let Some(a) = decode::<ConsumerProtocolAssignment>(&l.m.assignment) {
                        view.owned = a
                            .assigned_partitions
                            .iter()
                            .flat_map(|t| {
                                t.partitions
                                    .iter()
                                    .map(|p| (t.topic.0.to_string(), (*p).max(0) as u32))
                            })
                            .collect();
                        view.target = view.owned.clone();
                    }
                }
                view
            })
            .collect()
    }
}

/// A ConsumerProtocol message: a version, then the body in that version (a newer
/// version read as the newest known, whose fields it starts with).
fn decode<T: kafka_protocol::protocol::Decodable>(bytes: &[u8]) -> Option<T> {
    let mut b = bytes::Bytes::copy_from_slice(bytes);
    if b.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([b[0], b[1]]);
    bytes::Buf::advance(&mut b, 2);
    T::decode(&mut b, version.clamp(0, 3)).ok()
}
