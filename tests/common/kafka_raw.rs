//! Kafka's protocol by hand (the kafka-protocol crate's types over a plain socket), one
//! request at a time, for the cases no client run here exercises on purpose: error
//! answers, stale epochs, old versions, and the same request sent to Sluice and to
//! Apache Kafka (tests/kafka_diff.rs).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

pub struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    pub fn open(addr: &str) -> Conn {
        Conn::try_open(addr).expect("connect to the Kafka listener")
    }

    /// A connection whose reads give up after 20 s (a long-polling fetch waits less).
    pub fn try_open(addr: &str) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Conn {
            stream,
            correlation: 0,
        })
    }

    /// Sends `req` as `key` version `version`; the decoded answer.
    pub fn call(&mut self, key: ApiKey, version: i16, req: RequestKind) -> ResponseKind {
        self.try_call(key, version, req)
            .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"))
    }

    /// [`Conn::call`], with a closed connection or a bad answer as an error.
    pub fn try_call(
        &mut self,
        key: ApiKey,
        version: i16,
        req: RequestKind,
    ) -> Result<ResponseKind, String> {
        let mut body = self.exchange(key, version, |buf| req.encode(buf, version))?;
        ResponseKind::decode(key, &mut body, version).map_err(|e| e.to_string())
    }

    /// Sends the typed request `req` as version `version`; its typed answer, which must
    /// fill the frame exactly.
    pub fn send<R: Request>(&mut self, req: &R, version: i16) -> R::Response {
        let key = ApiKey::try_from(R::KEY).expect("a known API key");
        let mut body = self
            .exchange(key, version, |buf| req.encode(buf, version))
            .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
        let answer = R::Response::decode(&mut body, version)
            .unwrap_or_else(|e| panic!("{key:?} v{version} answer: {e}"));
        assert!(!body.has_remaining(), "{key:?} v{version}: bytes left");
        answer
    }

    /// Frames and sends one request; the answer's body after its header.
    fn exchange(
        &mut self,
        key: ApiKey,
        version: i16,
        encode: impl FnOnce(&mut BytesMut) -> anyhow::Result<()>,
    ) -> Result<Bytes, String> {
        self.correlation += 1;
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("raw")))
            .encode(&mut buf, key.request_header_version(version))
            .map_err(|e| e.to_string())?;
        encode(&mut buf).map_err(|e| format!("encode: {e}"))?;
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        self.stream
            .write_all(&frame)
            .map_err(|e| format!("send: {e}"))?;
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| format!("no answer: {e}"))?;
        let mut body = vec![0u8; i32::from_be_bytes(size).max(0) as usize];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| format!("answer cut short: {e}"))?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, key.response_header_version(version))
            .map_err(|e| e.to_string())?;
        if header.correlation_id != self.correlation {
            return Err(format!(
                "correlation id {} answered {}",
                self.correlation, header.correlation_id
            ));
        }
        Ok(body)
    }
}
