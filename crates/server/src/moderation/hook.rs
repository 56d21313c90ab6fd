//! The moderation hook: before a message is stored, an HTTP call to the operator's classifier
//! (an ML toxicity model, say), off by default.
//!
//! `POST <hook_url>` with `{"room","author","body"}`; the classifier answers `2xx` with
//! `{"action":"allow"|"flag"|"block","reason"?}`. Everything about the call is bounded:
//! - time: the whole call (connect, send, answer) within `hook_timeout_ms`;
//! - size: an answer over [`MAX_ANSWER_BYTES`] is a failure, read no further;
//! - concurrency: at most `hook_concurrency` calls in flight per node; a send that finds none
//!   free does not wait (so a hanging classifier cannot pile up work or hold sends in a queue);
//! - reach: no redirects, and no connection to a loopback, private, link-local or otherwise
//!   internal address (checked on every address a name resolves to, at connect time, so a name
//!   cannot be re-pointed after a check) unless `hook_allow_private` is set.
//!
//! A call that fails in any of these ways (or answers non-2xx, or nonsense) is handled by
//! `hook_fail_open`: the message goes through (open) or is refused with `503 unavailable` and a
//! retry hint (closed). Only this message waits for its own call: other connections' sends, in
//! this room or any other, never wait on the hook.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use serde::{Deserialize, Serialize};
use switchboard_protocol::codes::error as code;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Largest answer read from the classifier.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// How the hook is set up (from the configuration).
#[derive(Debug, Clone)]
pub struct HookOptions {
    /// Where to call (`http://` or `https://`).
    pub url: String,
    /// Longest wait for the whole call.
    pub timeout: Duration,
    /// Let messages through when the classifier cannot be asked.
    pub fail_open: bool,
    /// Allow loopback and private addresses (a classifier on the same host or network).
    pub allow_private: bool,
    /// Calls in flight at once on this node.
    pub concurrency: usize,
}

/// Why the hook cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The URL is not an http(s) URL, or names a private address without `hook_allow_private`.
    #[error("hook_url: {0}")]
    BadUrl(String),
    /// The HTTP client could not be built.
    #[error("hook client: {0}")]
    Client(String),
}

/// What the classifier decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it.
    Allow,
    /// Store it, with an audit entry (the classifier's reason).
    Flag(String),
    /// Refuse it (the classifier's reason, for the audit log).
    Block(String),
}

#[derive(Serialize)]
struct Ask<'a> {
    room: &'a str,
    author: &'a str,
    body: &'a str,
}

#[derive(Deserialize)]
struct Answer {
    action: String,
    #[serde(default)]
    reason: Option<String>,
}

/// The HTTP client: HTTP/1 over plain TCP or TLS (rustls with ring, the system's roots), on a
/// resolver that keeps internal addresses out.
type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector<Guarded>>,
    http_body_util::Full<bytes::Bytes>,
>;

/// The hook of one node.
pub struct Hook {
    client: HttpClient,
    url: axum::http::Uri,
    timeout: Duration,
    fail_open: bool,
    permits: Arc<Semaphore>,
}

