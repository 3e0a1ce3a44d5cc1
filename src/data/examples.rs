//! Training examples: the tokens the model sees and which of them it learns from.
//!
//! Chat examples are ChatML exactly as [`ChatTemplate::render`] writes it (the default
//! system turn included when the template has one). They are tokenized turn by turn so
//! the loss mask is exact: 1 on each assistant turn's content and its `<|im_end|>`, 0 on
//! everything else (system and user turns, the `<|im_start|>assistant\n` header, the
//! newline after `<|im_end|>`). Message text is encoded with special tokens off, so a
//! literal `<|im_end|>` typed into course material cannot end a turn.

use serde::{Deserialize, Serialize};

use super::edits::ExampleKey;
use super::readers::Conversation;
use crate::chat::{ChatTemplate, Message, Role};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Raw-text window or chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExampleKind {
    Text,
    Chat,
}

/// One training example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub kind: ExampleKind,
    /// The input file.
    pub source: String,
    /// Where in it ("line 4", "page 2, section \"Evaporation\"").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
    /// Chat examples: the conversation, system prompt included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    /// Text examples: the window's text (context line + body), decoded from its ids.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    pub input_ids: Vec<u32>,
    /// 1 where the loss is computed (the model predicts this token), else 0.
    pub loss_mask: Vec<u8>,
    /// Cut to the sequence length.
    #[serde(default)]
    pub truncated: bool,
    /// Set when the teacher changed it: the identity of the example the course
    /// material made (edits are keyed by it, and an edited text has another digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<ExampleKey>,
}

impl Example {
    /// Leading tokens the model reads but is not trained on: a text window's context
    /// line (and BOS), a chat's turns before the first answer.
    pub fn context_len(&self) -> usize {
        self.loss_mask.iter().take_while(|&&m| m == 0).count()
    }

    /// Tokens the loss is computed on.
    pub fn trained_tokens(&self) -> usize {
        // Eight mask bytes at a time: a byte's high bit in `zero` is set exactly when
        // the byte is 0.
        const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
        let chunks = self.loss_mask.chunks_exact(8);
        let rest = chunks.remainder();
        let full = self.loss_mask.len() - rest.len();
        let rest = rest.iter().filter(|&&m| m != 0).count();
        let mut zeros = 0;
        for chunk in chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let x = u64::from_le_bytes(word);
            let zero = !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7);
            zeros += zero.count_ones() as usize;
        }
        full - zeros + rest
    }
}

/// System prompts for the education uses that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Asks guiding questions instead of handing out answers.
    SocraticTutor,
    /// Answers precisely from the course.
    TeachingAssistant,
    /// Writes exercises and quizzes on the course.
    ResourceGenerator,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::SocraticTutor, Preset::TeachingAssistant, Preset::ResourceGenerator];

    pub fn name(self) -> &'static str {
        match self {
            Preset::SocraticTutor => "socratic-tutor",
            Preset::TeachingAssistant => "teaching-assistant",
            Preset::ResourceGenerator => "resource-generator",
        }
    }

    /// `socratic-tutor`, `socratic`, `tutor`, `teaching-assistant`, `assistant`, `ta`,
    /// `resource-generator`, `resources`, `quiz` (case and `_`/space ignored).
    pub fn from_name(name: &str) -> Option<Preset> {
        let n = name.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        match n.as_str() {
            "socratic-tutor" | "socratic" | "tutor" => Some(Preset::SocraticTutor),
            "teaching-assistant" | "assistant" | "ta" => Some(Preset::TeachingAssistant),
            "resource-generator" | "resources" | "generator" | "quiz" => Some(Preset::ResourceGenerator),
            _ => None,
        }
    }

    /// The default system prompt (the teacher may replace it).
    pub fn system_prompt(self) -> &'static str {
        match self {
            Preset::SocraticTutor => {
                "You are a patient Socratic tutor for this course. Do not simply give the answer. \
                 Ask one short guiding question at a time that helps the student notice the next step, \
                 build on what they already know, and confirm their reasoning when they get there."
            }
            Preset::TeachingAssistant => {
                "You are a teaching assistant for this course. Answer the student's question clearly \
                 and precisely, using only what the course material says. If the material does not \
                 cover it, say so."
            }
            Preset::ResourceGenerator => {
                "You help the teacher create classroom resources for this course: practice questions, \
                 quizzes and exercises with answers, at the level of the course material and faithful to it."
            }
        }
    }
}

