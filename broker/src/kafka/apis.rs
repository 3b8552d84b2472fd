//! Decode a request, call the broker's own API (`server::api::BrokerApi`, the code the
//! gRPC service runs), encode the answer for the version asked.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::FutureExt;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse,
    RequestHeader, RequestKind, ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_proto::acl::{self, op, resource};
use sluice_proto::v1;
use sluice_proto::v1::broker_server::Broker as _;
use sluice_proto::{ErrorCode, LeaderEpoch};
use tonic::Request;
use tracing::debug;

use super::acls::{self, Caller};
use super::admin;
use super::authz;
use super::classic;
use super::fetch::{delete_records, fetch_request, fetch_response};
use super::groups;
use super::ops;
use super::txn;
use super::versions::{self, answers};
use super::{framed, peek_header, Finishing, Outcome};
use crate::server::admin::AdminProxy;
use crate::server::api::BrokerApi;
use crate::server::Shared;

/// The cluster id given to Kafka clients.
pub(super) const CLUSTER_ID: &str = "sluice";

/// Kafka's UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

fn close(why: String) -> Finishing {
    futures::future::ready(Outcome::Close(why)).boxed()
}

fn now(outcome: Outcome) -> Finishing {
    futures::future::ready(outcome).boxed()
}

/// Encodes `body` as the answer to request `correlation` of `key` version `version`.
///
/// Encoded straight into the frame (its size prefix written last), and a Fetch answer
/// into a buffer of its exact size: its records, up to megabytes, are copied once, not
/// again by every growth of the buffer and by the framing.
fn respond(key: ApiKey, version: i16, correlation: i32, body: ResponseKind) -> Outcome {
    let sized = match &body {
        ResponseKind::Fetch(r) => r.compute_size(version).unwrap_or(0),
        _ => 0,
    };
    // The header (a correlation id and perhaps empty tagged fields) and the size prefix.
    let mut buf = BytesMut::with_capacity(16 + sized);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation);
    let encoded = header
        .encode(&mut buf, key.response_header_version(version))
        .and_then(|_| body.encode(&mut buf, version));
    match encoded {
        Ok(()) => {
            let size = (buf.len() - 4) as i32;
            buf[..4].copy_from_slice(&size.to_be_bytes());
            Outcome::Respond(buf)
        }
        // A bug here, not the client's: say which field, and drop the connection
        // rather than send a body the client would misread.
        Err(e) => Outcome::Close(format!("cannot encode {key:?} v{version}: {e}")),
    }
}

pub(crate) fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(crate) fn code(c: i32) -> i16 {
    i16::try_from(c).unwrap_or(ErrorCode::UnknownServerError.code() as i16)
}

