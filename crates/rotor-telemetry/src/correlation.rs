//! The correlation id of a request: the client's `Correlation-Id` (Key Protect's name, which a
//! Key Protect SDK sets to its caller's id beside an `X-Correlation-Id` of its own making) or
//! `X-Correlation-Id`, the first well formed, else a fresh UUID. It is a field of every log line
//! written while the request is served, comes back in the response headers, and travels with
//! the service's calls to units so that their log lines carry it too.

use std::future::Future;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The header rotor returns, sends to units, and reads when there is no Key Protect one.
pub const HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// The header Key Protect clients send and expect back, read first.
pub const KEY_PROTECT_HEADER: HeaderName = HeaderName::from_static("correlation-id");

/// The longest id taken from a client.
pub const MAX_LEN: usize = 64;

/// A well-formed correlation id: 1 to [`MAX_LEN`] characters of `[A-Za-z0-9._-]`, so it can
/// neither break a log line nor a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorrelationId(HeaderValue);

impl CorrelationId {
    /// The id `text` names, if it is well formed.
    pub fn parse(text: &str) -> Option<Self> {
        let well_formed = (1..=MAX_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
        if !well_formed {
            return None;
        }
        HeaderValue::from_str(text).ok().map(Self)
    }

    /// A fresh random id (a v4 UUID).
    pub fn fresh() -> Self {
        Self(
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).unwrap_or(
                // A UUID's text is always a valid header value; this is never reached.
                HeaderValue::from_static("unknown"),
            ),
        )
    }

    /// The id a request carries in [`KEY_PROTECT_HEADER`] or [`HEADER`], the first well-formed
    /// one; a fresh one when neither is.
    pub fn of(headers: &HeaderMap) -> Self {
        [KEY_PROTECT_HEADER, HEADER]
            .iter()
            .filter_map(|name| headers.get(name)?.to_str().ok())
            .find_map(Self::parse)
            .unwrap_or_else(Self::fresh)
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        // Only well-formed ASCII is ever stored.
        self.0.to_str().unwrap_or_default()
    }

    /// Sets the id on a response (both header names: rotor's and Key Protect's).
    pub fn set_on(&self, headers: &mut HeaderMap) {
        headers.insert(HEADER, self.0.clone());
        headers.insert(KEY_PROTECT_HEADER, self.0.clone());
    }

    /// The header value, to send on a call made for this request.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

tokio::task_local! {
    static CURRENT: CorrelationId;
}

/// Runs `future` as part of the request `id`: [`current`] answers `id` inside it.
pub async fn scope<F: Future>(id: CorrelationId, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

/// The correlation id of the request this task serves, if it serves one (work spawned onto
/// other tasks, such as the rotation engine, has none).
pub fn current() -> Option<CorrelationId> {
    CURRENT.try_with(Clone::clone).ok()
}
