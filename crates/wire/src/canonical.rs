//! The canonical chat form every dialect translates to and from, and the codec traits each dialect implements.
//!
//! Translation is used only when the client's dialect differs from the upstream's; same-dialect
//! calls keep the byte passthrough. Streaming is transcoded event by event, never collected.

use serde_json::Value;

/// A chat request in no dialect in particular.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    /// System prompt(s), joined in order.
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    /// What only Ollama's native API carries (`think`, `keep_alive`, runner options).
    pub ollama: OllamaExtras,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`; other dialects always report usage.
    pub include_usage: bool,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub response_format: Option<ResponseFormat>,
    /// End-user id (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// Legacy completion (`/v1/completions`, `/api/generate`): the prompt arrived as one user message.
    pub legacy_prompt: bool,
    /// Egress only, set by the gateway from the upstream's `max_tokens_field`: OpenAI chat
    /// bodies carry the limit as `max_tokens` (older OpenAI-compatible servers) instead of
    /// `max_completion_tokens`. Decoders leave it `false`.
    pub legacy_max_tokens: bool,
}

/// Fields of a request only Ollama's native `/api/chat` carries, from clients of any dialect
/// (OpenAI `reasoning_effort` and `extra_body` members, Anthropic `thinking`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OllamaExtras {
    /// Ollama `think`: reasoning on, off, or at a level.
    pub think: Option<Think>,
    /// Ollama `keep_alive` (a duration string or seconds): how long the runner keeps the model
    /// loaded. It does not change the answer, so other dialects leave it out.
    pub keep_alive: Option<Value>,
    /// Members of Ollama's `options` canonical has no field for (`num_ctx`, `repeat_penalty`, …).
    pub options: serde_json::Map<String, Value>,
}

impl OllamaExtras {
    pub fn is_empty(&self) -> bool {
        self.think.is_none() && self.keep_alive.is_none() && self.options.is_empty()
    }
}

/// Whether (and how hard) the model reasons before it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Think {
    On,
    Off,
    /// `low`, `medium` or `high` (OpenAI `reasoning_effort`, Ollama's levels for gpt-oss).
    Level(String),
}

impl ChatRequest {
    /// This request with Gemini's thought signatures taken out of its tool-call ids (see
    /// `gemini::signature`), for the other dialects: the signature only means something to
    /// Gemini, and a call id that carries one is too long for some of them (OpenAI caps tool-call
    /// ids at 40 characters). Borrowed as it is when no id carries one (the usual case).
    pub fn without_signatures(&self) -> std::borrow::Cow<'_, ChatRequest> {
        use crate::gemini::signature::split;
        let signed = |id: &str| split(id).1.is_some();
        let any = self.messages.iter().any(|m| {
            m.tool_calls.iter().any(|c| signed(&c.id))
                || m.tool_call_id.as_deref().is_some_and(signed)
        });
        if !any {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut plain = self.clone();
        for m in &mut plain.messages {
            for c in &mut m.tool_calls {
                c.id = split(&c.id).0.to_string();
            }
            if let Some(id) = m.tool_call_id.as_mut() {
                *id = split(id).0.to_string();
            }
        }
        std::borrow::Cow::Owned(plain)
    }

    /// Refuses what only Ollama's native API carries, for an encoder of another dialect
    /// (`target` names it). `keep_alive` only steers the runner and is left out without a word.
    pub(crate) fn refuse_ollama_extras(&self, target: &str) -> Result<(), TranslateError> {
        // Not thinking is what the other targets do unasked: only a request to think is refused.
        if matches!(self.ollama.think, Some(Think::On | Think::Level(_))) {
            return Err(TranslateError::new(
                "think",
                format!("reasoning options (thinking, reasoning_effort, think) cannot be translated to {target}"),
            ));
        }
        if let Some(key) = self.ollama.options.keys().next() {
            return Err(TranslateError::new(
                format!("options.{key}"),
                format!("Ollama runner options cannot be translated to {target}"),
            ));
        }
        Ok(())
    }

    /// The function name of tool result `i`: its own, else that of the call it answers.
    pub(crate) fn tool_name(&self, i: usize) -> Option<String> {
        let m = self.messages.get(i)?;
        if let Some(n) = &m.name {
            return Some(n.clone());
        }
        let id = m.tool_call_id.as_deref()?;
        self.messages
            .get(..i)?
            .iter()
            .rev()
            .flat_map(|m| m.tool_calls.iter())
            .find(|c| c.id == id)
            .map(|c| c.name.clone())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    /// The result of a tool call (`tool_call_id` says which).
    Tool,
    /// A system (or developer) message in the middle of the conversation, kept in its place.
    /// System messages before the first other message go to [`ChatRequest::system`] instead.
    System,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
    /// Calls the assistant made in this turn.
    pub tool_calls: Vec<ToolCall>,
    /// For `Role::Tool`: the call this answers.
    pub tool_call_id: Option<String>,
    /// For `Role::Tool`: the tool's name when the dialect needs it (Gemini `functionResponse.name`).
    pub name: Option<String>,
    /// For `Role::Tool`: the tool reported a failure (Anthropic `tool_result.is_error`).
    pub is_error: bool,
}

impl Message {
    /// The id of the call this tool result (message `i` of the request) answers, which every
    /// dialect that names calls requires.
    pub(crate) fn answered_call(&self, i: usize) -> Result<String, TranslateError> {
        self.tool_call_id.clone().ok_or_else(|| {
            TranslateError::new(
                format!("messages[{i}].tool_call_id"),
                "a tool result must name the call it answers",
            )
        })
    }

    /// A message of `role` with `content` and nothing else.
    pub fn new(role: Role, content: Vec<Part>) -> Message {
        Message {
            role,
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            is_error: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    Image(Image),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Image {
    Url(String),
    Base64 { media_type: String, data: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    /// Strict schema adherence (OpenAI `function.strict`, Anthropic `strict`); `None`: not said.
    pub strict: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Tool(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (OpenAI's form); dialects with objects parse/serialize it.
    pub arguments: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    /// Plain text (the default, said explicitly).
    Text,
    /// Any JSON object (OpenAI `json_object`, Gemini `application/json`, Ollama `"json"`).
    JsonObject,
    /// JSON following `schema` (OpenAI `json_schema`, Anthropic `output_config.format`,
    /// Gemini `responseJsonSchema`, Ollama `format` as a schema object).
    JsonSchema {
        name: String,
        schema: Value,
        strict: bool,
    },
}

/// A whole (non-streamed) answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish: FinishReason,
    pub usage: Usage,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FinishReason {
    #[default]
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// The server paused a long turn (Anthropic `pause_turn`): sending the answer back
    /// continues it.
    Paused,
    /// The model produced a tool call that does not parse (Gemini `MALFORMED_FUNCTION_CALL`,
    /// `UNEXPECTED_TOOL_CALL`): the turn is incomplete and is worth retrying.
    MalformedToolCall,
}

/// Token counts of one answer. The details are parts of the totals, so a dialect that cannot
/// say them still reports the right totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every prompt token, cached ones included (OpenAI's `prompt_tokens`; Anthropic's
    /// `input_tokens` plus its cache reads and writes).
    pub input_tokens: u64,
    /// Every generated token, reasoning included.
    pub output_tokens: u64,
    /// Of `input_tokens`: read from the provider's prompt cache (Anthropic
    /// `cache_read_input_tokens`, OpenAI `cached_tokens`, Gemini `cachedContentTokenCount`).
    pub cached_input_tokens: u64,
    /// Of `input_tokens`: written to the prompt cache (Anthropic `cache_creation_input_tokens`).
    pub cache_write_tokens: u64,
    /// Of `output_tokens`: spent on reasoning (OpenAI `reasoning_tokens`, Gemini
    /// `thoughtsTokenCount`).
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Input tokens that were neither read from nor written to a cache.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_write_tokens)
    }
}

/// One step of a streamed answer. A decoder emits these as upstream bytes arrive; an encoder
/// writes each one in the client's dialect at once.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// First event of every stream.
    Start {
        id: String,
        model: String,
    },
    Text(String),
    /// A tool call begins; `index` counts tool calls from 0 within the answer.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A fragment of the tool call's JSON arguments.
    ToolCallArgs {
        index: usize,
        fragment: String,
    },
    Finish(FinishReason),
    /// The final usage; comes after `Finish`.
    Usage(Usage),
    /// The input counts, known before the answer (Gemini's first chunk, Anthropic's
    /// `message_start`); may come before `Start`. Only encoders that report input up front use it.
    Prompt(Usage),
    /// The upstream reported an error inside the stream.
    Error(String),
}

/// A request that cannot be expressed in the target dialect, or a body that is not valid in
/// the source one. Rendered as a 400 naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateError {
    /// JSON path of the offending field, e.g. `messages[2].content[0]` or `n`.
    pub field: String,
    pub message: String,
}

impl TranslateError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
        TranslateError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for TranslateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "`{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for TranslateError {}

/// Embeddings in no dialect in particular.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EmbedRequest {
    pub model: String,
    pub inputs: Vec<String>,
    pub dimensions: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EmbedResponse {
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    pub input_tokens: u64,
}

/// Turns upstream stream bytes (SSE or NDJSON, split anywhere) into events.
pub trait StreamDecoder: Send {
    /// Feeds bytes as they arrive; complete events are appended to `out`. Partial frames are kept.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), TranslateError>;
    /// The upstream closed the stream: flush what is left (an unterminated last line, say).
    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError>;
}

/// Writes events in a client's dialect, including its framing (SSE or NDJSON).
pub trait StreamEncoder: Send {
    fn content_type(&self) -> &'static str;
    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>);
    /// The stream ended cleanly: write the dialect's terminator (`[DONE]`, `message_stop`, …) if not yet written.
    fn finish(&mut self, out: &mut Vec<u8>);
}