/// Starts the request in `frame`: what must happen in request order happens before
/// this returns; the rest is in the returned future.
pub(crate) async fn start(shared: &Arc<Shared>, frame: Bytes, peer: SocketAddr) -> Finishing {
    let Some((raw_key, version, correlation)) = peek_header(&frame) else {
        return close(format!(
            "a frame of {} bytes holds no request header",
            frame.len()
        ));
    };
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return close(format!("unknown API key {raw_key}"));
    };
    if !answers(key, version) {
        return unsupported(key, version, correlation, frame);
    }
    let mut body = frame;
    let header = match RequestHeader::decode(&mut body, key.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => return close(format!("malformed {key:?} v{version} header: {e}")),
    };
    let mut request = match RequestKind::decode(key, &mut body, version) {
        Ok(r) => r,
        Err(e) => return close(format!("malformed {key:?} v{version} request: {e}")),
    };
    debug!(%peer, ?key, version, client = ?header.client_id, "Kafka request");
    let api = BrokerApi(shared.clone());
    let caller = Caller::anonymous(peer);
    if let Some(refused) = acls::refused(shared, &caller, &request) {
        return now(respond(key, version, correlation, refused));
    }
    let after = match authz::before(shared, &caller, &mut request, version) {
        Ok(after) => std::sync::Arc::new(after),
        Err(refused) => return now(respond(key, version, correlation, *refused)),
    };
    let answer = {
        let (shared, caller) = (shared.clone(), caller.clone());
        move |mut body: ResponseKind| {
            after.apply(&shared, &caller, &mut body);
            respond(key, version, correlation, body)
        }
    };
    match request {
        RequestKind::ApiVersions(_) => {
            now(answer(ResponseKind::ApiVersions(versions::api_versions(0))))
        }
        RequestKind::Metadata(r) => {
            let me = shared.config.id;
            async move {
                answer(ResponseKind::Metadata(
                    metadata(&api, &caller, me, version, r).await,
                ))
            }
            .boxed()
        }
        RequestKind::Produce(mut r) => {
            let acks = r.acks;
            let txn_denied = r
                .transactional_id
                .as_ref()
                .is_some_and(|id| !caller.may(shared, op::WRITE, resource::TRANSACTIONAL_ID, id));
            if txn_denied || (r.transactional_id.is_none() && has_transactional_batch(&r)) {
                // As Kafka: transactional records need the request's transactional id,
                // and WRITE on it.
                let refused = refuse_all(&r, ErrorCode::TransactionalIdAuthorizationFailed);
                return now(if acks == 0 {
                    Outcome::Silent
                } else {
                    answer(ResponseKind::Produce(produce_response(refused)))
                });
            }
            let mut refused = not_one_batch(&mut r);
            refused.extend(unauthorized_produce(shared, &caller, &mut r));
            let done = api.start_produce(produce_request(r)).await;
            async move {
                let mut answered = done.await;
                answered.partitions.extend(refused);
                let answered = produce_response(answered);
                if acks == 0 {
                    Outcome::Silent
                } else {
                    answer(ResponseKind::Produce(answered))
                }
            }
            .boxed()
        }
        RequestKind::Fetch(r) => async move {
            // v13+ names topics by id: mapped through this broker's metadata, and an id
            // it does not know answered UNKNOWN_TOPIC_ID.
            let (by_id, by_name) = groups::topic_ids(&api.0);
            let (mut wanted, unknown) = fetch_request(&r, version, &by_id);
            let denied = unauthorized_fetch(&api.0, &caller, &mut wanted.partitions);
            let mut fetched = if wanted.partitions.is_empty() && !denied.is_empty() {
                v1::FetchResponse::default()
            } else {
                api.fetch_once(wanted, "kafka_fetch").await
            };
            fetched.partitions.extend(denied);
            answer(ResponseKind::Fetch(fetch_response(
                fetched, version, &by_name, unknown,
            )))
        }
        .boxed(),
        RequestKind::OffsetForLeaderEpoch(r) => async move {
            // The partition locks a blocking thread may hold across disk work: not here.
            let shared = api.0.clone();
            match tokio::task::spawn_blocking(move || offset_for_leader_epoch(&shared, r)).await {
                Ok(answered) => answer(ResponseKind::OffsetForLeaderEpoch(answered)),
                Err(e) => Outcome::Close(format!("OffsetForLeaderEpoch failed: {e}")),
            }
        }
        .boxed(),
        RequestKind::DeleteRecords(mut r) => async move {
            let shared = api.0.clone();
            let denied = acls::unauthorized_record_deletions(&shared, &caller, &mut r);
            match tokio::task::spawn_blocking(move || delete_records(&shared, r)).await {
                Ok(mut answered) => {
                    answered.topics.extend(denied);
                    answer(ResponseKind::DeleteRecords(answered))
                }
                Err(e) => Outcome::Close(format!("DeleteRecords failed: {e}")),
            }
        }
        .boxed(),
        RequestKind::ListOffsets(r) => async move {
            let mut wanted = list_offsets_request(&r);
            let denied = unauthorized_list_offsets(&api.0, &caller, &mut wanted);
            let asked = wanted.clone();
            let listed = tokio::task::spawn_blocking(move || api.list_all(wanted)).await;
            match listed {
                Ok(mut listed) => {
                    if r.isolation_level == 1 {
                        // read_committed: the latest offset is the last stable offset.
                        for (p, asked) in listed.iter_mut().zip(asked) {
                            if asked.timestamp == -1 && p.error_code == 0 {
                                p.offset = p.last_stable_offset;
                            }
                        }
                    }
                    listed.extend(denied);
                    answer(ResponseKind::ListOffsets(list_offsets_response(
                        version, listed,
                    )))
                }
                Err(e) => Outcome::Close(format!("ListOffsets failed: {e}")),
            }
        }
        .boxed(),
        RequestKind::InitProducerId(r) => async move {
            let s = api.0;
            answer(ResponseKind::InitProducerId(
                groups::init_producer_id(&s, r).await,
            ))
        }
        .boxed(),
        RequestKind::AddPartitionsToTxn(r) => async move {
            let s = api.0;
            answer(ResponseKind::AddPartitionsToTxn(
                txn::add_partitions(&s, r).await,
            ))
        }
        .boxed(),
        RequestKind::AddOffsetsToTxn(r) => async move {
            let s = api.0;
            answer(ResponseKind::AddOffsetsToTxn(txn::add_offsets(&s, r).await))
        }
        .boxed(),
        RequestKind::EndTxn(r) => async move {
            let s = api.0;
            answer(ResponseKind::EndTxn(txn::end_txn(&s, r).await))
        }
        .boxed(),
        RequestKind::TxnOffsetCommit(r) => async move {
            let s = api.0;
            answer(ResponseKind::TxnOffsetCommit(
                txn::txn_offset_commit(&s, r).await,
            ))
        }
        .boxed(),
        RequestKind::DescribeTransactions(r) => async move {
            let s = api.0;
            answer(ResponseKind::DescribeTransactions(
                txn::describe(&s, r).await,
            ))
        }
        .boxed(),
        RequestKind::ListTransactions(r) => async move {
            let s = api.0;
            answer(ResponseKind::ListTransactions(txn::list(&s, r)))
        }
        .boxed(),
        RequestKind::FindCoordinator(r) => async move {
            let s = api.0;
            answer(ResponseKind::FindCoordinator(
                groups::find_coordinator(&s, version, r).await,
            ))
        }
        .boxed(),
        RequestKind::OffsetCommit(r) => async move {
            let s = api.0;
            answer(ResponseKind::OffsetCommit(
                groups::offset_commit(&s, r).await,
            ))
        }
        .boxed(),
        RequestKind::OffsetFetch(r) => async move {
            let s = api.0;
            answer(ResponseKind::OffsetFetch(
                groups::offset_fetch(&s, version, r).await,
            ))
        }
        .boxed(),
        RequestKind::ConsumerGroupHeartbeat(r) => async move {
            let s = api.0;
            answer(ResponseKind::ConsumerGroupHeartbeat(
                groups::consumer_group_heartbeat(&s, r).await,
            ))
        }
        .boxed(),
        RequestKind::JoinGroup(r) => {
            let client_id = header.client_id.as_ref().map(|c| c.to_string());
            async move {
                let s = api.0;
                answer(ResponseKind::JoinGroup(
                    classic::join_group(&s, version, r, client_id.as_deref(), peer).await,
                ))
            }
            .boxed()
        }
        RequestKind::SyncGroup(r) => async move {
            let s = api.0;
            answer(ResponseKind::SyncGroup(classic::sync_group(&s, r).await))
        }
        .boxed(),
        RequestKind::Heartbeat(r) => async move {
            let s = api.0;
            answer(ResponseKind::Heartbeat(classic::heartbeat(&s, r).await))
        }
        .boxed(),
        RequestKind::LeaveGroup(r) => async move {
            let s = api.0;
            answer(ResponseKind::LeaveGroup(
                classic::leave_group(&s, version, r).await,
            ))
        }
        .boxed(),
        RequestKind::DescribeGroups(r) => async move {
            let s = api.0;
            let ops = r.include_authorized_operations;
            let mut described = classic::describe_groups(&s, version, r).await;
            acls::describe_groups(&s, &caller, ops && version >= 3, &mut described);
            answer(ResponseKind::DescribeGroups(described))
        }
        .boxed(),
        RequestKind::ListGroups(r) => async move {
            let s = api.0;
            answer(ResponseKind::ListGroups(
                groups::list_groups(&s, version, r).await,
            ))
        }
        .boxed(),
        RequestKind::DeleteGroups(mut r) => async move {
            let s = api.0;
            let denied = acls::unauthorized_group_deletions(&s, &caller, &mut r);
            let mut deleted = groups::delete_groups(&s, r).await;
            deleted.results.extend(denied);
            answer(ResponseKind::DeleteGroups(deleted))
        }
        .boxed(),
        RequestKind::OffsetDelete(r) => async move {
            let s = api.0;
            answer(ResponseKind::OffsetDelete(ops::offset_delete(&s, r).await))
        }
        .boxed(),
        // Both take partition locks a blocking thread may hold across disk work, and
        // DescribeLogDirs asks the file system: not on the runtime's threads.
        RequestKind::DescribeLogDirs(r) => async move {
            let shared = api.0.clone();
            match tokio::task::spawn_blocking(move || ops::describe_log_dirs(&shared, r)).await {
                Ok(answered) => answer(ResponseKind::DescribeLogDirs(answered)),
                Err(e) => Outcome::Close(format!("DescribeLogDirs failed: {e}")),
            }
        }
        .boxed(),
        RequestKind::DescribeProducers(r) => async move {
            let shared = api.0.clone();
            match tokio::task::spawn_blocking(move || ops::describe_producers(&shared, r)).await {
                Ok(answered) => answer(ResponseKind::DescribeProducers(answered)),
                Err(e) => Outcome::Close(format!("DescribeProducers failed: {e}")),
            }
        }
        .boxed(),
        RequestKind::AlterPartitionReassignments(r) => async move {
            let proxy = AdminProxy(api.0.clone());
            answer(ResponseKind::AlterPartitionReassignments(
                ops::alter_partition_reassignments(&proxy, r).await,
            ))
        }
        .boxed(),
        RequestKind::ListPartitionReassignments(r) => async move {
            let proxy = AdminProxy(api.0.clone());
            answer(ResponseKind::ListPartitionReassignments(
                ops::list_partition_reassignments(&proxy, r).await,
            ))
        }
        .boxed(),
        RequestKind::ConsumerGroupDescribe(r) => async move {
            let s = api.0;
            answer(ResponseKind::ConsumerGroupDescribe(
                groups::consumer_group_describe(&s, version, r).await,
            ))
        }
        .boxed(),
        RequestKind::CreateTopics(mut r) => async move {
            let proxy = AdminProxy(api.0.clone());
            let denied = acls::unauthorized_creations(&api.0, &caller, &mut r);
            let mut created = admin::create_topics(&proxy, r).await;
            created.topics.extend(denied);
            answer(ResponseKind::CreateTopics(created))
        }
        .boxed(),
        RequestKind::DeleteTopics(mut r) => async move {
            let proxy = AdminProxy(api.0.clone());
            let denied = acls::unauthorized_deletions(&api.0, &caller, &mut r);
            let mut deleted = admin::delete_topics(&proxy, &api, r).await;
            deleted.responses.extend(denied);
            answer(ResponseKind::DeleteTopics(deleted))
        }
        .boxed(),
        RequestKind::ElectLeaders(r) => async move {
            let proxy = AdminProxy(api.0.clone());
            answer(ResponseKind::ElectLeaders(
                admin::elect_leaders(&proxy, version, r).await,
            ))
        }
        .boxed(),
        RequestKind::CreatePartitions(mut r) => async move {
            let proxy = AdminProxy(api.0.clone());
            let denied = acls::unauthorized_partition_growth(&api.0, &caller, &mut r);
            let mut grown = admin::create_partitions(&proxy, r).await;
            grown.results.extend(denied);
            answer(ResponseKind::CreatePartitions(grown))
        }
        .boxed(),
        RequestKind::DescribeConfigs(r) => async move {
            answer(ResponseKind::DescribeConfigs(
                admin::describe_configs(&api, r).await,
            ))
        }
        .boxed(),
        RequestKind::IncrementalAlterConfigs(r) => async move {
            let proxy = AdminProxy(api.0.clone());
            answer(ResponseKind::IncrementalAlterConfigs(
                admin::incremental_alter_configs(&proxy, &api, r).await,
            ))
        }
        .boxed(),
        RequestKind::AlterConfigs(r) => async move {
            let proxy = AdminProxy(api.0.clone());
            answer(ResponseKind::AlterConfigs(
                admin::alter_configs(&proxy, &api, r).await,
            ))
        }
        .boxed(),
        RequestKind::DescribeCluster(r) => {
            let me = shared.config.id;
            // Kafka's "not given" unless asked.
            let ops = if r.include_cluster_authorized_operations {
                caller.operations(
                    shared,
                    resource::CLUSTER,
                    acl::CLUSTER_NAME,
                    &acl::CLUSTER_OPERATIONS,
                )
            } else {
                i32::MIN
            };
            async move {
                answer(ResponseKind::DescribeCluster(
                    admin::describe_cluster(&api, me, ops).await,
                ))
            }
            .boxed()
        }
        RequestKind::CreateAcls(r) => async move {
            let proxy = AdminProxy(api.0.clone());
            answer(ResponseKind::CreateAcls(
                acls::create_acls(&proxy, &caller, r).await,
            ))
        }
        .boxed(),
        RequestKind::DeleteAcls(r) => async move {
            let proxy = AdminProxy(api.0.clone());
            answer(ResponseKind::DeleteAcls(
                acls::delete_acls(&proxy, &caller, r).await,
            ))
        }
        .boxed(),
        RequestKind::DescribeAcls(r) => now(answer(ResponseKind::DescribeAcls(
            acls::describe_acls(shared, &caller, r),
        ))),
        RequestKind::DescribeUserScramCredentials(r) => {
            now(answer(ResponseKind::DescribeUserScramCredentials(
                super::configs::describe_user_scram_credentials(r),
            )))
        }
        other => close(format!("{key:?} is not served (decoded {other:?})")),
    }
}

