//! The Kafka wire protocol listener (`--kafka-listen`): Kafka clients, tools and
//! connectors reach the same broker internals as the gRPC API.
//!
//! This module frames, decodes, dispatches and encodes; nothing more. Each API maps its
//! request onto the gRPC service's own types and calls the same code (`server::api`), so
//! produce, fetch and metadata have one path whichever protocol a client speaks.
//!
//! Per connection, requests are read and *started* in order (a Produce's appends happen
//! before the next request is read, so an idempotent producer's pipelined batches land
//! in the order it sent them), then finish concurrently (acks=all waits, fetch
//! long-polls) and are answered strictly in request order, as Kafka requires. At most
//! [`IN_FLIGHT_MAX`] requests wait per connection; the reader stops reading past that.
//! A frame over [`FRAME_BYTES_MAX`] (`socket.request.max.bytes`) or one that cannot be
//! framed closes only its connection, with one log line. Produce with acks=0 gets no
//! response.

mod acls;
mod admin;
mod apis;
mod authz;
mod classic;
mod configs;
mod fetch;
mod groups;
mod ops;
mod txn;
mod versions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::server::Shared;

/// Kafka's `socket.request.max.bytes` default: a larger frame closes the connection.
pub const FRAME_BYTES_MAX: usize = 100 * 1024 * 1024;
/// Requests started but not yet answered, per connection.
pub const IN_FLIGHT_MAX: usize = 128;
/// Kafka's `connections.max.idle.ms` default: a connection silent this long is closed.
pub const IDLE_MAX: Duration = Duration::from_secs(600);

/// What a started request ends in.
pub(crate) enum Outcome {
    /// A complete response frame (size prefix included).
    Respond(BytesMut),
    /// No response (Produce with acks=0).
    Silent,
    /// The request cannot be answered: close the connection.
    Close(String),
}

/// A request whose ordered part ran; the rest finishes concurrently.
pub(crate) type Finishing = BoxFuture<'static, Outcome>;

/// Accepts Kafka connections on `listener` until the broker stops.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let mut stopping = shared.stopping.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(shared.clone(), stream, peer));
            }
            Err(e) => {
                // Out of descriptors, mostly: wait rather than spin.
                warn!(error = %e, "Kafka listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(64 * 1024, read);
    let (tx, mut rx) = mpsc::channel::<Finishing>(IN_FLIGHT_MAX);
    // How many requests have been answered (or needed no answer), for the barrier below.
    let (answered_tx, mut answered) = watch::channel(0u64);
    let writer = tokio::spawn(async move {
        while let Some(finishing) = rx.recv().await {
            match finishing.await {
                Outcome::Respond(frame) => {
                    if let Err(e) = write.write_all(&frame).await {
                        debug!(%peer, error = %e, "Kafka connection: write failed");
                        return;
                    }
                    answered_tx.send_modify(|n| *n += 1);
                }
                Outcome::Silent => answered_tx.send_modify(|n| *n += 1),
                Outcome::Close(why) => {
                    info!(%peer, why, "closing a Kafka connection");
                    return;
                }
            }
        }
    });
    let mut stopping = shared.stopping.subscribe();
    let mut started = 0u64;
    loop {
        let size = tokio::select! {
            size = tokio::time::timeout(IDLE_MAX, read.read_i32()) => size,
            _ = stopping.wait_for(|s| *s) => break,
        };
        let size = match size {
            Ok(Ok(size)) => size,
            Ok(Err(_)) => break, // closed by the client
            Err(_) => {
                debug!(%peer, "closing an idle Kafka connection (connections.max.idle.ms)");
                break;
            }
        };
        if size < 8 || size as usize > FRAME_BYTES_MAX {
            warn!(
                %peer,
                size,
                max = FRAME_BYTES_MAX,
                "closing a Kafka connection: a frame of this size is not a request (socket.request.max.bytes)"
            );
            break;
        }
        let mut frame = BytesMut::zeroed(size as usize);
        // A peer that stops mid-frame is idle too: its buffer is not held for good.
        match tokio::time::timeout(IDLE_MAX, read.read_exact(&mut frame)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                debug!(%peer, "closing a Kafka connection stalled inside a frame (connections.max.idle.ms)");
                break;
            }
        }
        let frame = frame.freeze();
        // Group requests start only once every earlier request of the connection is
        // answered, as a Kafka broker serves one request per connection at a time: a
        // Heartbeat a client sends behind its JoinGroup must see the group after that
        // join, not while it waits (kafka-python took such a stale
        // REBALANCE_IN_PROGRESS as a reason to join again, and its group never settled).
        if peek_header(&frame).is_some_and(|(key, _, _)| SEQUENTIAL_KEYS.contains(&key))
            && answered.wait_for(|n| *n >= started).await.is_err()
        {
            break;
        }
        let finishing = apis::start(&shared, frame, peer).await;
        started += 1;
        if tx.send(finishing).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// API keys served strictly after the connection's earlier requests are answered: the
/// group coordinator's (OffsetCommit, OffsetFetch, JoinGroup, Heartbeat, LeaveGroup,
/// SyncGroup, ConsumerGroupHeartbeat).
const SEQUENTIAL_KEYS: [i16; 7] = [8, 9, 11, 12, 13, 14, 68];

/// Frames `body` (already encoded with its response header) with the size prefix.
pub(crate) fn framed(body: BytesMut) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The API key, version and correlation id at the head of every request frame.
/// `None` when the frame is too short to hold them.
pub(crate) fn peek_header(frame: &Bytes) -> Option<(i16, i16, i32)> {
    let head: &[u8; 8] = frame.get(..8)?.try_into().ok()?;
    let key = i16::from_be_bytes([head[0], head[1]]);
    let version = i16::from_be_bytes([head[2], head[3]]);
    let correlation = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    Some((key, version, correlation))
}

#[cfg(test)]
#[path = "fuzz_tests.rs"]
mod fuzz_tests;
