//! `/openapi.json` and the Swagger UI at `/docs` (its assets are compiled into the binary).

use axum::{Router, http::Method};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Content, Ref, RefOr, Response,
        path::{Operation, ParameterIn},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_swagger_ui::SwaggerUi;

use serde_json::json;

use super::{
    AppState, agents, channels, collaborations, events, forks, keys, providers, teams, transcript,
    webhooks,
};
use crate::config::Config;

#[derive(OpenApi)]
#[openapi(
    info(title = "Skein", description = "A collaboration server for AI agents. Authenticate with `Authorization: Bearer <key>`."),
    paths(
        collaborations::create, collaborations::list, collaborations::read, collaborations::stop, collaborations::remove, forks::fork, collaborations::audio, transcript::transcript, transcript::figures, events::events,
        agents::create, agents::list, agents::read, agents::update, agents::remove, agents::list_tools, agents::check_agent, providers::list, providers::models,
        channels::read, channels::history, channels::post_message, channels::ticket, channels::stream,
        keys::create_key, keys::list_keys, keys::read_key, keys::revoke_key, keys::create_account, keys::list_accounts,
        webhooks::read, webhooks::put, webhooks::rotate, webhooks::deliveries,
        teams::create, teams::list, teams::read, teams::update, teams::remove, teams::run, teams::runs,
    ),
    components(schemas(crate::error::Problem, crate::domain::FieldError, crate::domain::paging::PageMeta,
        crate::agents::http::TurnRequest, crate::agents::http::TurnReply,
        crate::domain::webhook::Delivery, crate::domain::webhook::CollaborationSnapshot)),
    modifiers(&BearerAuth, &ProblemResponses),
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

/// The error responses every operation can give, stated once instead of on every handler:
/// each is `application/problem+json` with the `Problem` schema. Which ones an operation
/// lists follows from its shape: a body can be malformed (400), too large (413) or invalid
/// (422); a path id can be unknown (404); a POST can meet an idempotency key in flight (409);
/// anything authenticated can be refused (401), rate limited (429) or fail (500).
struct ProblemResponses;

const PROBLEM: &str = "application/problem+json";

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue;
            }
            let admin_only = path.starts_with("/api/v1/keys")
                || path.starts_with("/api/v1/accounts")
                || path == "/api/v1/webhooks"
                || path == "/api/v1/webhooks/secret";
            let operations = [
                (&mut item.get, Method::GET),
                (&mut item.post, Method::POST),
                (&mut item.put, Method::PUT),
                (&mut item.patch, Method::PATCH),
                (&mut item.delete, Method::DELETE),
            ];
            for (operation, method) in operations {
                if let Some(operation) = operation {
                    add_problems(operation, path, &method, admin_only);
                }
            }
        }
    }
}

fn add_problems(operation: &mut Operation, path: &str, method: &Method, admin_only: bool) {
    let writes = method != Method::GET;
    let responses = &mut operation.responses.responses;
    // Errors already listed by the handler are problems too.
    for (code, response) in responses.iter_mut() {
        let is_error = code.parse::<u16>().is_ok_and(|code| code >= 400);
        if let (true, RefOr::T(response)) = (is_error, response) {
            response.content.shift_remove("application/json");
            response.content.insert(PROBLEM.into(), problem_content());
        }
    }
    let upgrade = responses.contains_key("101");
    let parameters = operation.parameters.iter().flatten();
    let has_query = parameters
        .clone()
        .any(|p| p.parameter_in == ParameterIn::Query);
    let has_body = operation.request_body.is_some();
    let mut codes = vec![("429", "Over the key's rate limit or another per-key cap")];
    if !upgrade {
        codes.push(("401", "No valid API key"));
        codes.push(("500", "An internal error; details are logged, not returned"));
    }
    if writes || admin_only {
        codes.push(("403", "The key's scope does not allow this"));
    }
    if path.contains('{') && !upgrade {
        codes.push(("404", "Not found, or another account's"));
    }
    if has_body || writes {
        codes.push(("400", "The body is not a JSON object"));
        codes.push(("413", "The body is larger than the configured limit"));
        codes.push(("422", "Invalid fields, each named in `errors`"));
    }
    if has_query {
        codes.push(("422", "Invalid query parameters, each named in `errors`"));
    }
    if method == Method::POST {
        codes.push((
            "409",
            "A request with this Idempotency-Key is still in progress",
        ));
    }
    for (code, description) in codes {
        responses.entry(code.into()).or_insert_with(|| {
            let mut response = Response::new(description);
            response.content.insert(PROBLEM.into(), problem_content());
            RefOr::T(response)
        });
    }
}

fn problem_content() -> Content {
    Content::new(Some(Ref::from_schema_name("Problem")))
}

pub(super) fn router(config: &Config) -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", document(config)))
}

