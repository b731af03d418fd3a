//! A fake OpenAI-compatible provider: `POST /v1/chat/completions`, plain JSON or SSE
//! streaming, with usage, replies scripted per test, a check of the key header, and faults
//! on demand (429 with Retry-After, 500, a hang, a stream that breaks off).
//!
//! It tells the engine's calls apart by their structured-output schema name: the judge asks
//! for `objective_verdict`, the summarizer for `collaboration_summary`, the selector for
//! `speaker_selection`, the synopsis writer for `conversation_synopsis`; anything else is an
//! agent's turn.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

pub const KEY: &str = "fake-provider-key";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Turn,
    Judge,
    Summary,
    Selector,
    Synopsis,
    /// `/v1/audio/speech`.
    Speech,
}

#[derive(Debug, Clone)]
pub enum Fault {
    RateLimited {
        retry_after_secs: u64,
    },
    ServerError,
    /// Never answers.
    Hang,
    /// Sends the first piece of the stream, then ends it with no finish reason and no
    /// `[DONE]`, as a proxy that cuts an upstream off does.
    BrokenStream,
    /// Sends the first piece of the stream, then nothing more, holding it open.
    GoesQuiet,
    /// Thinks aloud: an SSE comment every 300 ms for 3 s, then its reply, as a reasoning
    /// model behind a proxy that keeps the connection alive does.
    KeepsAlive,
    /// A stream of empty pieces, one every 100 ms, forever: never quiet, never done.
    Trickle,
    /// A 400 with OpenAI's error object: the request itself is refused, so retrying it
    /// would not help.
    Refused,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub purpose: Purpose,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

/// One scripted answer to an agent's turn.
#[derive(Debug, Clone)]
enum Reply {
    Text(String),
    /// Calls to these functions (name, arguments), in one answer.
    Calls(Vec<(String, Value)>),
    /// Text made of the tool results the request carries after its last assistant message:
    /// "results: <r1> | <r2>".
    FromResults,
}

struct Script {
    turns: VecDeque<Reply>,
    verdicts: VecDeque<(bool, String)>,
    faults: VecDeque<(Purpose, Fault)>,
    /// Applied to every request of that purpose once its queue of one-off faults is empty.
    always: Option<(Purpose, Fault)>,
    recorded: Vec<Recorded>,
    turn_count: usize,
    /// The name the selector answers with.
    selection: String,
    /// What the summarizer answers: headline and summary.
    summary: (String, String),
    /// The outcome it answers, when a test sets one.
    outcome: Option<Value>,
    /// How long each answer takes, from the request to the end of its stream: spread
    /// evenly over this range, call by call.
    latency: Option<(Duration, Duration)>,
    /// Whether requests are kept for [`FakeModel::requests`]: not under load, where they
    /// would pile up.
    keep_requests: bool,
    calls: u64,
}

#[derive(Clone)]
pub struct FakeModel {
    pub address: SocketAddr,
    /// The header the key must arrive in, and the value expected there.
    expected: Arc<(String, String)>,
    script: Arc<Mutex<Script>>,
    /// Pause between streamed pieces, so viewers can watch deltas arrive.
    chunk_delay: Duration,
}

impl FakeModel {
    /// Expects `Authorization: Bearer <KEY>`.
    pub async fn start() -> Self {
        Self::start_expecting("authorization", &format!("Bearer {KEY}"), Duration::ZERO).await
    }

