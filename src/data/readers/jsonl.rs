//! Chat examples as JSON Lines or a JSON array. Each object is one of:
//! - ChatML messages: `{"messages": [{"role": "user", "content": "…"}, …]}`
//! - alpaca: `{"instruction": "…", "input": "…" (optional), "output": "…"}`
//! - prompt/completion: `{"prompt": "…", "completion": "…"}`
//!
//! A malformed line is reported with its number and what is wrong, and skipped; the
//! rest of the file is used.

use std::io::BufRead;

use serde_json::{Map, Value};

use super::{Conversation, Issues};
use crate::chat::{Message, Role};
use crate::data::error::DataError;
use crate::data::normalize::{clean_text, LineReader};

/// Longest JSONL line we accept (bytes).
const MAX_LINE: usize = 4 << 20;

/// Reads JSON Lines and hands each conversation to `emit`. Returns the number read.
pub fn read_jsonl<R: BufRead>(
    file: &str,
    input: R,
    issues: &mut Issues,
    emit: &mut dyn FnMut(Conversation) -> Result<(), DataError>,
) -> Result<usize, DataError> {
    let mut reader = LineReader::new(input, MAX_LINE);
    let mut raw = Vec::new();
    let mut count = 0;
    let mut skipping_long = false;
    while let Some(cut) = reader.next_line_of(file, &mut raw)? {
        let line = reader.line;
        if skipping_long {
            skipping_long = cut;
            continue;
        }
        if cut {
            skipping_long = true;
            issues.errors.push(bad_line(file, line, format!("the line is longer than {} MiB", MAX_LINE >> 20)));
            continue;
        }
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim().trim_start_matches('\u{FEFF}');
        if text.is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                issues.errors.push(bad_line(file, line, format!("not valid JSON at column {}: {e}", e.column())));
                continue;
            }
        };
        match conversation(&value, format!("line {line}")) {
            Ok(conv) => {
                emit(conv)?;
                count += 1;
            }
            Err(what) => issues.errors.push(bad_line(file, line, what)),
        }
    }
    if count == 0 {
        return Err(DataError::NoContent {
            file: file.to_string(),
            what: "no line holds a usable example".to_string(),
        });
    }
    Ok(count)
}

/// Reads a JSON file: an array of examples, or one example object.
pub fn read_json(file: &str, text: &str, issues: &mut Issues) -> Result<Vec<Conversation>, DataError> {
    let value: Value = serde_json::from_str(text.trim_start_matches('\u{FEFF}')).map_err(|e| DataError::BadJson {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        what: e.to_string(),
    })?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(_) => vec![value],
        _ => {
            return Err(DataError::BadJson {
                file: file.to_string(),
                line: 1,
                column: 1,
                what: "expected an array of examples or one example object".to_string(),
            })
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match conversation(item, format!("item {}", i + 1)) {
            Ok(conv) => out.push(conv),
            Err(what) => issues.errors.push(DataError::BadJsonLine {
                file: file.to_string(),
                line: i + 1,
                what: format!("(array item {}) {what}", i + 1),
            }),
        }
    }
    if out.is_empty() {
        return Err(DataError::NoContent {
            file: file.to_string(),
            what: "no item holds a usable example".to_string(),
        });
    }
    Ok(out)
}

fn bad_line(file: &str, line: usize, what: String) -> DataError {
    DataError::BadJsonLine {
        file: file.to_string(),
        line,
        what,
    }
}

/// One example object as a conversation, or what is wrong with it.
pub fn conversation(value: &Value, location: String) -> Result<Conversation, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, found {}", kind(value)))?;
    if let Some(messages) = obj.get("messages") {
        return chat(messages, location);
    }
    let pair = |user: String, assistant: String| Conversation {
        messages: vec![Message::user(user), Message::assistant(assistant)],
        location: location.clone(),
        qa: true,
        hint: None,
    };
    if obj.contains_key("instruction") || obj.contains_key("output") {
        let instruction = string_field(obj, "instruction")?;
        let input = match obj.get("input") {
            None | Some(Value::Null) => String::new(),
            Some(_) => string_field(obj, "input")?,
        };
        let output = string_field(obj, "output")?;
        let user = if input.is_empty() {
            instruction
        } else {
            format!("{instruction}\n\n{input}")
        };
        return Ok(pair(user, output));
    }
    if obj.contains_key("prompt") || obj.contains_key("completion") {
        let prompt = string_field(obj, "prompt")?;
        let completion = string_field(obj, "completion")?;
        return Ok(pair(prompt, completion));
    }
    let keys: Vec<&str> = obj.keys().map(String::as_str).take(8).collect();
    Err(format!(
        "expected `messages` (ChatML), `instruction`/`output` (alpaca) or `prompt`/`completion` keys; found {keys:?}"
    ))
}

fn chat(messages: &Value, location: String) -> Result<Conversation, String> {
    let list = messages
        .as_array()
        .ok_or_else(|| format!("`messages` must be an array, found {}", kind(messages)))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let n = i + 1;
        let obj = m
            .as_object()
            .ok_or_else(|| format!("message {n} must be an object with `role` and `content`, found {}", kind(m)))?;
        let role = match obj.get("role").and_then(Value::as_str) {
            Some("system") => Role::System,
            Some("user") | Some("human") => Role::User,
            Some("assistant") | Some("gpt") => Role::Assistant,
            Some(other) => return Err(format!("message {n}: role {other:?} is not system, user or assistant")),
            None => return Err(format!("message {n}: `role` is missing or not a string")),
        };
        let content = match obj.get("content") {
            Some(Value::String(s)) => clean_text(s),
            Some(other) => return Err(format!("message {n}: `content` must be a string, found {}", kind(other))),
            None => return Err(format!("message {n}: `content` is missing")),
        };
        if role == Role::System && i > 0 {
            return Err(format!("message {n}: a system message may only come first"));
        }
        out.push(Message::new(role, content));
    }
    if !out.iter().any(|m| m.role == Role::Assistant && !m.content.is_empty()) {
        return Err("the conversation has no assistant message to learn from".to_string());
    }
    Ok(Conversation {
        messages: out,
        location,
        qa: false,
        hint: None,
    })
}

fn string_field(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) => {
            let s = clean_text(s);
            if s.is_empty() && key != "input" {
                Err(format!("`{key}` is empty"))
            } else {
                Ok(s)
            }
        }
        Some(other) => Err(format!("`{key}` must be a string, found {}", kind(other))),
        None => Err(format!("`{key}` is missing")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
