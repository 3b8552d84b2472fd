//! Typed error codes on gRPC statuses, for answers given before a request reaches its
//! handler, where there is no response message to carry a code: a broker that is not
//! ready yet (not registered with the controller, or without its metadata) answers every
//! client request with UNAVAILABLE carrying BROKER_NOT_AVAILABLE, and clients retry it
//! within their timeout like any retriable code (docs/cluster.md, "Readiness").
//!
//! The code travels in the `sluice-error-code` metadata entry (decimal, Kafka's number),
//! beside the human message.

use crate::ErrorCode;

/// Metadata key of the typed code on a status.
pub const ERROR_CODE_KEY: &str = "sluice-error-code";

/// An UNAVAILABLE status carrying `code`.
pub fn unavailable(code: ErrorCode, message: impl Into<String>) -> tonic::Status {
    let mut status = tonic::Status::unavailable(message);
    if let Ok(value) = code.code().to_string().parse() {
        status.metadata_mut().insert(ERROR_CODE_KEY, value);
    }
    status
}

/// The typed code a status carries, if any.
pub fn error_code(status: &tonic::Status) -> Option<ErrorCode> {
    let value = status.metadata().get(ERROR_CODE_KEY)?.to_str().ok()?;
    value.parse().ok().map(ErrorCode::from_code)
}

/// The status a broker answers client requests with until it is ready.
pub fn not_ready(message: impl Into<String>) -> tonic::Status {
    unavailable(ErrorCode::BrokerNotAvailable, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_survives_the_status_and_plain_statuses_have_none() {
        let s = not_ready("broker 1 is not ready");
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(error_code(&s), Some(ErrorCode::BrokerNotAvailable));
        assert!(error_code(&s).is_some_and(|c| c.is_retriable()));
        assert_eq!(error_code(&tonic::Status::unavailable("refused")), None);
    }
}