    pub async fn start_expecting(header: &str, value: &str, chunk_delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Self {
            address: listener.local_addr().unwrap(),
            expected: Arc::new((header.to_lowercase(), value.to_owned())),
            script: Arc::new(Mutex::new(Script {
                turns: VecDeque::new(),
                verdicts: VecDeque::new(),
                faults: VecDeque::new(),
                always: None,
                recorded: Vec::new(),
                turn_count: 0,
                selection: "nobody-valid".into(),
                summary: (
                    "Fake headline".into(),
                    "Fake summary of the collaboration.".into(),
                ),
                outcome: None,
                latency: None,
                keep_requests: true,
                calls: 0,
            })),
            chunk_delay,
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/audio/speech", post(speech))
            .route("/v1/models", axum::routing::get(models))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// Every answer takes between `from` and `to`, as a model's do: a quarter of it before
    /// the first piece, the rest between the pieces.
    pub fn answer_after(&self, from: Duration, to: Duration) {
        self.script.lock().unwrap().latency = Some((from, to.max(from)));
    }

    /// Stops keeping requests (see [`FakeModel::requests`]).
    pub fn forget_requests(&self) {
        self.script.lock().unwrap().keep_requests = false;
    }

    /// Turn replies, in order; once used up, turns answer "turn N".
    pub fn reply_with(&self, replies: &[&str]) {
        self.script
            .lock()
            .unwrap()
            .turns
            .extend(replies.iter().map(|r| Reply::Text(r.to_string())));
    }

    /// The next turn answer calls these tools (function name, arguments), all at once, the
    /// OpenAI way (`tool_calls`, streamed as deltas when the request streams). A request
    /// that switches tools off (`tool_choice: "none"`) is answered with text instead, and
    /// leaves this in the script.
    pub fn call_tools(&self, calls: &[(&str, Value)]) {
        let calls = calls
            .iter()
            .map(|(name, arguments)| (name.to_string(), arguments.clone()))
            .collect();
        self.script
            .lock()
            .unwrap()
            .turns
            .push_back(Reply::Calls(calls));
    }

    /// The next turn answer quotes the tool results it was given: "results: r1 | r2".
    pub fn answer_from_results(&self) {
        self.script
            .lock()
            .unwrap()
            .turns
            .push_back(Reply::FromResults);
    }

    /// Judge verdicts, in order; once used up, the judge says "not met".
    pub fn verdicts(&self, verdicts: &[bool]) {
        let mut script = self.script.lock().unwrap();
        script
            .verdicts
            .extend(verdicts.iter().map(|&met| (met, format!("met is {met}"))));
    }

    /// The speaker the selector names from now on.
    pub fn select(&self, name: &str) {
        self.script.lock().unwrap().selection = name.into();
    }

    /// The summarizer's answer from now on.
    pub fn summarize_with(&self, headline: &str, summary: &str) {
        self.script.lock().unwrap().summary = (headline.into(), summary.into());
    }

    /// The summarizer's outcome from now on (`{decisions, action_items, open_questions}`).
    pub fn outcome_with(&self, outcome: Value) {
        self.script.lock().unwrap().outcome = Some(outcome);
    }

    /// A fault for the next request of that purpose.
    pub fn fail_next(&self, purpose: Purpose, fault: Fault) {
        self.script
            .lock()
            .unwrap()
            .faults
            .push_back((purpose, fault));
    }

    /// A fault for every request of that purpose.
    pub fn fail_always(&self, purpose: Purpose, fault: Fault) {
        self.script.lock().unwrap().always = Some((purpose, fault));
    }

    pub fn requests(&self, purpose: Purpose) -> Vec<Recorded> {
        self.script
            .lock()
            .unwrap()
            .recorded
            .iter()
            .filter(|r| r.purpose == purpose)
            .cloned()
            .collect()
    }

    /// Input (prompt) and output (completion) tokens the fake reported for requests of this
    /// purpose, added up.
    pub fn usage_reported(&self, purpose: Purpose) -> (u64, u64) {
        self.requests(purpose)
            .iter()
            .map(|r| usage_for(&r.body))
            .fold((0, 0), |(i, o), (prompt, completion, _)| {
                (i + prompt, o + completion)
            })
    }

    /// Total tokens the fake reported for requests of this purpose.
    pub fn tokens_reported(&self, purpose: Purpose) -> u64 {
        self.requests(purpose)
            .iter()
            .map(|r| usage_for(&r.body).2)
            .sum()
    }
}

impl FakeModel {
    /// A 401 unless the key arrived where and as expected.
    fn refuse_unless_keyed(&self, headers: &HeaderMap) -> Option<Response> {
        let (header, value) = self.expected.as_ref();
        let keyed =
            headers.get(header.as_str()).and_then(|v| v.to_str().ok()) == Some(value.as_str());
        (!keyed).then(|| {
            openai_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "bad or missing API key",
            )
        })
    }
}

impl Script {
    /// Records a request and takes the fault it meets, if any: a one-off first, then the
    /// standing one.
    fn take(&mut self, purpose: Purpose, headers: &HeaderMap, body: &Value) -> Option<Fault> {
        if self.keep_requests {
            self.recorded.push(Recorded {
                purpose,
                headers: headers.clone(),
                body: body.clone(),
                at: Instant::now(),
            });
        }
        match self.faults.iter().position(|(p, _)| *p == purpose) {
            Some(i) => self.faults.remove(i).map(|(_, f)| f),
            None => self
                .always
                .clone()
                .filter(|(p, _)| *p == purpose)
                .map(|(_, f)| f),
        }
    }
}

fn purpose_of(body: &Value) -> Purpose {
    match body["response_format"]["json_schema"]["name"].as_str() {
        Some("objective_verdict") => Purpose::Judge,
        Some("collaboration_summary") => Purpose::Summary,
        Some("speaker_selection") => Purpose::Selector,
        Some("conversation_synopsis") => Purpose::Synopsis,
        _ => Purpose::Turn,
    }
}

/// What the fake writes as a synopsis: how many messages it was given, and the last of
/// them, so a test can tell which it covered.
fn synopsis_of(body: &Value) -> String {
    let material = body["messages"][1]["content"].as_str().unwrap_or_default();
    let quoted: Vec<&str> = material
        .split("<transcript>\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take_while(|line| *line != "</transcript>")
        .collect();
    let last: String = quoted.last().unwrap_or(&"").chars().take(80).collect();
    format!("Synopsis of {} messages, the last: {last}", quoted.len())
}

/// Usage derived from the request: prompt tokens ~ characters / 4, a fixed 7 for output.
fn usage_for(body: &Value) -> (u64, u64, u64) {
    let chars: usize = body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["content"].as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    let prompt = (chars / 4) as u64 + 1;
    (prompt, 7, prompt + 7)
}

fn openai_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "param": null, "code": null}})),
    )
        .into_response()
}

