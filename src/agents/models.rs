//! Model providers: OpenAI-compatible endpoints reached through `async-openai`.
//!
//! Each configured provider gets one `async_openai::Client` whose HTTP stack is ours: a
//! retry layer that honours `Retry-After`, backs off with jitter, never retries a quota error,
//! and bounds each attempt with a timeout. Streaming calls additionally treat a stream that
//! stops short (no `finish_reason`) or goes quiet (no bytes at all, comments and keep-alives
//! included, for the call timeout) as a failed attempt and retry it. A model that keeps its
//! stream alive while it thinks is waited for, up to the call's deadline.
//!
//! A streamed call goes through the same retry layer, but its reply is read here, event by
//! event ([`super::sse`]), on the task that waits for it, into `async-openai`'s chunk type:
//! `async-openai` reads every stream on a task of its own and hands each piece over through
//! a channel, which made each piece of every reply two wake-ups and every waiting call a
//! task of its own.

use std::{collections::HashMap, pin::Pin, sync::Arc, task::Poll, time::Duration};

use async_openai::{
    Client,
    config::Config as OpenAiConfig,
    error::{ApiError, ApiErrorResponse, OpenAIError, WrappedError},
    middleware::{HttpRequestFactory, ReqwestService},
    types::chat::{
        ChatCompletionMessageToolCalls, ChatCompletionRequestMessage, ChatCompletionStreamOptions,
        CreateChatCompletionRequest, CreateChatCompletionStreamResponse,
    },
};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;

use super::{
    retry::{LONGEST_RETRY_AFTER, backoff, retry_after},
    sse,
};
use crate::config::{AUTHORIZATION, ModelSettings, ProviderConfig};

/// Which model to call: a configured provider and a model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

/// A finished completion: its text, the tools it asks to call, and the tokens it cost.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub content: String,
    /// All the tokens the call cost: `input_tokens` plus `output_tokens`, or what the
    /// provider reported as its total.
    pub tokens: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What the call cost, in millionths of a dollar, by the price table.
    pub cost_micros: u64,
    pub tool_calls: Vec<ToolCall>,
}

impl Completion {
    pub fn spend(&self) -> Spend {
        Spend {
            tokens: self.tokens,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_micros: self.cost_micros,
        }
    }
}

/// What model calls cost: tokens (the prompts' and the answers' apart) and money, in
/// millionths of a dollar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub tokens: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

impl std::ops::AddAssign for Spend {
    fn add_assign(&mut self, other: Self) {
        self.tokens += other.tokens;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_micros += other.cost_micros;
    }
}

/// What a model's tokens cost, in US dollars per million.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

/// A function call the model asked for: its id (the result answers to it), the function's
/// name and its arguments as the model wrote them (JSON, not yet checked).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no model provider named `{0}` is configured")]
    UnknownProvider(String),
    #[error("{0}")]
    Api(String),
    #[error("the model's stream broke off: {0}")]
    BrokenStream(String),
    #[error("the model sent no answer within {0:?}")]
    Timeout(Duration),
    #[error("the model's stream went quiet for {0:?}")]
    Stalled(Duration),
    #[error("the model did not finish its answer within {0:?} (SKEIN_LLM_DEADLINE_SECS)")]
    Deadline(Duration),
}

/// What a streamed completion reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta<'a> {
    Text(&'a str),
    /// The stream failed and starts over: text reported so far is void.
    Restart,
}

/// The most models a provider's list gives (some list thousands).
pub const MAX_LISTED_MODELS: usize = 1000;

/// The most calls one answer of a model is taken to ask for; any beyond are not read.
pub const MAX_TOOL_CALLS: usize = 16;

/// The configured providers, by name.
#[derive(Clone)]
pub struct Models {
    providers: Arc<HashMap<String, Provider>>,
    settings: ModelSettings,
}

#[derive(Clone)]
struct Provider {
    client: Client<ProviderAuth>,
    /// Streamed calls are sent through this, the layer under `client`, and read here.
    streams: RetryService,
    /// Builds the streamed calls' requests.
    http: reqwest::Client,
    auth: ProviderAuth,
    default_model: Option<String>,
}

