//! The server's half of the WebSocket opening handshake (RFC 6455 §4.2), done here rather than
//! by axum's extractor so that the session gets the upgraded connection itself: axum's socket
//! never lets go of tungstenite's state, and the gateway's [`Socket`](super::socket::Socket)
//! drops it while a connection is idle.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use switchboard_protocol::codes::error as code;

use crate::error::ApiError;

/// Checks that a request asks for a version 13 WebSocket and returns its
/// `Sec-WebSocket-Accept`.
pub(crate) fn accept_key(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    let refuse = |status, why: &str| {
        Err(ApiError::new(status, code::INVALID_REQUEST, format!("expected a WebSocket upgrade: {why}")))
    };
    if method != Method::GET {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "the method must be GET");
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return refuse(StatusCode::BAD_REQUEST, "`Connection` must include `upgrade`");
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return refuse(StatusCode::BAD_REQUEST, "`Upgrade` must include `websocket`");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        // RFC 6455 §4.4: a version the server does not speak is answered with the one it does.
        return refuse(StatusCode::UPGRADE_REQUIRED, "`Sec-WebSocket-Version` must be 13");
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|k| !k.is_empty()) else {
        return refuse(StatusCode::BAD_REQUEST, "`Sec-WebSocket-Key` is missing");
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept)
        .or_else(|_| refuse(StatusCode::BAD_REQUEST, "`Sec-WebSocket-Key` is not a header value"))
}

/// The `101 Switching Protocols` answer to an accepted handshake.
pub(crate) fn switching(accept: HeaderValue) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    res
}

/// Whether a comma-separated header (any of its lines) lists `token`, in any case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        h
    }

    #[test]
    fn a_valid_request_gets_the_rfc_accept_key() {
        let accept = accept_key(&Method::GET, &upgrade_headers()).expect("accepted");
        // The example of RFC 6455 §1.3.
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn each_missing_part_is_refused_with_its_own_status() {
        type Edit = fn(&mut HeaderMap);
        let cases: [(Method, Edit, Option<StatusCode>); 6] = [
            (Method::POST, |_| {}, Some(StatusCode::METHOD_NOT_ALLOWED)),
            (
                Method::GET,
                |h| {
                    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
                },
                Some(StatusCode::BAD_REQUEST),
            ),
            (
                Method::GET,
                |h| {
                    h.remove(header::UPGRADE);
                },
                Some(StatusCode::BAD_REQUEST),
            ),
            (
                Method::GET,
                |h| {
                    h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
                },
                Some(StatusCode::UPGRADE_REQUIRED),
            ),
            (
                Method::GET,
                |h| {
                    h.remove(header::SEC_WEBSOCKET_KEY);
                },
                Some(StatusCode::BAD_REQUEST),
            ),
            // Tokens are compared without case.
            (
                Method::GET,
                |h| {
                    h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
                },
                None,
            ),
        ];
        for (i, (method, edit, refused)) in cases.into_iter().enumerate() {
            let mut h = upgrade_headers();
            edit(&mut h);
            let got = accept_key(&method, &h).err().map(|e| (e.status, e.code));
            assert_eq!(got, refused.map(|s| (s, code::INVALID_REQUEST)), "case {i}");
        }
    }
}