async fn completions(
    State(fake): State<FakeModel>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refusal) = fake.refuse_unless_keyed(&headers) {
        return refusal;
    }
    let purpose = purpose_of(&body);
    let mut calls = Vec::new();
    let (fault, content, latency) = {
        let mut script = fake.script.lock().unwrap();
        let fault = script.take(purpose, &headers, &body);
        script.calls += 1;
        // Spread over the range by a multiplicative hash of the call's number.
        let spread = (script.calls.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0;
        let latency = script
            .latency
            .map(|(from, to)| from + (to - from).mul_f64(spread));
        let content = match purpose {
            Purpose::Turn => {
                script.turn_count += 1;
                let n = script.turn_count;
                let tools_off = body["tool_choice"] == json!("none");
                match fault {
                    None if tools_off && matches!(script.turns.front(), Some(Reply::Calls(_))) => {
                        format!("turn {n} without tools")
                    }
                    None => match script.turns.pop_front() {
                        Some(Reply::Text(text)) => text,
                        Some(Reply::Calls(asked)) => {
                            calls = asked;
                            String::new()
                        }
                        Some(Reply::FromResults) => results_in(&body),
                        None => format!("turn {n}"),
                    },
                    // What a stream that breaks off had started to say.
                    Some(Fault::BrokenStream | Fault::GoesQuiet) => "This reply never fini".into(),
                    Some(Fault::KeepsAlive) => "Thought long, said little.".into(),
                    Some(_) => String::new(),
                }
            }
            Purpose::Judge => {
                let (met, reason) = script
                    .verdicts
                    .pop_front()
                    .unwrap_or((false, "not yet".into()));
                json!({"met": met, "reason": reason}).to_string()
            }
            Purpose::Summary => {
                let (headline, summary) = &script.summary;
                let outcome = script.outcome.clone().unwrap_or_else(|| {
                    json!({
                        "decisions": ["Tapas at seven"],
                        "action_items": [{"owner": "Scout", "task": "Book the table"}],
                        "open_questions": ["Who drives?"],
                    })
                });
                json!({"headline": headline, "summary": summary, "outcome": outcome}).to_string()
            }
            Purpose::Selector => json!({"speaker": script.selection}).to_string(),
            Purpose::Synopsis => json!({"synopsis": synopsis_of(&body)}).to_string(),
            Purpose::Speech => unreachable!("speech has its own route"),
        };
        (fault, content, latency)
    };
    let mut chunk_delay = fake.chunk_delay;
    if let Some(latency) = latency {
        tokio::time::sleep(latency / 4).await;
        // Three pieces of content, the finish, the usage and `[DONE]`: five pauses.
        chunk_delay = latency * 3 / 4 / 5;
    }
    match fault {
        Some(Fault::RateLimited { retry_after_secs }) => {
            let mut response = openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "slow down",
            );
            response
                .headers_mut()
                .insert("retry-after", retry_after_secs.to_string().parse().unwrap());
            return response;
        }
        Some(Fault::ServerError) => {
            return openai_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "boom");
        }
        Some(Fault::Refused) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "the prompt is longer than this model reads",
            );
        }
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::Trickle) => return trickle(),
        Some(Fault::BrokenStream | Fault::GoesQuiet | Fault::KeepsAlive) | None => {}
    }
    let broken = match fault {
        Some(Fault::BrokenStream) => Some(Break::Ends),
        Some(Fault::GoesQuiet) => Some(Break::GoesQuiet),
        _ => None,
    };
    let model = body["model"].as_str().unwrap_or("fake-model").to_owned();
    let (prompt, completion, total) = usage_for(&body);
    let usage =
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total});
    // Ids as OpenAI gives them: unique per call, made up by the provider.
    let calls: Vec<(String, String, String)> = calls
        .into_iter()
        .enumerate()
        .map(|(i, (name, arguments))| {
            let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (format!("call_{n}_{i}"), name, arguments.to_string())
        })
        .collect();
    if body["stream"] != json!(true) {
        // An answer given whole takes as long as a streamed one.
        if let Some(latency) = latency {
            tokio::time::sleep(latency * 3 / 4).await;
        }
        let message = if calls.is_empty() {
            json!({"role": "assistant", "content": content})
        } else {
            let tool_calls: Vec<Value> = calls
                .iter()
                .map(|(id, name, arguments)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
                .collect();
            json!({"role": "assistant", "content": null, "tool_calls": tool_calls})
        };
        let finish = if calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        return Json(json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }))
        .into_response();
    }
    let thinking = matches!(fault, Some(Fault::KeepsAlive));
    sse(content, &calls, model, usage, broken, thinking, chunk_delay)
}

