//! The client error type.

use sluice_proto::ErrorCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker answered with an error code.
    #[error("{message} [{code}]")]
    Broker { code: ErrorCode, message: String },
    /// No broker could be reached.
    #[error("cannot reach {addr}: {message}")]
    Unreachable { addr: String, message: String },
    #[error("timed out: {0}")]
    Timeout(String),
    /// A bad argument from the caller.
    #[error("{0}")]
    Invalid(String),
    #[error("the producer is closed")]
    Closed,
}

impl Error {
    pub fn broker(code: i32, message: impl Into<String>) -> Error {
        Error::Broker {
            code: ErrorCode::from_code(code),
            message: message.into(),
        }
    }

    /// Worth retrying after a metadata refresh.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Broker { code, .. } => code.is_retriable(),
            Error::Unreachable { .. } | Error::Timeout(_) => true,
            _ => false,
        }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A failed call. A status that carries a typed code (a broker that is not ready
    /// yet) becomes [`Error::Broker`], so it is retried like any retriable code.
    pub(crate) fn from_status(addr: &str, status: tonic::Status) -> Error {
        match sluice_proto::status::error_code(&status) {
            Some(code) => Error::Broker {
                code,
                message: format!("{addr}: {}", status.message()),
            },
            // A message over the transport's size limit (either side): the same request
            // would be refused again, so it is not an unreachable peer to retry.
            None if status.code() == tonic::Code::OutOfRange
                && status.message().contains("message length too large") =>
            {
                Error::Broker {
                    code: ErrorCode::MessageTooLarge,
                    message: format!("{addr}: {}", status.message()),
                }
            }
            None => Error::Unreachable {
                addr: addr.to_string(),
                message: status.message().to_string(),
            },
        }
    }
}
