//! Chat prompts: ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), as SmolLM2's and
//! Qwen2.5's `tokenizer.chat_template` write it, default system turn included.
//!
//! A GGUF's template is Jinja. We do not run it for every prompt: when it is loaded, a
//! small interpreter ([`jinja`]) renders a set of probe conversations with it, and the
//! template is accepted only if every probe comes out as ChatML, optionally preceded by
//! one fixed system turn when the conversation has no system message (that turn's text
//! is read from those renders, so it is whatever the template says). [`ChatTemplate::render`]
//! then writes ChatML directly, which equals the template's output for any
//! system/user/assistant conversation.

mod jinja;

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
}

const KEY_TEMPLATE: &str = "tokenizer.chat_template";
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

    /// The template in `tokenizer.chat_template`; plain ChatML when the key is missing.
    pub fn from_gguf(gguf: &Gguf) -> Result<ChatTemplate, ChatError> {
        match gguf.get(KEY_TEMPLATE) {
            None => Ok(ChatTemplate::chatml()),
            Some(_) => ChatTemplate::from_jinja(gguf.get_str(KEY_TEMPLATE)?),
        }
    }

    /// Recognises a Jinja chat template as ChatML (see the module docs).
    pub fn from_jinja(source: &str) -> Result<ChatTemplate, ChatError> {
        let unsupported = |reason: String| ChatError::UnsupportedTemplate {
            excerpt: excerpt(source),
            reason,
        };
        let template = jinja::Template::parse(source)
            .map_err(|e| unsupported(format!("cannot parse it: {e}")))?;
        let run = |messages: &[Message], gen: bool| {
            template
                .render(to_value(messages), gen)
                .map_err(|e| unsupported(format!("cannot render it: {e}")))
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

fn to_value(messages: &[Message]) -> jinja::Value {
    jinja::Value::List(
        messages
            .iter()
            .map(|m| {
                jinja::Value::Map(vec![
                    ("role".into(), jinja::Value::Str(m.role.as_str().into())),
                    ("content".into(), jinja::Value::Str(m.content.clone())),
                ])
            })
            .collect(),
    )
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
    fn message_json() {
        let m: Message = serde_json::from_str(r#"{"role":"assistant","content":"x"}"#).unwrap();
        assert_eq!(m, Message::assistant("x"));
        assert!(serde_json::from_str::<Message>(r#"{"role":"robot","content":"x"}"#).is_err());
    }
}