/// A key or version not served. ApiVersions from a newer client gets the v0 fallback
/// (KIP-511: error 35 and our ranges, which it retries with); Produce v0–2 (advertised,
/// see `versions`) gets UNSUPPORTED_VERSION per partition; anything else cannot be
/// framed for the client and closes the connection, as Kafka does.
fn unsupported(key: ApiKey, version: i16, correlation: i32, frame: Bytes) -> Finishing {
    match key {
        ApiKey::ApiVersions => now(respond(
            key,
            0,
            correlation,
            ResponseKind::ApiVersions(versions::api_versions(UNSUPPORTED_VERSION)),
        )),
        ApiKey::Produce if (0..versions::PRODUCE_SERVED_MIN).contains(&version) => {
            match old_produce_refusal(version, correlation, frame) {
                Some(Some(frame)) => now(Outcome::Respond(frame)),
                Some(None) => now(Outcome::Silent),
                None => close(format!("malformed Produce v{version} request")),
            }
        }
        _ => close(format!("{key:?} v{version} is not served")),
    }
}

/// Answers a Produce v0–2 (message sets v0/v1, which Sluice does not store) with
/// UNSUPPORTED_VERSION for every partition, encoded by hand (the protocol crate starts
/// at v3). `None`: malformed; `Some(None)`: acks=0, no answer.
fn old_produce_refusal(version: i16, correlation: i32, frame: Bytes) -> Option<Option<BytesMut>> {
    fn string(b: &mut Bytes) -> Option<Bytes> {
        if b.remaining() < 2 {
            return None;
        }
        let n = b.get_i16();
        let n = usize::try_from(n).ok()?;
        (b.remaining() >= n).then(|| b.split_to(n))
    }
    let mut b = frame;
    b.advance(8); // key, version, correlation id
    string(&mut b)?; // client id (request header v1)
    if b.remaining() < 10 {
        return None;
    }
    let acks = b.get_i16();
    b.advance(4); // timeout
    let topics = b.get_i32();
    let mut out = BytesMut::new();
    out.extend_from_slice(&correlation.to_be_bytes());
    out.extend_from_slice(&topics.max(0).to_be_bytes());
    for _ in 0..topics.max(0) {
        let topic = string(&mut b)?;
        if b.remaining() < 4 {
            return None;
        }
        let partitions = b.get_i32();
        out.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        out.extend_from_slice(&topic);
        out.extend_from_slice(&partitions.max(0).to_be_bytes());
        for _ in 0..partitions.max(0) {
            if b.remaining() < 8 {
                return None;
            }
            let partition = b.get_i32();
            let size = usize::try_from(b.get_i32()).ok()?;
            if b.remaining() < size {
                return None;
            }
            b.advance(size);
            out.extend_from_slice(&partition.to_be_bytes());
            out.extend_from_slice(&UNSUPPORTED_VERSION.to_be_bytes());
            out.extend_from_slice(&(-1i64).to_be_bytes()); // base offset
            if version >= 2 {
                out.extend_from_slice(&(-1i64).to_be_bytes()); // log append time
            }
        }
    }
    if version >= 1 {
        out.extend_from_slice(&0i32.to_be_bytes()); // throttle time
    }
    Some((acks != 0).then(|| framed(out)))
}

