//! Chat prompts: ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), as SmolLM2's and
//! Qwen2.5's `tokenizer.chat_template` write it, default system turn included.
//!
//! A GGUF's template is Jinja. We do not run it for every prompt: when it is loaded,
//! [minijinja] (configured as Hugging Face's `apply_chat_template` configures jinja2)
//! renders a set of probe conversations with it, and the template is accepted only if
//! every probe comes out as ChatML, optionally preceded by one fixed system turn when the
//! conversation has no system message (that turn's text is read from those renders, so
//! it is whatever the template says). [`ChatTemplate::render`] then writes ChatML
//! directly, which equals the template's output for any system/user/assistant
//! conversation.

use minijinja::syntax::SyntaxConfig;
use minijinja::{context, Environment, Error as JinjaError, ErrorKind, Value as JinjaValue};
use serde::{Deserialize, Serialize};

use crate::gguf::{Gguf, GgufError};
use crate::tokenizer::Tokenizer;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One turn of a conversation (`{"role": "user", "content": "…"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }
}

/// Errors reading a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("unsupported chat template (only ChatML-shaped templates are supported): {reason}; template starts {excerpt:?}")]
    UnsupportedTemplate { excerpt: String, reason: String },
    #[error("bad chat template metadata: {0}")]
    Metadata(#[from] GgufError),
    #[error("metadata key `{key}` is token id {id}, but the vocabulary has {vocab_size} tokens")]
    TokenId {
        key: &'static str,
        id: u64,
        vocab_size: usize,
    },
}

const KEY_TEMPLATE: &str = "tokenizer.chat_template";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";

/// A ChatML chat format, with the default system turn its template inserts (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    default_system: Option<String>,
}

impl ChatTemplate {
    /// Plain ChatML, no default system turn.
    pub fn chatml() -> ChatTemplate {
        ChatTemplate {
            default_system: None,
        }
    }

    /// ChatML with a default system turn inserted when the first message is not a system message.
    pub fn chatml_with_default_system(text: impl Into<String>) -> ChatTemplate {
        ChatTemplate {
            default_system: Some(text.into()),
        }
    }

    /// The template in `tokenizer.chat_template`, rendered with the GGUF's BOS and EOS
    /// tokens; plain ChatML when the key is missing.
    pub fn from_gguf(gguf: &Gguf) -> Result<ChatTemplate, ChatError> {
        match gguf.get(KEY_TEMPLATE) {
            None => Ok(ChatTemplate::chatml()),
            Some(_) => ChatTemplate::from_jinja_with_tokens(
                gguf.get_str(KEY_TEMPLATE)?,
                &SpecialTokens::from_gguf(gguf)?,
            ),
        }
    }

    /// Recognises a Jinja chat template as ChatML (see the module docs), with
    /// `bos_token` and `eos_token` undefined (they print as nothing).
    pub fn from_jinja(source: &str) -> Result<ChatTemplate, ChatError> {
        ChatTemplate::from_jinja_with_tokens(source, &SpecialTokens::default())
    }

    /// Recognises a Jinja chat template as ChatML, with the tokenizer's special tokens.
    pub fn from_jinja_with_tokens(
        source: &str,
        tokens: &SpecialTokens,
    ) -> Result<ChatTemplate, ChatError> {
        let unsupported = |reason: String| ChatError::UnsupportedTemplate {
            excerpt: excerpt(source),
            reason,
        };
        let source = rewrite_generation_tags(source);
        let env = hf_environment().map_err(|e| unsupported(describe_error(&e, &source)))?;
        let template = env.template_from_str(&source).map_err(|e| {
            unsupported(format!("cannot parse it: {}", describe_error(&e, &source)))
        })?;
        let run = |messages: &[Message], gen: bool| {
            let ctx = context! {
                messages => messages_value(messages),
                add_generation_prompt => gen,
                tools => (),
                documents => (),
                bos_token => defined_or_undefined(tokens.bos.as_deref()),
                eos_token => defined_or_undefined(tokens.eos.as_deref()),
            };
            template.render(ctx).map_err(|e| {
                unsupported(format!(
                    "cannot render {} (add_generation_prompt={gen}): {}",
                    describe(messages),
                    describe_error(&e, &source)
                ))
            })
        };

        // The default system turn: what precedes the user turn of a one-message chat.
        let probe = [Message::user("Hello")];
        let out = run(&probe, false)?;
        let turn = ChatTemplate::chatml().render(&probe, false);
        let prefix = out.strip_suffix(&turn).ok_or_else(|| {
            unsupported(format!(
                "a single user message renders as {out:?}, not ChatML"
            ))
        })?;
        let default_system = if prefix.is_empty() {
            None
        } else {
            let text = prefix
                .strip_prefix("<|im_start|>system\n")
                .and_then(|p| p.strip_suffix("<|im_end|>\n"))
                .filter(|t| !t.contains(IM_START) && !t.contains(IM_END))
                .ok_or_else(|| {
                    unsupported(format!("it puts {prefix:?} before the first message"))
                })?;
            Some(text.to_string())
        };
        let chat = ChatTemplate { default_system };

        for messages in probes() {
            for gen in [false, true] {
                let got = run(&messages, gen)?;
                let want = chat.render(&messages, gen);
                if got != want {
                    return Err(unsupported(format!(
                        "for {} (add_generation_prompt={gen}) it renders {got:?}, ChatML is {want:?}",
                        describe(&messages)
                    )));
                }
            }
        }
        Ok(chat)
    }

    /// The system prompt inserted when a conversation does not start with one.
    pub fn default_system(&self) -> Option<&str> {
        self.default_system.as_deref()
    }

    /// The prompt text, as the template renders it. With `add_generation_prompt`, ends
    /// with `<|im_start|>assistant\n` for the model to continue. An empty conversation
    /// gets no default system turn (as SmolLM2's template).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> String {
        let mut out = String::new();
        if let (Some(first), Some(system)) = (messages.first(), &self.default_system) {
            if first.role != Role::System {
                push_turn(&mut out, "system", system);
            }
        }
        for m in messages {
            push_turn(&mut out, m.role.as_str(), &m.content);
        }
        if add_generation_prompt {
            out.push_str("<|im_start|>assistant\n");
        }
        out
    }

    /// The ids that end an assistant turn: see [`stop_ids`].
    pub fn stop_ids(&self, tokenizer: &Tokenizer) -> Vec<u32> {
        stop_ids(tokenizer)
    }
}

/// The ids that end generation: the tokenizer's EOS and `<|im_end|>` (deduplicated).
pub fn stop_ids(tokenizer: &Tokenizer) -> Vec<u32> {
    let mut ids: Vec<u32> = tokenizer
        .eos_id()
        .into_iter()
        .chain(tokenizer.token_id(IM_END))
        .collect();
    ids.dedup();
    ids
}

fn push_turn(out: &mut String, role: &str, content: &str) {
    out.push_str(IM_START);
    out.push_str(role);
    out.push('\n');
    out.push_str(content);
    out.push_str(IM_END);
    out.push('\n');
}

/// The tokenizer's special tokens that a template may print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `bos_token`; undefined in the template when `None`.
    pub bos: Option<String>,
    /// `eos_token`; undefined in the template when `None`.
    pub eos: Option<String>,
}

impl SpecialTokens {
    /// The texts of `tokenizer.ggml.bos_token_id` and `eos_token_id` in
    /// `tokenizer.ggml.tokens`; `None` where a key is missing.
    pub fn from_gguf(gguf: &Gguf) -> Result<SpecialTokens, ChatError> {
        if gguf.get(KEY_TOKENS).is_none() {
            return Ok(SpecialTokens::default());
        }
        let tokens = gguf.get_array(KEY_TOKENS)?;
        Ok(SpecialTokens {
            bos: token_text(gguf, tokens, KEY_BOS)?,
            eos: token_text(gguf, tokens, KEY_EOS)?,
        })
    }
}

/// The text of the token whose id is at `key`; `None` when the key is missing.
fn token_text(
    gguf: &Gguf,
    tokens: &[crate::gguf::Value],
    key: &'static str,
) -> Result<Option<String>, ChatError> {
    if gguf.get(key).is_none() {
        return Ok(None);
    }
    let id = gguf.get_u64(key)?;
    let token = usize::try_from(id)
        .ok()
        .and_then(|i| tokens.get(i))
        .ok_or(ChatError::TokenId {
            key,
            id,
            vocab_size: tokens.len(),
        })?;
    let text = token.as_str().ok_or_else(|| GgufError::WrongType {
        key: KEY_TOKENS.to_string(),
        expected: "an array of strings",
        found: token.type_name(),
    })?;
    Ok(Some(text.to_string()))
}

/// An environment like the one `apply_chat_template` renders with: `trim_blocks`,
/// `lstrip_blocks`, no trailing newline, `raise_exception`, and Python's string and
/// dict methods (`.strip()`, `.startswith()`, `.items()`, …).
fn hf_environment() -> Result<Environment<'static>, JinjaError> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()?,
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<JinjaValue, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, message))
        },
    );
    Ok(env)
}

/// Hugging Face's `{% generation %}…{% endgeneration %}` (its AssistantTracker extension,
/// which marks assistant text for training masks) renders its body unchanged. minijinja
/// has no such tag, so it becomes `{% if true %}…{% endif %}`, a block tag with the same
/// whitespace behaviour.
fn rewrite_generation_tags(source: &str) -> String {
    if !source.contains("generation") {
        return source.to_string();
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        out.push_str("{%");
        let body = &rest[start + 2..];
        let after_marker = body.strip_prefix(['-', '+']).unwrap_or(body);
        let word = after_marker.trim_start();
        let word_len = word
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(word.len());
        let replacement = match &word[..word_len] {
            "generation" => "if true",
            "endgeneration" => "endif",
            _ => {
                rest = body;
                continue;
            }
        };
        out.push_str(&body[..body.len() - word.len()]);
        out.push_str(replacement);
        rest = &word[word_len..];
    }
    out.push_str(rest);
    out
}

/// A missing special token is undefined in the template (as in Hugging Face's), not `None`.
fn defined_or_undefined(text: Option<&str>) -> JinjaValue {
    text.map_or(JinjaValue::UNDEFINED, JinjaValue::from)
}

fn messages_value(messages: &[Message]) -> JinjaValue {
    messages
        .iter()
        .map(|m| context! { role => m.role.as_str(), content => m.content.as_str() })
        .collect()
}

/// minijinja's message, with the template line it points at.
fn describe_error(error: &JinjaError, source: &str) -> String {
    let line = error
        .line()
        .and_then(|n| source.lines().nth(n.saturating_sub(1)));
    match line {
        Some(line) => format!("{error}, at {:?}", excerpt(line.trim())),
        None => error.to_string(),
    }
}

/// Conversations that exercise every way a ChatML template treats system, user and
/// assistant messages.
fn probes() -> Vec<Vec<Message>> {
    use Message as M;
    vec![
        vec![M::user("Hello")],
        vec![M::system("Be brief."), M::user("Hi")],
        vec![
            M::system("S"),
            M::user("U1"),
            M::assistant("A1"),
            M::user("U2"),
            M::assistant("A2"),
        ],
        vec![M::user("U1"), M::assistant("A1"), M::user("U2")],
        vec![M::assistant("A1"), M::user("U1")],
        vec![M::user("U1"), M::system("S2"), M::user("U2")],
        vec![M::system("only system")],
        vec![M::assistant("")],
        vec![
            M::user("  padded \n text\n\n"),
            M::assistant("\nnewline first"),
        ],
    ]
}

fn describe(messages: &[Message]) -> String {
    let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
    format!("messages [{}]", roles.join(", "))
}

fn excerpt(source: &str) -> String {
    let mut s: String = source.chars().take(80).collect();
    if s.len() < source.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_render() {
        let chat = ChatTemplate::chatml_with_default_system("SYS");
        let msgs = [Message::user("hi")];
        assert_eq!(chat.render(&msgs, true), "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        assert_eq!(chat.render(&[], false), "");
    }

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            rewrite_generation_tags("a{%- generation +%}b{%endgeneration-%}{% if x %}{{ '{%' }}"),
            "a{%- if true +%}b{%endif-%}{% if x %}{{ '{%' }}"
        );
        assert_eq!(
            rewrite_generation_tags("{% generations %}"),
            "{% generations %}"
        );
    }

    #[test]
    fn message_json() {
        let m: Message = serde_json::from_str(r#"{"role":"assistant","content":"x"}"#).unwrap();
        assert_eq!(m, Message::assistant("x"));
        assert!(serde_json::from_str::<Message>(r#"{"role":"robot","content":"x"}"#).is_err());
    }
}
