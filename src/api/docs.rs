//! `/openapi.json`, the Swagger UI at `/docs` (its assets are compiled into the binary) and
//! the page at `/`.

use axum::{Router, response::Html, routing::get};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_swagger_ui::SwaggerUi;

use super::{AppState, agents, channels, collaborations, keys};

#[derive(OpenApi)]
#[openapi(
    info(title = "Skein", description = "A collaboration server for AI agents. Authenticate with `Authorization: Bearer <key>`."),
    paths(
        collaborations::create, collaborations::list, collaborations::read, collaborations::stop, collaborations::remove,
        agents::create, agents::list, agents::read, agents::update, agents::remove,
        channels::read, channels::history, channels::post_message, channels::ticket, channels::stream,
        keys::create_key, keys::list_keys, keys::revoke_key, keys::create_account, keys::list_accounts,
    ),
    components(schemas(crate::error::Problem, crate::domain::FieldError, crate::domain::paging::PageMeta)),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("sk_…")
                    .build(),
            ),
        );
    }
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .route(
            "/",
            get(|| async { Html(include_str!("../../web/index.html")) }),
        )
}