async fn metadata(
    api: &BrokerApi,
    caller: &Caller,
    me: u32,
    version: i16,
    r: MetadataRequest,
) -> MetadataResponse {
    // Null: every topic; empty: none (v0 had no null: empty meant every topic).
    let none_asked = r.topics.as_ref().is_some_and(|t| t.is_empty()) && version > 0;
    let every_topic = r
        .topics
        .as_ref()
        .is_none_or(|t| t.is_empty() && version == 0);
    let asked = r.topics.clone().unwrap_or_default();
    // v10+ may name topics by id (the name null, or empty as the Java client sends it);
    // as in Kafka, when any id is given the ids are what is asked for.
    let mut ids: Vec<uuid::Uuid> = Vec::new();
    for id in asked.iter().map(|t| t.topic_id).filter(|id| !id.is_nil()) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let topics: Vec<String> = if ids.is_empty() {
        asked
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect()
    } else {
        Vec::new() // every topic, to find the ids among
    };
    let mut md = match api
        .metadata(Request::new(v1::MetadataRequest { topics }))
        .await
    {
        Ok(md) => md.into_inner(),
        Err(status) => {
            // Not ready, or stale: no brokers and no topics makes a client retry
            // elsewhere after its backoff.
            debug!(%status, "Kafka Metadata: not answering with this broker's view");
            return MetadataResponse::default().with_controller_id(BrokerId(-1));
        }
    };
    if none_asked {
        md.topics.clear();
    }
    let mut unknown_ids = Vec::new();
    let every_topic = every_topic || !ids.is_empty();
    if !ids.is_empty() {
        let mut known = Vec::new();
        for id in ids {
            match md
                .topics
                .iter()
                .find(|t| uuid::Uuid::try_parse(&t.topic_id).ok() == Some(id))
            {
                Some(t) => known.push(t.clone()),
                None => unknown_ids.push(id),
            }
        }
        md.topics = known;
    }
    // As Kafka: a topic the caller may not DESCRIBE is left out of an every-topic
    // answer (and one asked by id), and answered TOPIC_AUTHORIZATION_FAILED, with no
    // partitions and no id, when named; whether it exists is not disclosed.
    let shared = &api.0;
    md.topics.retain_mut(|t| {
        if caller.may_topic(shared, op::DESCRIBE, &t.name) {
            return true;
        }
        *t = denied_topic(&t.name);
        !every_topic
    });
    // v0-3 have no flag: creation was always allowed there.
    let allowed = version < 4 || r.allow_auto_topic_creation;
    if let (true, Some(partitions)) = (allowed, api.0.config.kafka_auto_create_partitions) {
        let may_create_any = caller.may_cluster(shared, op::CREATE);
        for t in md
            .topics
            .iter_mut()
            .filter(|t| t.error_code == ErrorCode::UnknownTopicOrPartition.code())
        {
            if !may_create_any && !caller.may_topic(shared, op::CREATE, &t.name) {
                *t = denied_topic(&t.name);
                continue;
            }
            let (error, message) = groups::auto_create(&api.0, &t.name, partitions).await;
            t.error_code = error;
            t.error_message = message;
        }
    }
    let mut answer = metadata_response(me, md);
    // v8+, when asked (Kafka's default is "not given"): what the authorizer allows, all
    // of it without one.
    if r.include_topic_authorized_operations {
        for t in &mut answer.topics {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            t.topic_authorized_operations = if t.error_code == acls::TOPIC_AUTHORIZATION_FAILED {
                i32::MIN
            } else {
                caller.operations(shared, resource::TOPIC, &name, &acl::TOPIC_OPERATIONS)
            };
        }
    }
    if r.include_cluster_authorized_operations {
        answer.cluster_authorized_operations = caller.operations(
            shared,
            resource::CLUSTER,
            acl::CLUSTER_NAME,
            &acl::CLUSTER_OPERATIONS,
        );
    }
    // An id no topic has: UNKNOWN_TOPIC_ID with no name, as Kafka answers.
    answer.topics.extend(unknown_ids.into_iter().map(|id| {
        MetadataResponseTopic::default()
            .with_error_code(ErrorCode::UnknownTopicId.code() as i16)
            .with_name(None)
            .with_topic_id(id)
    }));
    answer
}

