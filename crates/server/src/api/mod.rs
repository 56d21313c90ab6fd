//! REST API under `/v1`, plus `/healthz`, `/readyz` and the OpenAPI document generated from the
//! handlers' annotations at `/v1/openapi.json`.

mod extract;
mod health;
mod me;
mod messages;
mod moderation;
mod presence;
mod reports;
mod rooms;
mod sessions;
mod users;
mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use switchboard_protocol::codes::error as code;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard", description = "Real-time chat server: REST API (v1). The WebSocket protocol is in docs/protocol.md."),
    modifiers(&BearerAuth),
    tags(
        (name = "accounts"), (name = "rooms"), (name = "messages"), (name = "presence"), (name = "moderation"), (name = "gateway"), (name = "operations")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

/// The OpenAPI router: every documented route with its handler.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(users::register))
        .routes(routes!(sessions::login, sessions::end_all))
        .routes(routes!(sessions::end_current))
        .routes(routes!(me::settings, me::set_settings))
        .routes(routes!(me::blocks))
        .routes(routes!(me::block, me::unblock))
        .routes(routes!(me::invites))
        .routes(routes!(me::decline))
        .routes(routes!(users::me))
        .routes(routes!(users::get_user))
        .routes(routes!(users::lookup))
        .routes(routes!(presence::one))
        .routes(routes!(presence::many))
        .routes(routes!(rooms::create, rooms::list))
        .routes(routes!(rooms::public))
        .routes(routes!(rooms::get, moderation::configure))
        .routes(routes!(rooms::join))
        .routes(routes!(rooms::members, rooms::add_member))
        .routes(routes!(rooms::remove_member))
        .routes(routes!(rooms::withdraw_invite))
        .routes(routes!(moderation::set_role))
        .routes(routes!(moderation::audit))
        .routes(routes!(moderation::filters))
        .routes(routes!(moderation::ban, moderation::bans))
        .routes(routes!(moderation::unban))
        .routes(routes!(moderation::mute, moderation::mutes))
        .routes(routes!(moderation::unmute))
        .routes(routes!(moderation::shadow_ban, moderation::shadow_bans))
        .routes(routes!(moderation::unshadow_ban))
        .routes(routes!(moderation::purge))
        .routes(routes!(reports::file, reports::list))
        .routes(routes!(reports::resolve))
        .routes(routes!(messages::post, messages::list))
        .routes(routes!(messages::edit, messages::delete))
        .routes(routes!(messages::read))
        .routes(routes!(crate::gateway::upgrade))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let (router, openapi) = documented().split_for_parts();
    let doc: Arc<str> = openapi.to_pretty_json().unwrap_or_else(|_| "{}".to_owned()).into();
    let limit = state.cfg.max_request_bytes;
    router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc.to_string()) }
            }),
        )
        // Any other GET may be one of the browser client's files; everything else is a JSON 404.
        .fallback(web::fallback)
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, code::METHOD_NOT_ALLOWED, "method not allowed")
                .into_response()
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), extract::refuse_oversized))
        // Every request gets an id (or keeps the caller's `x-request-id`), carried by its log
        // span and echoed in the response.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                // A refused request is not a server failure: a flood of 503s and 429s must not
                // become a flood of error lines (real internal errors log themselves).
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}
