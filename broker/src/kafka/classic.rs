//! The classic group protocol over the Kafka listener: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup and DescribeGroups decoded, handed to `server::classic`, and encoded.
//! Metadata and assignments stay opaque bytes (the client-side assignor reads them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_proto::ErrorCode;

use super::apis::code;
use crate::group::classic::JoinRequest;
use crate::server::classic;
use crate::server::Shared;

fn s(v: String) -> StrBytes {
    StrBytes::from_string(v)
}

fn opt(v: &Option<StrBytes>) -> Option<String> {
    v.as_ref().map(|s| s.to_string()).filter(|s| !s.is_empty())
}

pub(crate) async fn join_group(
    shared: &Arc<Shared>,
    version: i16,
    r: JoinGroupRequest,
    client_id: Option<&str>,
    peer: SocketAddr,
) -> JoinGroupResponse {
    let session = Duration::from_millis(r.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout: the session timeout stands for it.
    let rebalance = if version >= 1 {
        Duration::from_millis(r.rebalance_timeout_ms.max(0) as u64)
    } else {
        session
    };
    let req = JoinRequest {
        member_id: r.member_id.to_string(),
        instance_id: opt(&r.group_instance_id),
        client_id: client_id.unwrap_or_default().to_string(),
        client_host: format!("/{}", peer.ip()),
        session_timeout: session,
        rebalance_timeout: rebalance,
        protocol_type: r.protocol_type.to_string(),
        protocols: r
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.to_vec()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let out = JoinGroupResponse::default().with_generation_id(-1);
    let mut out = match classic::join(shared, r.group_id.to_string(), req).await {
        Ok(reply) => {
            let mut out = out
                .with_generation_id(reply.generation)
                .with_leader(s(reply.leader))
                .with_member_id(s(reply.member_id))
                .with_members(
                    reply
                        .members
                        .into_iter()
                        .map(|(id, instance, metadata)| {
                            JoinGroupResponseMember::default()
                                .with_member_id(s(id))
                                .with_group_instance_id(instance.map(s))
                                .with_metadata(Bytes::from(metadata))
                        })
                        .collect(),
                );
            out.protocol_name = Some(s(reply.protocol));
            if version >= 7 {
                out.protocol_type = Some(s(reply.protocol_type));
            }
            out
        }
        Err((ErrorCode::MemberIdRequired, member_id)) => out
            .with_error_code(ErrorCode::MemberIdRequired.code() as i16)
            .with_member_id(s(member_id)),
        Err((c, _)) => out.with_error_code(code(c.code())),
    };
    // Not nullable before v7.
    if version < 7 && out.protocol_name.is_none() {
        out.protocol_name = Some(StrBytes::default());
    }
    out
}

pub(crate) async fn sync_group(shared: &Arc<Shared>, r: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = r
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
        .collect();
    let protocol = (opt(&r.protocol_type), opt(&r.protocol_name));
    match classic::sync(
        shared,
        r.group_id.to_string(),
        r.member_id.to_string(),
        opt(&r.group_instance_id),
        r.generation_id,
        protocol,
        assignments,
    )
    .await
    {
        Ok(reply) => SyncGroupResponse::default()
            .with_protocol_type(Some(s(reply.protocol_type)))
            .with_protocol_name(Some(s(reply.protocol)))
            .with_assignment(Bytes::from(reply.assignment)),
        Err((c, _)) => SyncGroupResponse::default().with_error_code(code(c.code())),
    }
}

pub(crate) async fn heartbeat(shared: &Arc<Shared>, r: HeartbeatRequest) -> HeartbeatResponse {
    let result = classic::heartbeat(
        shared,
        r.group_id.to_string(),
        r.member_id.to_string(),
        opt(&r.group_instance_id),
        r.generation_id,
    )
    .await;
    HeartbeatResponse::default().with_error_code(match result {
        Ok(()) => 0,
        Err((c, _)) => code(c.code()),
    })
}

/// LeaveGroup: v0–2 name one member (its error is the response's), v3+ a list.
pub(crate) async fn leave_group(
    shared: &Arc<Shared>,
    version: i16,
    r: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        r.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt(&m.group_instance_id)))
            .collect()
    } else {
        vec![(r.member_id.to_string(), None)]
    };
    match classic::leave(shared, r.group_id.to_string(), leaving.clone()).await {
        Err((c, _)) => LeaveGroupResponse::default().with_error_code(code(c.code())),
        Ok(results) if version < 3 => LeaveGroupResponse::default().with_error_code(
            results
                .first()
                .and_then(|r| r.as_ref().err())
                .map_or(0, |(c, _)| code(c.code())),
        ),
        Ok(results) => LeaveGroupResponse::default().with_members(
            leaving
                .into_iter()
                .zip(results)
                .map(|((member_id, instance), result)| {
                    let (id, error) = match result {
                        Ok(id) => (id, 0),
                        Err((c, _)) => (member_id, code(c.code())),
                    };
                    MemberResponse::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(instance.map(s))
                        .with_error_code(error)
                })
                .collect(),
        ),
    }
}

/// DescribeGroups: classic groups in full; an unknown group is `Dead` with no error (as
/// Kafka answers), a consumer-protocol group GROUP_ID_NOT_FOUND.
pub(crate) async fn describe_groups(
    shared: &Arc<Shared>,
    version: i16,
    r: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::new();
    for g in r.groups {
        let mut out = DescribedGroup::default().with_group_id(g.clone());
        match classic::describe(shared, g.to_string()).await {
            Ok(Some(d)) => {
                out = out
                    .with_group_state(StrBytes::from_static_str(d.state))
                    .with_protocol_type(s(d.protocol_type))
                    .with_protocol_data(s(d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(s(m.member_id))
                                    .with_group_instance_id(if version >= 4 {
                                        m.instance_id.map(s)
                                    } else {
                                        None
                                    })
                                    .with_client_id(s(m.client_id))
                                    .with_client_host(s(m.client_host))
                                    .with_member_metadata(Bytes::from(m.metadata))
                                    .with_member_assignment(Bytes::from(m.assignment))
                            })
                            .collect(),
                    );
            }
            Ok(None) => out = out.with_group_state(StrBytes::from_static_str("Dead")),
            Err((c, _)) => out = out.with_error_code(code(c.code())),
        }
        if version >= 3 {
            // No ACLs: every operation is allowed (Kafka's bit set for a group).
            out.authorized_operations = if r.include_authorized_operations {
                (1 << 3) | (1 << 6) | (1 << 8)
            } else {
                i32::MIN
            };
        }
        groups.push(out);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