/// A topic the caller may not see, as Kafka answers it.
fn denied_topic(name: &str) -> v1::TopicMetadata {
    v1::TopicMetadata {
        name: name.to_string(),
        error_code: i32::from(acls::TOPIC_AUTHORIZATION_FAILED),
        ..Default::default()
    }
}

/// Takes out of `r` the topics the caller may not WRITE: their partitions answered
/// TOPIC_AUTHORIZATION_FAILED.
fn unauthorized_produce(
    shared: &Shared,
    caller: &Caller,
    r: &mut ProduceRequest,
) -> Vec<v1::ProducePartitionResponse> {
    let mut refused = Vec::new();
    r.topic_data.retain(|t| {
        if caller.may_topic(shared, op::WRITE, &t.name.0) {
            return true;
        }
        refused.extend(
            t.partition_data
                .iter()
                .map(|p| v1::ProducePartitionResponse {
                    topic: t.name.0.to_string(),
                    partition: p.index.max(0) as u32,
                    error_code: i32::from(acls::TOPIC_AUTHORIZATION_FAILED),
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                    ..Default::default()
                }),
        );
        false
    });
    refused
}

/// Takes out of `wanted` the partitions of topics the caller may not READ: answered
/// TOPIC_AUTHORIZATION_FAILED.
fn unauthorized_fetch(
    shared: &Shared,
    caller: &Caller,
    wanted: &mut Vec<v1::FetchPartition>,
) -> Vec<v1::FetchPartitionResponse> {
    let mut refused = Vec::new();
    wanted.retain(|p| {
        if caller.may_topic(shared, op::READ, &p.topic) {
            return true;
        }
        refused.push(v1::FetchPartitionResponse {
            topic: p.topic.clone(),
            partition: p.partition,
            error_code: i32::from(acls::TOPIC_AUTHORIZATION_FAILED),
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            ..Default::default()
        });
        false
    });
    refused
}

