//! Extractors whose rejections are JSON errors with codes, like every other error.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use switchboard_protocol::User;
use switchboard_protocol::codes::error as code;

use crate::app::AppState;
use crate::error::ApiError;

/// The caller, from `Authorization: Bearer <token>`.
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
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
        Ok(AuthUser(state.auth.verify(token.trim(), &state.store).await?))
    }
}

/// `Json<T>` with coded rejections.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

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