static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// "results: r1 | r2": the `tool` messages after the request's last assistant message.
fn results_in(body: &Value) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last_assistant = messages
        .iter()
        .rposition(|m| m["role"] == "assistant")
        .map_or(0, |at| at + 1);
    let results: Vec<String> = messages[last_assistant..]
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    format!("results: {}", results.join(" | "))
}

/// An SSE stream that never ends: an empty piece every 100 ms.
fn trickle() -> Response {
    let piece = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                       "model": "fake-model",
                       "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": null}]});
    let frame = Bytes::from(format!("data: {piece}\n\n"));
    let pieces = futures::stream::unfold(frame, |frame| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, std::convert::Infallible>(frame.clone()), frame))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(pieces))
        .unwrap()
}

/// `GET /v1/models`, as OpenAI lists them.
async fn models(State(fake): State<FakeModel>, headers: HeaderMap) -> Response {
    if let Some(refusal) = fake.refuse_unless_keyed(&headers) {
        return refusal;
    }
    let model =
        |id: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": "skein-tests"});
    Json(json!({"object": "list", "data": [model("fake-model-large"), model("fake-model")]}))
        .into_response()
}

/// Samples per spoken part: 50 ms at 8 kHz.
pub const SPEECH_SAMPLES: usize = 400;

/// A short WAV per request: mono, 16-bit, 8 kHz, a tone whose pitch depends on the voice.
async fn speech(
    State(fake): State<FakeModel>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refusal) = fake.refuse_unless_keyed(&headers) {
        return refusal;
    }
    let fault = fake
        .script
        .lock()
        .unwrap()
        .take(Purpose::Speech, &headers, &body);
    if fault.is_some() {
        return openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "no voice today",
        );
    }
    let pitch = 200.0 + 50.0 * body["voice"].as_str().map_or(0, str::len) as f64;
    let samples: Vec<u8> = (0..SPEECH_SAMPLES)
        .flat_map(|i| {
            let t = i as f64 / 8000.0;
            (((t * pitch * std::f64::consts::TAU).sin() * 8000.0) as i16).to_le_bytes()
        })
        .collect();
    let mut wav = b"RIFF".to_vec();
    wav.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    for field in [16u32, 0x0001_0001, 8000, 16000, 0x0010_0002] {
        wav.extend_from_slice(&field.to_le_bytes());
    }
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    wav.extend_from_slice(&samples);
    ([("content-type", "audio/wav")], wav).into_response()
}