/// Takes out of `wanted` the partitions of topics the caller may not DESCRIBE.
fn unauthorized_list_offsets(
    shared: &Shared,
    caller: &Caller,
    wanted: &mut Vec<v1::ListOffsetsPartition>,
) -> Vec<v1::ListOffsetsPartitionResponse> {
    let mut refused = Vec::new();
    wanted.retain(|p| {
        if caller.may_topic(shared, op::DESCRIBE, &p.topic) {
            return true;
        }
        refused.push(v1::ListOffsetsPartitionResponse {
            topic: p.topic.clone(),
            partition: p.partition,
            error_code: i32::from(acls::TOPIC_AUTHORIZATION_FAILED),
            offset: -1,
            timestamp: -1,
            leader_epoch: -1,
            ..Default::default()
        });
        false
    });
    refused
}

/// The live brokers that serve Kafka, with the host and port of their listener.
pub(super) fn kafka_endpoints(
    brokers: &[v1::BrokerInfo],
) -> impl Iterator<Item = (&v1::BrokerInfo, StrBytes, i32)> {
    brokers
        .iter()
        .filter(|b| b.alive && !b.kafka_addr.is_empty())
        .filter_map(|b| {
            let (host, port) = b.kafka_addr.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((
                b,
                StrBytes::from_string(host.to_string()),
                port.parse().ok()?,
            ))
        })
}

