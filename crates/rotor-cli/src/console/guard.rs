//! Who may talk to the console: only a page that holds the session token, served from the
//! console's own origin. The token travels in the URL (`?token=`) of every request; a
//! state-changing request must also carry the console's own `Origin`, so another site open in
//! the same browser cannot drive it, and the `Host` must be the console's address, so a DNS
//! name rebound to loopback cannot reach it either.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Why a request is refused. Every case is answered 403 with this text and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(super) enum Refusal {
    /// The URL carries no session token, or another one.
    Token,
    /// The `Host` header is not the console's address.
    Host,
    /// A state-changing request without the console's own `Origin`.
    Origin,
}

impl Refusal {
    fn text(self) -> &'static str {
        match self {
            Self::Token => "forbidden: this URL lacks the console's session token",
            Self::Host => "forbidden: the console answers only on its loopback address",
            Self::Origin => "forbidden: the request does not come from the console's own page",
        }
    }
}

/// The console's address and session token.
#[derive(Clone)]
pub(super) struct Guard {
    token: String,
    address: SocketAddr,
}

impl Guard {
    /// A guard for the console listening on `address` with `token`.
    pub(super) fn new(token: String, address: SocketAddr) -> Self {
        Self { token, address }
    }

    /// The origin the console's pages have.
    pub(super) fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Checks one request: its query string, method and headers.
    pub(super) fn check(
        &self,
        query: Option<&str>,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if host != Some(self.address.to_string().as_str()) {
            return Err(Refusal::Host);
        }
        let given = query
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .unwrap_or_default();
        if !rotor_crypto::constant_time_eq(given.as_bytes(), self.token.as_bytes()) {
            return Err(Refusal::Token);
        }
        let safe = matches!(*method, Method::GET | Method::HEAD);
        if !safe {
            let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
            if origin != Some(self.origin().as_str()) {
                return Err(Refusal::Origin);
            }
        }
        Ok(())
    }
}

/// The middleware in front of every route.
pub(super) async fn enforce(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    match guard.check(request.uri().query(), request.method(), request.headers()) {
        Ok(()) => {
            let mut response = next.run(request).await;
            let headers = response.headers_mut();
            // The token is in the URL: it must not leave in a Referer; nothing may frame the
            // console; only its own inline script and style run.
            for (name, value) in [
                ("referrer-policy", "no-referrer"),
                ("x-frame-options", "DENY"),
                ("x-content-type-options", "nosniff"),
                ("cache-control", "no-store"),
                (
                    "content-security-policy",
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
                ),
            ] {
                headers.insert(name, header::HeaderValue::from_static(value));
            }
            response
        }
        Err(refusal) => (StatusCode::FORBIDDEN, refusal.text()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new("ab12".to_owned(), "127.0.0.1:4000".parse().unwrap())
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_page_with_the_token_is_served() {
        let host = headers(&[(header::HOST, "127.0.0.1:4000")]);
        assert_eq!(
            guard().check(Some("tab=units&token=ab12"), &Method::GET, &host),
            Ok(())
        );
    }

    #[test]
    fn a_request_without_the_right_token_is_refused() {
        let host = headers(&[(header::HOST, "127.0.0.1:4000")]);
        for query in [
            None,
            Some(""),
            Some("token="),
            Some("token=ab1"),
            Some("token=ab123"),
        ] {
            assert_eq!(
                guard().check(query, &Method::GET, &host),
                Err(Refusal::Token)
            );
        }
    }

    #[test]
    fn another_host_name_is_refused_even_with_the_token() {
        let host = headers(&[(header::HOST, "attacker.example:4000")]);
        assert_eq!(
            guard().check(Some("token=ab12"), &Method::GET, &host),
            Err(Refusal::Host)
        );
        assert_eq!(
            guard().check(Some("token=ab12"), &Method::GET, &HeaderMap::new()),
            Err(Refusal::Host)
        );
    }

    #[test]
    fn a_post_needs_the_consoles_own_origin() {
        let own = headers(&[
            (header::HOST, "127.0.0.1:4000"),
            (header::ORIGIN, "http://127.0.0.1:4000"),
        ]);
        assert_eq!(
            guard().check(Some("token=ab12"), &Method::POST, &own),
            Ok(())
        );
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:4001",
            "https://127.0.0.1:4000",
            "null",
        ] {
            let cross = headers(&[(header::HOST, "127.0.0.1:4000"), (header::ORIGIN, origin)]);
            assert_eq!(
                guard().check(Some("token=ab12"), &Method::POST, &cross),
                Err(Refusal::Origin),
                "{origin}"
            );
        }
        let none = headers(&[(header::HOST, "127.0.0.1:4000")]);
        assert_eq!(
            guard().check(Some("token=ab12"), &Method::POST, &none),
            Err(Refusal::Origin)
        );
    }
}