/// Which call of a dialect a body belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Chat: OpenAI chat completions, Anthropic messages, Gemini generateContent, Ollama /api/chat.
    Chat,
    /// Legacy prompt completion: OpenAI /v1/completions, Ollama /api/generate.
    Completion,
}

/// One dialect's translation to and from the canonical form.
pub trait Codec: Sync {
    /// Client body → canonical (ingress).
    fn decode_request(&self, op: Op, body: &[u8]) -> Result<ChatRequest, TranslateError>;
    /// Canonical → upstream body (egress). Fails, naming the field, when the request uses something this dialect cannot express.
    fn encode_request(&self, req: &ChatRequest) -> Result<Vec<u8>, TranslateError>;
    /// Upstream non-streamed answer → canonical.
    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, TranslateError>;
    /// Canonical answer → client body.
    fn encode_response(&self, op: Op, resp: &ChatResponse) -> Vec<u8>;
    fn stream_decoder(&self) -> Box<dyn StreamDecoder>;
    fn stream_encoder(&self, op: Op) -> Box<dyn StreamEncoder>;
    /// An upstream error body (any status) → its message, for re-rendering in the client's dialect.
    fn error_message(&self, body: &[u8]) -> Option<String>;
}

/// A mid-conversation system message ([`Role::System`]) as the text of a user turn, in the
/// dialects that take system instructions only at the top (Anthropic, Gemini): the text
/// wrapped in `<system>` … `</system>` lines, in its place in the conversation.
pub fn system_turn_text(m: &Message) -> String {
    let text: Vec<&str> = m
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            Part::Image(_) => None,
        })
        .collect();
    format!("<system>\n{}\n</system>", text.join("\n"))
}

/// `data:<media type>;base64,<data>` → its parts; anything else is a plain URL.
pub(crate) fn image_from_url(url: &str) -> Image {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((head, data)) = rest.split_once(',') {
            if let Some(media_type) = head.strip_suffix(";base64") {
                return Image::Base64 {
                    media_type: media_type.to_string(),
                    data: data.to_string(),
                };
            }
        }
    }
    Image::Url(url.to_string())
}

pub(crate) fn image_to_url(image: &Image) -> String {
    match image {
        Image::Url(u) => u.clone(),
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
    }
}