/// Kafka's Metadata answer from the broker's view `md`, as broker `me` gives it.
fn metadata_response(me: u32, md: v1::MetadataResponse) -> MetadataResponse {
    let brokers = kafka_endpoints(&md.brokers)
        .map(|(b, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id as i32))
                .with_host(host)
                .with_port(port)
                .with_rack((!b.rack.is_empty()).then(|| StrBytes::from_string(b.rack.clone())))
        })
        .collect();
    let topics = md
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_error_code(code(p.error_code))
                        .with_partition_index(p.partition as i32)
                        .with_leader_id(BrokerId(p.leader))
                        .with_leader_epoch(p.leader_epoch)
                        .with_replica_nodes(
                            p.replicas.iter().map(|r| BrokerId(*r as i32)).collect(),
                        )
                        .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r as i32)).collect())
                })
                .collect();
            MetadataResponseTopic::default()
                .with_error_code(code(t.error_code))
                .with_name(Some(name(&t.name)))
                .with_topic_id(uuid::Uuid::try_parse(&t.topic_id).unwrap_or_default())
                .with_is_internal(t.name == crate::server::OFFSETS_TOPIC)
                .with_partitions(partitions)
        })
        .collect();
    // Admin requests go to the "controller"; every broker forwards them to the real one.
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(me as i32))
        .with_topics(topics)
}

/// Takes out of `r` the partitions whose records are not exactly one batch, and
/// answers them INVALID_RECORD as Kafka does (Produce v3+ carries one batch per
/// partition; the gRPC path takes several).
fn not_one_batch(r: &mut ProduceRequest) -> Vec<v1::ProducePartitionResponse> {
    let mut refused = Vec::new();
    for t in &mut r.topic_data {
        t.partition_data.retain(|p| {
            let records = p.records.as_deref().unwrap_or_default();
            // base offset (8), then the batch length: what follows it
            let first_batch = records
                .get(8..12)
                .map(|b| 12 + i32::from_be_bytes([b[0], b[1], b[2], b[3]]).max(0) as usize);
            let one = first_batch.is_some_and(|size| size >= records.len());
            if !one {
                refused.push(v1::ProducePartitionResponse {
                    topic: t.name.0.to_string(),
                    partition: p.index.max(0) as u32,
                    error_code: ErrorCode::InvalidRecord.code(),
                    error_message:
                        "a Produce request carries exactly one record batch per partition"
                            .to_string(),
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                    invalid_records: Vec::new(),
                });
            }
            one
        });
    }
    refused
}

/// Whether any partition's records start with a transactional batch (attribute bit 4).
fn has_transactional_batch(r: &ProduceRequest) -> bool {
    const ATTRIBUTES_AT: usize = 21;
    r.topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .any(|p| {
            p.records
                .as_deref()
                .and_then(|b| b.get(ATTRIBUTES_AT..ATTRIBUTES_AT + 2))
                .is_some_and(|a| u16::from_be_bytes([a[0], a[1]]) & 0x10 != 0)
        })
}

/// Every partition of `r` answered `code`.
fn refuse_all(r: &ProduceRequest, code: ErrorCode) -> v1::ProduceResponse {
    let partitions = r
        .topic_data
        .iter()
        .flat_map(|t| {
            t.partition_data
                .iter()
                .map(|p| v1::ProducePartitionResponse {
                    topic: t.name.0.to_string(),
                    partition: p.index.max(0) as u32,
                    error_code: code.code(),
                    error_message: format!("{code}"),
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                    invalid_records: Vec::new(),
                })
        })
        .collect();
    v1::ProduceResponse { partitions }
}