/// The conversation a Q&A pair or chat becomes under `preset`, with `system` first.
///
/// Full chats keep their own system message if they have one. Q&A pairs are shaped by
/// the preset: the teaching assistant answers; the Socratic tutor replies with the
/// sheet's `hint` (guiding question) when there is one, else the answer; the resource
/// generator is asked for a quiz question on the topic and writes question and answer.
pub fn conversation_messages(conv: &Conversation, preset: Option<Preset>, system: &str, topic: &str) -> Vec<Message> {
    let mut messages = Vec::with_capacity(conv.messages.len() + 1);
    let has_system = conv.messages.first().is_some_and(|m| m.role == Role::System);
    if !has_system && !system.is_empty() {
        messages.push(Message::system(system));
    }
    let pair = match conv.messages.as_slice() {
        [q, a] if conv.qa && q.role == Role::User && a.role == Role::Assistant => Some((q, a)),
        _ => None,
    };
    match (pair, preset) {
        (Some((q, a)), Some(Preset::ResourceGenerator)) => {
            messages.push(Message::user(format!("Write one quiz question with its answer about {topic}.")));
            messages.push(Message::assistant(format!("Question: {}\nAnswer: {}", q.content, a.content)));
        }
        (Some((q, _)), Some(Preset::SocraticTutor)) if conv.hint.is_some() => {
            messages.push(q.clone());
            messages.push(Message::assistant(conv.hint.clone().unwrap_or_default()));
        }
        _ => messages.extend(conv.messages.iter().cloned()),
    }
    messages
}

/// Token ids and loss mask of a conversation as `template` renders it, cut to `seq_len`.
/// Returns (ids, mask, truncated).
pub fn tokenize_chat(
    tok: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
    seq_len: usize,
) -> Result<(Vec<u32>, Vec<u8>, bool), TokenizerError> {
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    if tok.add_bos() {
        ids.extend(tok.bos_id());
        mask.resize(ids.len(), 0);
    }
    let end = tok.encode("<|im_end|>", true)?;
    let newline = tok.encode("\n", false)?;
    let push = |ids_part: &[u32], m: u8, ids: &mut Vec<u32>, mask: &mut Vec<u8>| {
        ids.extend_from_slice(ids_part);
        mask.resize(ids.len(), m);
    };
    let default_system = match (messages.first(), template.default_system()) {
        (Some(first), Some(text)) if first.role != Role::System => Some(Message::system(text)),
        _ => None,
    };
    for m in default_system.iter().chain(messages) {
        let header = tok.encode(&format!("<|im_start|>{}\n", m.role.as_str()), true)?;
        let trained = u8::from(m.role == Role::Assistant);
        push(&header, 0, &mut ids, &mut mask);
        push(&tok.encode(&m.content, false)?, trained, &mut ids, &mut mask);
        push(&end, trained, &mut ids, &mut mask);
        push(&newline, 0, &mut ids, &mut mask);
    }
    let truncated = ids.len() > seq_len;
    ids.truncate(seq_len);
    mask.truncate(seq_len);
    Ok((ids, mask, truncated))
}

/// A chat example: `messages` tokenized by [`tokenize_chat`] (the mask on the
/// assistant turns), cut to `seq_len`.
pub fn chat_example(
    tok: &Tokenizer,
    template: &ChatTemplate,
    source: &str,
    location: &str,
    messages: Vec<Message>,
    seq_len: usize,
) -> Result<Example, TokenizerError> {
    let (input_ids, loss_mask, truncated) = tokenize_chat(tok, template, &messages, seq_len)?;
    Ok(Example {
        kind: ExampleKind::Chat,
        source: source.to_string(),
        location: location.to_string(),
        messages,
        text: String::new(),
        input_ids,
        loss_mask,
        truncated,
        edited: None,
    })
}

/// A text example: the `context` ids (a window's context line, read but not trained
/// on) then `body`, every token of which is trained, cut to `seq_len`. Its text is
/// decoded from the ids, as a window's is.
pub fn text_example(
    tok: &Tokenizer,
    source: &str,
    location: &str,
    context: &[u32],
    body: &str,
    seq_len: usize,
) -> Result<Example, TokenizerError> {
    let mut input_ids = context.to_vec();
    input_ids.extend(tok.encode(body, false)?);
    let mut loss_mask = vec![0u8; context.len()];
    loss_mask.resize(input_ids.len(), 1);
    let truncated = input_ids.len() > seq_len;
    input_ids.truncate(seq_len);
    loss_mask.truncate(seq_len);
    Ok(Example {
        kind: ExampleKind::Text,
        source: source.to_string(),
        location: location.to_string(),
        messages: Vec::new(),
        text: tok.decode(&input_ids)?,
        input_ids,
        loss_mask,
        truncated,
        edited: None,
    })
}