/// The SSE body: the content in three pieces, then each tool call as OpenAI streams it (its
/// id and name, then its arguments in two fragments), a finish chunk, a usage chunk, `[DONE]`.
fn sse(
    content: String,
    calls: &[(String, String, String)],
    model: String,
    usage: Value,
    broken: Option<Break>,
    thinking: bool,
    delay: Duration,
) -> Response {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let chars: Vec<char> = content.chars().collect();
    let third = chars.len().div_ceil(3).max(1);
    let mut events: Vec<String> = chars
        .chunks(third)
        .map(|piece| {
            chunk(
                json!({"role": "assistant", "content": piece.iter().collect::<String>()}),
                Value::Null,
            )
            .to_string()
        })
        .collect();
    for (index, (id, name, arguments)) in calls.iter().enumerate() {
        events.push(
            chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                       "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            )
            .to_string(),
        );
        let middle = arguments
            .char_indices()
            .nth(arguments.chars().count() / 2)
            .map_or(arguments.len(), |(at, _)| at);
        for piece in [&arguments[..middle], &arguments[middle..]] {
            events.push(
                chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    Value::Null,
                )
                .to_string(),
            );
        }
    }
    let finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    events.push(chunk(json!({}), json!(finish)).to_string());
    events.push(json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage}).to_string());
    events.push("[DONE]".into());
    let stream = async_stream(events, broken, thinking, delay);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

/// How a stream stops short after its first piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    Ends,
    GoesQuiet,
}

fn async_stream(
    events: Vec<String>,
    broken: Option<Break>,
    thinking: bool,
    delay: Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    use futures::StreamExt;
    let comments = if thinking { 10 } else { 0 };
    let thoughts = futures::stream::iter(0..comments).then(|_| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Bytes::from_static(b": still thinking\n\n"))
    });
    let keep = if broken.is_some() { 1 } else { events.len() };
    let quiet = broken == Some(Break::GoesQuiet);
    let silence = futures::stream::iter(quiet.then(futures::stream::pending)).flatten();
    thoughts
        .chain(futures::stream::unfold(
            (events.into_iter().take(keep), 0usize),
            move |(mut rest, sent)| async move {
                let event = rest.next()?;
                if sent > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Some((
                    Ok(Bytes::from(format!("data: {event}\n\n"))),
                    (rest, sent + 1),
                ))
            },
        ))
        .chain(silence)
}