fn produce_request(r: ProduceRequest) -> v1::ProduceRequest {
    let partitions = r
        .topic_data
        .into_iter()
        .flat_map(|t| {
            let topic = t.name.0.to_string();
            t.partition_data
                .into_iter()
                .map(move |p| v1::ProducePartition {
                    topic: topic.clone(),
                    partition: p.index.max(0) as u32,
                    records: p.records.unwrap_or_default(),
                    topic_id: String::new(),
                })
        })
        .collect();
    v1::ProduceRequest {
        acks: i32::from(r.acks),
        timeout_ms: r.timeout_ms.max(1) as u32,
        partitions,
    }
}

fn produce_response(r: v1::ProduceResponse) -> ProduceResponse {
    let mut topics: Vec<TopicProduceResponse> = Vec::new();
    for p in r.partitions {
        // KIP-467 (v8+; older versions leave it out): each refused record by its position.
        let record_errors = p
            .invalid_records
            .iter()
            .map(|&i| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(i as i32)
                    .with_batch_index_error_message(
                        (!p.error_message.is_empty())
                            .then(|| StrBytes::from_string(p.error_message.clone())),
                    )
            })
            .collect();
        let answer = PartitionProduceResponse::default()
            .with_record_errors(record_errors)
            .with_index(p.partition as i32)
            .with_error_code(code(p.error_code))
            .with_base_offset(p.base_offset)
            .with_log_append_time_ms(p.log_append_time)
            .with_log_start_offset(p.log_start_offset)
            .with_error_message(
                (!p.error_message.is_empty()).then(|| StrBytes::from_string(p.error_message)),
            );
        match topics.iter_mut().find(|t| t.name.0.as_str() == p.topic) {
            Some(t) => t.partition_responses.push(answer),
            None => topics.push(
                TopicProduceResponse::default()
                    .with_name(name(&p.topic))
                    .with_partition_responses(vec![answer]),
            ),
        }
    }
    ProduceResponse::default().with_responses(topics)
}

/// KIP-320: where each asked epoch ended on this leader, so a consumer can tell whether
/// its position survived a truncation.
fn offset_for_leader_epoch(
    shared: &Shared,
    r: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let topic = t.topic.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let tp =
                        sluice_proto::TopicPartition::new(topic.clone(), p.partition.max(0) as u32);
                    let current = LeaderEpoch::from_wire(p.current_leader_epoch);
                    let answer = EpochEndOffset::default().with_partition(p.partition);
                    match u32::try_from(p.leader_epoch) {
                        Err(_) => answer.with_error_code(ErrorCode::InvalidRequest.code() as i16),
                        Ok(epoch) => {
                            match shared.replicas.offset_for_leader_epoch(&tp, current, epoch) {
                                Ok(Some((epoch, end))) => answer
                                    .with_leader_epoch(epoch as i32)
                                    .with_end_offset(end as i64),
                                Ok(None) => answer.with_leader_epoch(-1).with_end_offset(-1),
                                Err((code, _)) => answer
                                    .with_error_code(code.code() as i16)
                                    .with_leader_epoch(-1)
                                    .with_end_offset(-1),
                            }
                        }
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

fn list_offsets_request(r: &ListOffsetsRequest) -> Vec<v1::ListOffsetsPartition> {
    r.topics
        .iter()
        .flat_map(|t| {
            let topic = t.name.0.to_string();
            t.partitions.iter().map(move |p| v1::ListOffsetsPartition {
                topic: topic.clone(),
                partition: p.partition_index.max(0) as u32,
                timestamp: p.timestamp,
            })
        })
        .collect()
}

fn list_offsets_response(
    version: i16,
    listed: Vec<v1::ListOffsetsPartitionResponse>,
) -> ListOffsetsResponse {
    let mut topics: Vec<ListOffsetsTopicResponse> = Vec::new();
    for p in listed {
        let mut answer = ListOffsetsPartitionResponse::default()
            .with_partition_index(p.partition as i32)
            .with_error_code(code(p.error_code))
            .with_timestamp(p.timestamp)
            .with_offset(p.offset);
        if version >= 4 {
            answer.leader_epoch = p.leader_epoch;
        }
        match topics.iter_mut().find(|t| t.name.0.as_str() == p.topic) {
            Some(t) => t.partitions.push(answer),
            None => topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(name(&p.topic))
                    .with_partitions(vec![answer]),
            ),
        }
    }
    ListOffsetsResponse::default().with_topics(topics)
}

#[cfg(test)]
#[path = "apis_tests.rs"]
mod tests;