/// The document as this server takes requests: its limits, as its configuration sets them,
/// stated in the request schemas (`maxLength`, ranges, enums, patterns), so that a client
/// made from the document never sends what the server refuses for its form. What only the
/// stored data can tell (does this agent exist?) stays a 422 of its own.
fn document(config: &Config) -> utoipa::openapi::OpenApi {
    let limits = &config.limits;
    let mut document =
        serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    // Not blank: the server trims what it is given.
    let text = |max: usize| json!({"pattern": "\\S", "maxLength": max});
    let reference = json!({"minLength": 1, "maxLength": 200});
    let url = json!({"maxLength": 2048, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"});
    // Empty is none.
    let url_or_none = json!({"maxLength": 2048, "pattern": "^(\\s*|[Hh][Tt][Tt][Pp][Ss]?://.*)$"});
    let constraints = [
        ("CreateCollaboration", "principal", reference.clone()),
        (
            "CreateCollaboration",
            "participants",
            json!({"minItems": 1, "maxItems": limits.max_participants, "items": reference}),
        ),
        (
            "CreateCollaboration",
            "message_cap",
            json!({"minimum": 1, "maximum": limits.max_message_cap}),
        ),
        (
            "CreateCollaboration",
            "timeout_window",
            json!({"minimum": 1, "maximum": limits.max_timeout_window}),
        ),
        (
            "CreateCollaboration",
            "objective",
            text(limits.max_objective_chars),
        ),
        (
            "CreateCollaboration",
            "source",
            json!({"enum": ["FLOCKX", "ASI1", "asi1", "FETCH_BUSINESS", "flockx", "asi_one", "fetch_business", null]}),
        ),
        (
            "CreateCollaboration",
            "strategy",
            json!({"enum": ["manager", "round_robin", null]}),
        ),
        ("CreateCollaboration", "webhook_url", url.clone()),
        ("CreateCollaboration", "token_budget", json!({"minimum": 1})),
        (
            "CreateCollaboration",
            "cost_budget_usd",
            json!({"minimum": collaborations::MIN_COST_BUDGET_USD,
                   "maximum": collaborations::MAX_COST_BUDGET_USD}),
        ),
        ("ForkCollaboration", "at_seq", json!({"minimum": 1})),
        ("TeamInput", "name", text(limits.max_name_chars)),
        (
            "TeamInput",
            "description",
            json!({"maxLength": limits.max_prompt_chars}),
        ),
        ("AgentInput", "name", text(limits.max_name_chars)),
        (
            "AgentInput",
            "description",
            json!({"maxLength": limits.max_prompt_chars}),
        ),
        (
            "AgentInput",
            "kind",
            json!({"enum": ["llm", "scripted", "http", "a2a", "human", "uagent"]}),
        ),
        ("AgentInput", "address", json!({"maxLength": 200})),
        (
            "AgentInput",
            "model",
            json!({"minLength": 1, "maxLength": 200}),
        ),
        (
            "AgentInput",
            "system_prompt",
            json!({"maxLength": limits.max_prompt_chars}),
        ),
        (
            "AgentInput",
            "temperature",
            json!({"minimum": 0, "maximum": 2}),
        ),
        (
            "AgentInput",
            "max_tokens",
            json!({"minimum": 1, "maximum": agents::MAX_TOKENS_PER_TURN}),
        ),
        (
            "AgentInput",
            "replies",
            json!({"items": text(limits.max_content_chars)}),
        ),
        ("AgentInput", "delay_ms", json!({"maximum": 60_000})),
        ("AgentInput", "endpoint", url.clone()),
        ("AgentInput", "card_url", url.clone()),
        ("AgentInput", "tools", json!({"maxItems": 8})),
        ("ToolServerInput", "url", url.clone()),
        (
            "ToolServerInput",
            "name",
            json!({"minLength": 1, "maxLength": 100}),
        ),
        (
            "ToolServerInput",
            "allow",
            json!({"maxItems": 128, "items": {"minLength": 1, "maxLength": 200}}),
        ),
        (
            "PostMessage",
            "sender",
            json!({"minLength": 1, "maxLength": 200}),
        ),
        ("PostMessage", "content", text(limits.max_content_chars)),
        ("CreateKey", "name", text(limits.max_name_chars)),
        (
            "CreateKey",
            "scopes",
            json!({"minItems": 1, "items": {"enum": ["read", "write", "admin"]}}),
        ),
        ("CreateAccount", "name", text(limits.max_name_chars)),
        ("CreateAccount", "key_name", text(limits.max_name_chars)),
        ("PutWebhooks", "default_url", url_or_none),
    ];
    for (schema, property, constraint) in constraints {
        // A fork's fields, a team's settings and a team run's are a create's, under the
        // same rules. (Looked up, not indexed: indexing would add the properties one lacks.)
        if schema == "CreateCollaboration" {
            for alike in ["ForkCollaboration", "TeamInput", "RunTeam"] {
                if let Some(field) = document.pointer_mut(&format!(
                    "/components/schemas/{alike}/properties/{property}"
                )) {
                    merge(field, constraint.clone());
                }
            }
        }
        let target = &mut document["components"]["schemas"][schema]["properties"][property];
        assert!(target.is_object(), "{schema}.{property} is in the document");
        merge(target, constraint);
    }
    // A PATCH takes any of the create's fields, merged over the agent as it is.
    let mut patch = document["components"]["schemas"]["AgentInput"].clone();
    patch["required"] = json!([]);
    patch["description"] = json!("Any of an agent's fields, merged over the agent as it is.");
    document["components"]["schemas"]["AgentPatch"] = patch;
    document["paths"]["/api/v1/agents/{agent}"]["patch"]["requestBody"] = json!({
        "required": true,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentPatch"}}}
    });
    // So does a team's.
    let mut patch = document["components"]["schemas"]["TeamInput"].clone();
    patch["required"] = json!([]);
    patch["description"] = json!("Any of a team's fields, merged over the team as it is.");
    document["components"]["schemas"]["TeamPatch"] = patch;
    document["paths"]["/api/v1/teams/{team}"]["patch"]["requestBody"] = json!({
        "required": true,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TeamPatch"}}}
    });
    serde_json::from_value(document).expect("the OpenAPI document reads back")
}

/// Adds `constraint`'s keys to `target`, merging into objects it has already.
fn merge(target: &mut serde_json::Value, constraint: serde_json::Value) {
    let serde_json::Value::Object(constraint) = constraint else {
        return;
    };
    for (key, value) in constraint {
        match (target.get_mut(&key), value) {
            (
                Some(existing @ serde_json::Value::Object(_)),
                value @ serde_json::Value::Object(_),
            ) => merge(existing, value),
            (_, value) => target[key] = value,
        }
    }
}
