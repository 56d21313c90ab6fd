//! Extractors whose rejections are JSON errors with codes, like every other error.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use switchboard_protocol::User;
use switchboard_protocol::codes::error as code;

use crate::app::AppState;
use crate::auth::Verified;
use crate::error::ApiError;

/// The caller, from `Authorization: Bearer <token>`.
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(AuthUser(AuthSession::from_request_parts(parts, state).await?.0.user))
    }
}

/// The caller with their session, for the calls that end it.
pub struct AuthSession(pub Verified);

impl FromRequestParts<AppState> for AuthSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthorized("Authorization must be a Bearer token"))?;
        Ok(AuthSession(state.auth.verify(token.trim(), &state.store).await?))
    }
}

/// The client's address: the peer of the connection, or the last `X-Forwarded-For` entry when
/// the node is configured to sit behind its own proxy.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.cfg.trust_forwarded_for {
            // The last entry is what our own proxy saw; anything before it the client wrote.
            let last = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .map(str::trim);
            return match last.map(str::parse::<IpAddr>) {
                Some(Ok(ip)) => Ok(ClientIp(ip)),
                _ => {
                    Err(ApiError::bad_request(code::INVALID_REQUEST, "X-Forwarded-For has no client address"))
                }
            };
        }
        crate::listener::peer(&parts.extensions)
            .map(|a| ClientIp(a.ip()))
            .ok_or_else(|| ApiError::internal("request without a peer address"))
    }
}

/// `Json<T>` with coded rejections, read within the body deadline.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let deadline = Duration::from_millis(state.cfg.request_body_timeout_ms);
        match tokio::time::timeout(deadline, axum::Json::<T>::from_request(req, state)).await {
            Ok(Ok(axum::Json(v))) => Ok(ApiJson(v)),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                code::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            )),
        }
    }
}

/// Refuses a request whose declared length is over the limit before any of its body is read.
pub async fn refuse_oversized(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let limit = u64::try_from(state.cfg.max_request_bytes).unwrap_or(u64::MAX);
    if declared.is_some_and(|n| n > limit) {
        let mut res = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::PAYLOAD_TOO_LARGE,
            format!("request body over {limit} bytes"),
        )
        .into_response();
        // The body will not be read, so the connection cannot carry another request.
        res.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return res;
    }
    next.run(req).await
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let status = e.status();
        let code = match &e {
            JsonRejection::JsonSyntaxError(_) => code::INVALID_JSON,
            JsonRejection::MissingJsonContentType(_) => code::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::JsonDataError(_) => code::INVALID_REQUEST,
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => code::PAYLOAD_TOO_LARGE,
            _ => code::INVALID_REQUEST,
        };
        // Empty bodies surface as syntax errors; say so plainly.
        ApiError::new(status, code, e.body_text())
    }
}

/// `Path<T>` with coded rejections.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, e.body_text())
    }
}

/// `Query<T>` with coded rejections.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, e.body_text())
    }
}