impl Hook {
    /// Builds the client; refuses a URL that cannot be used.
    pub fn new(opts: &HookOptions) -> Result<Hook, HookError> {
        let url: axum::http::Uri =
            opts.url.parse().map_err(|e: axum::http::uri::InvalidUri| HookError::BadUrl(e.to_string()))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none_or(str::is_empty) {
            return Err(HookError::BadUrl("must be an http:// or https:// URL with a host".into()));
        }
        // A literal address never goes through the resolver: check it here.
        let host = url.host().unwrap_or_default();
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        if let Some(ip) = literal
            && internal(ip)
            && !opts.allow_private
        {
            return Err(HookError::BadUrl(format!("{ip} is not a public address (set hook_allow_private)")));
        }
        let mut http = HttpConnector::new_with_resolver(Guarded { allow_private: opts.allow_private });
        http.enforce_http(false);
        http.set_connect_timeout(Some(opts.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| HookError::Client(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(opts.concurrency.min(64))
            .build(https);
        Ok(Hook {
            client,
            url,
            timeout: opts.timeout,
            fail_open: opts.fail_open,
            permits: Arc::new(Semaphore::new(opts.concurrency.max(1))),
        })
    }

    /// Asks the classifier about a message: its verdict, or, when it cannot be asked, `Allow`
    /// (fail open) or a `503` (fail closed).
    pub async fn check(&self, room: &str, author: &str, body: &str) -> Result<Verdict, ApiError> {
        match self.ask(room, author, body).await {
            Ok(v) => Ok(v),
            Err(why) => {
                tracing::warn!(room, error = %why, fail_open = self.fail_open, "the moderation hook failed");
                if self.fail_open {
                    Ok(Verdict::Allow)
                } else {
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        code::UNAVAILABLE,
                        "messages cannot be checked right now: try again shortly",
                    )
                    .retry_after(Duration::from_secs(1)))
                }
            }
        }
    }

    async fn ask(&self, room: &str, author: &str, body: &str) -> Result<Verdict, String> {
        use http_body_util::BodyExt;
        let _permit = self.permits.try_acquire().map_err(|_| "too many calls in flight".to_owned())?;
        let payload = serde_json::to_vec(&Ask { room, author, body }).map_err(|e| e.to_string())?;
        let request = axum::http::Request::post(self.url.clone())
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(payload)))
            .map_err(|e| e.to_string())?;
        let call = async {
            let resp = self.client.request(request).await.map_err(|e| format!("{e:?}"))?;
            if !resp.status().is_success() {
                return Err(format!("answered {}", resp.status()));
            }
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES);
            let bytes = limited.collect().await.map_err(|e| format!("reading the answer: {e}"))?.to_bytes();
            let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| format!("bad answer: {e}"))?;
            let reason = answer.reason.unwrap_or_default().chars().take(200).collect::<String>();
            match answer.action.as_str() {
                "allow" => Ok(Verdict::Allow),
                "flag" => Ok(Verdict::Flag(reason)),
                "block" => Ok(Verdict::Block(reason)),
                other => Err(format!("unknown action {other:?}")),
            }
        };
        tokio::time::timeout(self.timeout, call).await.map_err(|_| "timed out".to_owned())?
    }
}

/// Resolves names as the system does, keeping only public addresses (unless allowed).
#[derive(Clone)]
struct Guarded {
    allow_private: bool,
}

impl tower::Service<Name> for Guarded {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> =
                found.into_iter().filter(|a| allow_private || !internal(a.ip())).collect();
            if usable.is_empty() {
                return Err(std::io::Error::other(format!("{host} resolves to no public address")));
            }
            Ok(usable.into_iter())
        })
    }
}

/// Whether an address is not on the public internet: loopback, private, link-local, CGNAT,
/// unspecified, broadcast, multicast, documentation, or IPv6 unique-local (also as IPv4-mapped).
pub fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_told_apart() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            assert!(!internal(ip.parse().unwrap()), "{ip}");
        }
    }

    fn opts(url: &str, allow_private: bool) -> HookOptions {
        HookOptions {
            url: url.into(),
            timeout: Duration::from_millis(300),
            fail_open: true,
            allow_private,
            concurrency: 4,
        }
    }

    #[test]
    fn urls_are_checked_when_set_up() {
        assert!(Hook::new(&opts("ftp://example.com/x", false)).is_err());
        assert!(Hook::new(&opts("not a url", false)).is_err());
        assert!(Hook::new(&opts("http://127.0.0.1:9/x", false)).is_err());
        assert!(Hook::new(&opts("http://[::1]:9/x", false)).is_err());
        assert!(Hook::new(&opts("http://127.0.0.1:9/x", true)).is_ok());
        assert!(Hook::new(&opts("https://classifier.example.com/v1", false)).is_ok());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_private_address_is_not_called() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://localhost:{}/x", listener.local_addr().unwrap().port());
        // `localhost` resolves to loopback: no connection is made, and the message goes
        // through (fail open).
        let hook = Hook::new(&opts(&url, false)).unwrap();
        assert!(hook.ask("r", "u", "hi").await.is_err());
        assert_eq!(hook.check("r", "u", "hi").await.unwrap(), Verdict::Allow);
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "no connection reached the private address");
        // Allowed, the same name is called.
        let hook = Hook::new(&opts(&url, true)).unwrap();
        let call = tokio::spawn(async move { hook.ask("r", "u", "hi").await });
        let accepted = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
        assert!(accepted.is_ok_and(|a| a.is_ok()), "connects when private addresses are allowed");
        call.abort();
    }
}