impl Provider {
    /// A chat completion request with `body`, as many times as the retry layer asks for
    /// it.
    fn chat_request(&self, body: Bytes) -> HttpRequestFactory {
        let http = self.http.clone();
        let url = self.auth.url("/chat/completions");
        let headers = self.auth.headers.clone();
        HttpRequestFactory::new(move || {
            let request = http
                .post(&url)
                .headers(headers.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .build();
            async move { Ok(request?) }
        })
    }
}

impl Models {
    pub fn new(providers: &[ProviderConfig], settings: &ModelSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let mut map = HashMap::new();
        for config in providers {
            let service = RetryService {
                inner: Transport::Http(ReqwestService::new(http.clone())),
                settings: settings.clone(),
            };
            let auth = ProviderAuth::new(config)?;
            let client = Client::with_config(auth.clone()).with_http_service(service.clone());
            map.insert(
                config.name.clone(),
                Provider {
                    client,
                    streams: service,
                    http: http.clone(),
                    auth,
                    default_model: config.default_model.clone(),
                },
            );
        }
        Ok(Self {
            providers: Arc::new(map),
            settings: settings.clone(),
        })
    }

    /// What `input` and `output` tokens of `target` cost, in millionths of a dollar. A
    /// model without a price costs nothing, and the log says so, once per model.
    pub fn cost_micros(&self, target: &ModelRef, input: u64, output: u64) -> u64 {
        let key = format!("{}/{}", target.provider, target.model);
        let Some(price) = self.settings.prices.get(&key) else {
            static UNPRICED: std::sync::OnceLock<
                std::sync::Mutex<std::collections::HashSet<String>>,
            > = std::sync::OnceLock::new();
            let mut seen = UNPRICED
                .get_or_init(Default::default)
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if seen.len() < 1024 && seen.insert(key.clone()) {
                tracing::warn!(model = %key, "no price for this model (SKEIN_PRICES): its calls count as costing nothing");
            }
            return 0;
        };
        (input as f64 * price.input + output as f64 * price.output).round() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    pub fn has(&self, provider: &str) -> bool {
        self.providers.contains_key(provider)
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.providers.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn default_model(&self, provider: &str) -> Option<String> {
        self.providers.get(provider)?.default_model.clone()
    }

    fn provider(&self, target: &ModelRef) -> Result<&Provider, ModelError> {
        self.providers
            .get(&target.provider)
            .ok_or_else(|| ModelError::UnknownProvider(target.provider.clone()))
    }

    /// One non-streaming completion, retried by the HTTP layer.
    pub async fn complete(
        &self,
        target: &ModelRef,
        request: CreateChatCompletionRequest,
    ) -> Result<Completion, ModelError> {
        let started = std::time::Instant::now();
        let span = chat_span(target);
        let result = tracing::Instrument::instrument(
            self.within_deadline(Box::pin(self.complete_counted(target, request))),
            span.clone(),
        )
        .await
        .map(|completion| self.priced(target, completion));
        observe(target, started, &result, &span);
        result
    }

    fn priced(&self, target: &ModelRef, mut completion: Completion) -> Completion {
        completion.cost_micros =
            self.cost_micros(target, completion.input_tokens, completion.output_tokens);
        completion
    }

    async fn complete_counted(
        &self,
        target: &ModelRef,
        mut request: CreateChatCompletionRequest,
    ) -> Result<Completion, ModelError> {
        request.model = target.model.clone();
        let client = &self.provider(target)?.client;
        // The retry layer bounds each attempt; this also bounds the body of the last one,
        // which async-openai reads after the layer has returned.
        let retries = self.settings.max_retries;
        let limit = self.settings.call_timeout * (retries + 1)
            + self.settings.retry_max.max(LONGEST_RETRY_AFTER) * retries;
        let response = tokio::time::timeout(limit, client.chat().create(request))
            .await
            .map_err(|_| ModelError::Timeout(limit))?
            .map_err(api_error)?;
        let (tokens, input_tokens, output_tokens) = response.usage.map_or((0, 0, 0), |u| {
            (
                u64::from(u.total_tokens),
                u64::from(u.prompt_tokens),
                u64::from(u.completion_tokens),
            )
        });
        let Some(message) = response.choices.into_iter().next().map(|c| c.message) else {
            return Ok(Completion {
                tokens,
                input_tokens,
                output_tokens,
                ..Completion::default()
            });
        };
        let tool_calls = message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .filter_map(|call| match call {
                ChatCompletionMessageToolCalls::Function(call) => Some(ToolCall {
                    id: call.id,
                    name: call.function.name,
                    arguments: call.function.arguments,
                }),
                ChatCompletionMessageToolCalls::Custom(_) => None,
            })
            .collect();
        Ok(Completion {
            content: message.content.unwrap_or_default(),
            tokens,
            input_tokens,
            output_tokens,
            // Priced by the caller, which knows the model.
            cost_micros: 0,
            tool_calls,
        })
    }

    /// A streamed completion: `on_delta` sees each piece of text as it arrives. A stream that
    /// breaks or stalls after it began is retried from the start, after a
    /// [`Delta::Restart`]; failures before it began were already retried by the HTTP layer.
    pub async fn stream(
        &self,
        target: &ModelRef,
        request: CreateChatCompletionRequest,
        on_delta: &(dyn Fn(Delta<'_>) + Send + Sync),
    ) -> Result<Completion, ModelError> {
        let started = std::time::Instant::now();
        let span = chat_span(target);
        let result = tracing::Instrument::instrument(
            self.within_deadline(Box::pin(self.stream_counted(target, request, on_delta))),
            span.clone(),
        )
        .await
        .map(|completion| self.priced(target, completion));
        observe(target, started, &result, &span);
        result
    }

    /// A call, all its attempts and its whole stream included, cut off at the deadline.
    /// Callers box the call: held here both as the argument and inside the timeout, it
    /// would be in the future twice, and a collaboration holds this future for as long as
    /// its model takes.
    async fn within_deadline(
        &self,
        call: impl Future<Output = Result<Completion, ModelError>>,
    ) -> Result<Completion, ModelError> {
        let deadline = self.settings.deadline;
        tokio::time::timeout(deadline, call)
            .await
            .unwrap_or(Err(ModelError::Deadline(deadline)))
    }

    async fn stream_counted(
        &self,
        target: &ModelRef,
        mut request: CreateChatCompletionRequest,
        on_delta: &(dyn Fn(Delta<'_>) + Send + Sync),
    ) -> Result<Completion, ModelError> {
        request.model = target.model.clone();
        request.stream = Some(true);
        request.stream_options = Some(ChatCompletionStreamOptions {
            include_usage: Some(true),
            ..Default::default()
        });
        let provider = self.provider(target)?;
        // Serialized once, however many times it is sent.
        let body = serde_json::to_vec(&request)
            .map_err(|error| ModelError::Api(format!("the request does not serialize: {error}")))?;
        let request = provider.chat_request(Bytes::from(body));
        let mut attempt = 0;
        loop {
            match self.stream_once(provider, request.clone(), on_delta).await {
                Err(error @ (ModelError::BrokenStream(_) | ModelError::Stalled(_)))
                    if attempt < self.settings.max_retries =>
                {
                    tracing::warn!(%error, attempt, "model stream failed; retrying");
                    on_delta(Delta::Restart);
                    tokio::time::sleep(backoff(
                        self.settings.retry_base,
                        self.settings.retry_max,
                        attempt,
                    ))
                    .await;
                    super::retry::noted();
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn stream_once(
        &self,
        provider: &Provider,
        request: HttpRequestFactory,
        on_delta: &(dyn Fn(Delta<'_>) + Send + Sync),
    ) -> Result<Completion, ModelError> {
        let idle = self.settings.call_timeout;
        let max_bytes = self.settings.max_reply_bytes;
        let mut response = provider
            .streams
            .clone()
            .run(request)
            .await
            .map_err(api_error)?;
        if !response.status().is_success() {
            return Err(refusal(response, max_bytes).await);
        }
        // An event carries its text as escaped JSON, beside the chunk's other fields.
        let mut events = sse::Events::new(max_bytes.saturating_mul(2).saturating_add(64 * 1024));
        let mut reply = Reply::default();
        let quiet = tokio::time::sleep(idle);
        tokio::pin!(quiet);
        let mut ended = false;
        'read: loop {
            while let Some(event) = if ended { events.end() } else { events.next() } {
                if event.data == b"[DONE]" {
                    break 'read;
                }
                if event.kind == b"keepalive" {
                    continue;
                }
                let chunk: CreateChatCompletionStreamResponse = serde_json::from_slice(event.data)
                    .map_err(|error| {
                        ModelError::BrokenStream(format!(
                            "a piece of the reply is not a chunk: {error}"
                        ))
                    })?;
                if reply.take(chunk, on_delta) > max_bytes {
                    // Enough: however much more the model would say, no more is read or kept.
                    tracing::warn!(
                        bytes = reply.completion.content.len(),
                        "a model's streamed reply was over the limit; stopped reading"
                    );
                    reply.finished = true;
                    break 'read;
                }
            }
            if ended {
                break;
            }
            if let Err(error) = events.check_size() {
                // As for a reply over the limit: what was said before it is kept.
                tracing::warn!(%error, "a model's streamed reply was over the limit; stopped reading");
                reply.finished = true;
                break;
            }
            let piece = tokio::select! {
                biased;
                piece = response.chunk() => piece,
                () = &mut quiet => return Err(ModelError::Stalled(idle)),
            };
            match piece {
                Ok(Some(bytes)) => {
                    // Any bytes, a comment or a keep-alive included: the provider is there.
                    quiet.as_mut().reset(tokio::time::Instant::now() + idle);
                    events.feed(&bytes);
                }
                Ok(None) => ended = true,
                Err(error) => return Err(ModelError::BrokenStream(error.to_string())),
            }
        }
        if !reply.finished {
            return Err(ModelError::BrokenStream(
                "the stream ended without a finish reason".into(),
            ));
        }
        Ok(reply.completion)
    }
}

/// A streamed reply, as its chunks have told it so far.
#[derive(Default)]
struct Reply {
    completion: Completion,
    /// A chunk gave a finish reason.
    finished: bool,
}

impl Reply {
    /// Adds a chunk, passing its text on to `on_delta`; how many bytes the reply holds now.
    fn take(
        &mut self,
        chunk: CreateChatCompletionStreamResponse,
        on_delta: &(dyn Fn(Delta<'_>) + Send + Sync),
    ) -> usize {
        let completion = &mut self.completion;
        if let Some(usage) = chunk.usage {
            completion.tokens = u64::from(usage.total_tokens);
            completion.input_tokens = u64::from(usage.prompt_tokens);
            completion.output_tokens = u64::from(usage.completion_tokens);
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                on_delta(Delta::Text(&text));
                completion.content.push_str(&text);
            }
            // A call arrives in pieces, by index: its id and name first, then its
            // arguments a fragment at a time.
            for piece in choice.delta.tool_calls.into_iter().flatten() {
                let index = piece.index as usize;
                if index >= MAX_TOOL_CALLS {
                    continue;
                }
                if completion.tool_calls.len() <= index {
                    completion.tool_calls.resize(index + 1, ToolCall::default());
                }
                let call = &mut completion.tool_calls[index];
                if let Some(id) = piece.id {
                    call.id = id;
                }
                if let Some(function) = piece.function {
                    call.name
                        .push_str(function.name.as_deref().unwrap_or_default());
                    call.arguments
                        .push_str(function.arguments.as_deref().unwrap_or_default());
                }
            }
            self.finished |= choice.finish_reason.is_some();
        }
        completion.content.len()
            + completion
                .tool_calls
                .iter()
                .map(|c| c.arguments.len())
                .sum::<usize>()
    }
}

/// What a provider that refused a streamed call said, as `async-openai` reads a refusal:
/// a server error's body as its message, any other's OpenAI error object.
async fn refusal(response: reqwest::Response, max_bytes: usize) -> ModelError {
    let status = response.status();
    let body = match crate::agents::read_capped(response, max_bytes).await {
        Ok((body, _)) => body,
        Err(error) => return api_error(OpenAIError::Reqwest(error)),
    };
    let api_error_of = |error| {
        api_error(OpenAIError::ApiError(ApiErrorResponse {
            status_code: status,
            api_error: error,
        }))
    };
    if status.is_server_error() {
        return api_error_of(ApiError {
            message: String::from_utf8_lossy(&body).into_owned(),
            ..ApiError::default()
        });
    }
    match serde_json::from_slice::<WrappedError>(&body) {
        Ok(wrapped) => api_error_of(wrapped.error),
        Err(error) => api_error(OpenAIError::JSONDeserialize(
            error,
            String::from_utf8_lossy(&body).into_owned(),
        )),
    }
}

impl Models {
    /// The models `provider` offers, by id, sorted (its `/models`), at most
    /// [`MAX_LISTED_MODELS`].
    pub async fn list_models(&self, provider: &str) -> Result<Vec<String>, ModelError> {
        let target = ModelRef {
            provider: provider.to_owned(),
            model: String::new(),
        };
        let client = &self.provider(&target)?.client;
        let limit = self.settings.call_timeout;
        let listed = tokio::time::timeout(limit, client.models().list())
            .await
            .map_err(|_| ModelError::Timeout(limit))?
            .map_err(api_error)?;
        let mut ids: Vec<String> = listed.data.into_iter().map(|model| model.id).collect();
        ids.sort();
        ids.dedup();
        ids.truncate(MAX_LISTED_MODELS);
        Ok(ids)
    }

    /// `input` read aloud by `voice`, as a WAV file, through the provider's
    /// OpenAI-compatible `/audio/speech`.
    pub async fn speech(
        &self,
        provider: &str,
        model: &str,
        voice: &str,
        input: &str,
    ) -> Result<bytes::Bytes, ModelError> {
        use async_openai::types::audio::{
            CreateSpeechRequest, SpeechModel, SpeechResponseFormat, Voice,
        };
        let target = ModelRef {
            provider: provider.to_owned(),
            model: model.to_owned(),
        };
        let client = &self.provider(&target)?.client;
        let request = CreateSpeechRequest {
            input: input.to_owned(),
            model: SpeechModel::Other(model.to_owned()),
            voice: Voice::Other(voice.to_owned()),
            instructions: None,
            response_format: Some(SpeechResponseFormat::Wav),
            speed: None,
            stream_format: None,
        };
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(
            self.settings.call_timeout,
            client.audio().speech().create(request),
        )
        .await
        .map_err(|_| ModelError::Timeout(self.settings.call_timeout))
        .and_then(|answer| answer.map_err(api_error))
        .map(|response| response.bytes);
        crate::telemetry::model_call(
            provider,
            model,
            started.elapsed(),
            0,
            result.as_ref().err().map(ModelError::kind),
        );
        result
    }
}

/// A model call's span, as the GenAI conventions name it: `chat {model}`.
fn chat_span(target: &ModelRef) -> tracing::Span {
    let span = tracing::info_span!(
        "chat",
        otel.name = %format!("chat {}", target.model),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = %target.provider,
        gen_ai.request.model = %target.model,
        gen_ai.conversation.id = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        gen_ai.output.messages = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if let Some(id) = crate::traces::conversation() {
        span.record("gen_ai.conversation.id", tracing::field::display(id));
    }
    span
}

/// Records a finished model call in the metrics, and on its span.
fn observe(
    target: &ModelRef,
    started: std::time::Instant,
    result: &Result<Completion, ModelError>,
    span: &tracing::Span,
) {
    let (tokens, failure) = match result {
        Ok(completion) => (completion.tokens, None),
        Err(error) => (0, Some(error.kind())),
    };
    match result {
        Ok(completion) => {
            span.record("gen_ai.usage.input_tokens", completion.input_tokens);
            span.record("gen_ai.usage.output_tokens", completion.output_tokens);
            if crate::traces::capture_content() {
                span.record("gen_ai.output.messages", completion.content.as_str());
            }
        }
        Err(error) => {
            span.record("error.type", error.kind());
        }
    }
    crate::telemetry::model_call(
        &target.provider,
        &target.model,
        started.elapsed(),
        tokens,
        failure,
    );
}

impl ModelError {
    /// A short name for the kind of failure, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownProvider(_) => "unknown_provider",
            Self::Api(_) => "api",
            Self::BrokenStream(_) => "broken_stream",
            Self::Timeout(_) => "timeout",
            Self::Stalled(_) => "stalled",
            Self::Deadline(_) => "deadline",
        }
    }
}

/// A chat request with the given messages and no other settings.
pub fn chat_request(messages: Vec<ChatCompletionRequestMessage>) -> CreateChatCompletionRequest {
    CreateChatCompletionRequest {
        messages,
        ..Default::default()
    }
}

fn api_error(error: OpenAIError) -> ModelError {
    match error {
        OpenAIError::Boxed(inner) => match inner.downcast::<AttemptTimeout>() {
            Ok(timeout) => ModelError::Timeout(timeout.0),
            Err(other) => ModelError::Api(other.to_string()),
        },
        other => ModelError::Api(other.to_string()),
    }
}

/// How a provider's key is sent, as `async-openai` asks for it.
#[derive(Clone)]
struct ProviderAuth {
    base_url: String,
    key: SecretString,
    headers: HeaderMap,
}

impl ProviderAuth {
    fn new(config: &ProviderConfig) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        if !config.api_key.is_empty() {
            let (name, value) = if config.key_header.eq_ignore_ascii_case(AUTHORIZATION) {
                (
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {}", config.api_key),
                )
            } else {
                (
                    HeaderName::from_bytes(config.key_header.as_bytes())?,
                    config.api_key.clone(),
                )
            };
            let mut value = HeaderValue::from_str(&value)?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self {
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            key: SecretString::from(config.api_key.clone()),
            headers,
        })
    }
}

impl OpenAiConfig for ProviderAuth {
    fn headers(&self) -> HeaderMap {
        self.headers.clone()
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
    fn query(&self) -> Vec<(&str, &str)> {
        Vec::new()
    }
    fn api_base(&self) -> &str {
        &self.base_url
    }
    fn api_key(&self) -> &SecretString {
        &self.key
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no response within {0:?}")]
struct AttemptTimeout(Duration);

/// Retries 429 (unless it is a quota error), 5xx, connection failures and attempts that
/// time out, waiting for `Retry-After` when the server names it.
#[derive(Clone)]
struct RetryService {
    inner: Transport,
    settings: ModelSettings,
}

/// How a provider's requests reach it.
#[derive(Clone)]
enum Transport {
    Http(ReqwestService),
    /// Answered in this process, for the engine's unit tests on a paused clock (a socket
    /// would be served by another task, and a paused clock jumps ahead while it waits): a
    /// chat request's JSON in, a completion's JSON out.
    #[cfg(test)]
    InProcess(Arc<dyn Fn(serde_json::Value) -> serde_json::Value + Send + Sync>),
}

impl Transport {
    /// One attempt. A whole answer larger than `max_bytes` is refused rather than read;
    /// a stream is passed on, to be cut by the reader.
    async fn send(
        &mut self,
        request: HttpRequestFactory,
        max_bytes: usize,
    ) -> Result<reqwest::Response, OpenAIError> {
        use tower::{Service, ServiceExt};
        match self {
            Self::Http(http) => {
                let response = http.ready().await?.call(request).await?;
                within(response, max_bytes).await
            }
            #[cfg(test)]
            Self::InProcess(answer) => {
                let request = request.build().await?;
                let asked = request
                    .body()
                    .and_then(|body| body.as_bytes())
                    .and_then(|bytes| serde_json::from_slice(bytes).ok())
                    .unwrap_or_default();
                let answered = serde_json::to_vec(&answer(asked)).expect("JSON serializes");
                let response = http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(answered)
                    .expect("a response");
                Ok(reqwest::Response::from(response))
            }
        }
    }
}

/// A whole answer read into memory, if it is no larger than `max_bytes` (else an error
/// saying so); a stream (`text/event-stream`) as it is, to be read piece by piece.
async fn within(
    response: reqwest::Response,
    max_bytes: usize,
) -> Result<reqwest::Response, OpenAIError> {
    let streamed = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    if streamed {
        return Ok(response);
    }
    let (status, headers) = (response.status(), response.headers().clone());
    let (body, more) = crate::agents::read_capped(response, max_bytes)
        .await
        .map_err(OpenAIError::Reqwest)?;
    if more {
        return Err(OpenAIError::Boxed(Box::new(TooLarge(max_bytes))));
    }
    let mut rebuilt = http::Response::new(bytes::Bytes::from(body));
    *rebuilt.status_mut() = status;
    *rebuilt.headers_mut() = headers;
    Ok(reqwest::Response::from(rebuilt))
}

#[derive(Debug, thiserror::Error)]
#[error("the model's answer is larger than {0} bytes")]
struct TooLarge(usize);

#[cfg(test)]
impl Models {
    /// One provider, `default` (model `fake`), answered in this process by `answer`.
    pub(crate) fn answered_by(
        answer: impl Fn(serde_json::Value) -> serde_json::Value + Send + Sync + 'static,
        settings: &ModelSettings,
    ) -> Self {
        let config = ProviderConfig {
            name: "default".into(),
            base_url: "http://in-process".into(),
            api_key: String::new(),
            key_header: AUTHORIZATION.into(),
            default_model: Some("fake".into()),
        };
        let service = RetryService {
            inner: Transport::InProcess(Arc::new(answer)),
            settings: settings.clone(),
        };
        let auth = ProviderAuth::new(&config).expect("a valid provider");
        let provider = Provider {
            client: Client::with_config(auth.clone()).with_http_service(service.clone()),
            streams: service,
            http: reqwest::Client::new(),
            auth,
            default_model: config.default_model,
        };
        Self {
            providers: Arc::new(HashMap::from([("default".to_owned(), provider)])),
            settings: settings.clone(),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl tower::Service<HttpRequestFactory> for RetryService {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = BoxFuture<Result<reqwest::Response, OpenAIError>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call makes its own attempts, on a transport that is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.run(request).await })
    }
}

/// What one attempt came to.
enum Attempt {
    Done(Result<reqwest::Response, OpenAIError>),
    Retry {
        last: Result<reqwest::Response, OpenAIError>,
        wait: Option<Duration>,
    },
}

impl RetryService {
    async fn run(mut self, request: HttpRequestFactory) -> Result<reqwest::Response, OpenAIError> {
        let mut attempt = 0;
        loop {
            let timeout = self.settings.call_timeout;
            let call = self
                .inner
                .send(request.clone(), self.settings.max_reply_bytes);
            // The timeout covers reading an error body too: a 5xx that never ends is a hang.
            let outcome =
                match tokio::time::timeout(timeout, async { classify(call.await).await }).await {
                    Err(_) => Attempt::Retry {
                        last: Err(OpenAIError::Boxed(Box::new(AttemptTimeout(timeout)))),
                        wait: None,
                    },
                    Ok(outcome) => outcome,
                };
            let (last, wait) = match outcome {
                Attempt::Done(result) => return result,
                Attempt::Retry { last, wait } => (last, wait),
            };
            let delay = backoff(self.settings.retry_base, self.settings.retry_max, attempt)
                .max(wait.unwrap_or_default());
            // A server asking for a longer pause than a turn can wait is answered now.
            if attempt >= self.settings.max_retries || delay > LONGEST_RETRY_AFTER {
                return last;
            }
            tracing::warn!(attempt, ?delay, "model call failed; retrying");
            tokio::time::sleep(delay).await;
            super::retry::noted();
            attempt += 1;
        }
    }
}

async fn classify(result: Result<reqwest::Response, OpenAIError>) -> Attempt {
    let response = match result {
        Ok(response) => response,
        Err(OpenAIError::Reqwest(e)) if e.is_connect() || e.is_timeout() || e.is_request() => {
            return Attempt::Retry {
                last: Err(OpenAIError::Reqwest(e)),
                wait: None,
            };
        }
        Err(other) => return Attempt::Done(Err(other)),
    };
    let status = response.status();
    if status.as_u16() != 429 && !status.is_server_error() {
        return Attempt::Done(Ok(response));
    }
    let headers = response.headers().clone();
    let wait = retry_after(&headers);
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => {
            return Attempt::Retry {
                last: Err(OpenAIError::Reqwest(e)),
                wait,
            };
        }
    };
    // OpenAI signals an exhausted balance as a 429 too; waiting will not refill it.
    let quota = status.as_u16() == 429
        && std::str::from_utf8(&body).is_ok_and(|text| text.contains("insufficient_quota"));
    let mut rebuilt = http::Response::new(body);
    *rebuilt.status_mut() = status;
    *rebuilt.headers_mut() = headers;
    let last = Ok(reqwest::Response::from(rebuilt));
    if quota {
        Attempt::Done(last)
    } else {
        Attempt::Retry { last, wait }
    }
}
