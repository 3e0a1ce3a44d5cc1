//! The teacher's changes to prepared examples as the worker keeps them: one
//! [`ExampleEdit`] per example touched, found by the example's identity. Plain logic,
//! tested natively; the engine's pipeline applies the edits (`data::Edit`).

use std::fmt;

use crate::protocol::{ExampleChange, ExampleContent, ExampleEdit, ExampleId, ExampleView, Speaker};

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditError {
    /// A message (or the text) was left empty.
    Empty(Option<Speaker>),
    /// The example is not among those last prepared.
    Gone,
    /// The change does not fit the example (another kind, another number of messages).
    Mismatch,
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditError::Empty(Some(role)) => {
                write!(f, "The {} is empty: write it, or delete the example instead.", role.label())
            }
            EditError::Empty(None) => f.write_str("The text is empty: write it, or delete the example instead."),
            EditError::Gone => f.write_str("This example is no longer in the course as prepared now: find it in the list again."),
            EditError::Mismatch => f.write_str("This change does not fit the example: open it again and edit it there."),
        }
    }
}

/// Records `change` of the example `id`; `shown` is that example as the teacher saw it
/// (every change but a restore needs it). An edit that no longer changes anything is
/// dropped.
pub fn record(
    edits: &mut Vec<ExampleEdit>,
    id: &ExampleId,
    change: &ExampleChange,
    shown: Option<&ExampleView>,
) -> Result<(), EditError> {
    let at = match edits.iter().position(|e| e.id == *id) {
        Some(at) => at,
        None => {
            edits.push(ExampleEdit { id: id.clone(), deleted: false, messages: Vec::new(), body: None, label: String::new() });
            edits.len() - 1
        }
    };
    // A refused change alters nothing (a new entry stays empty and goes).
    let result = apply(&mut edits[at], change, shown);
    if is_empty(&edits[at]) {
        edits.remove(at);
    }
    result
}

fn is_empty(edit: &ExampleEdit) -> bool {
    !edit.deleted && edit.messages.is_empty() && edit.body.is_none()
}

fn apply(edit: &mut ExampleEdit, change: &ExampleChange, shown: Option<&ExampleView>) -> Result<(), EditError> {
    match change {
        ExampleChange::Restore => {
            edit.deleted = false;
            return Ok(());
        }
        ExampleChange::Revert => {
            edit.messages.clear();
            edit.body = None;
            return Ok(());
        }
        _ => {}
    }
    let shown = shown.ok_or(EditError::Gone)?;
    match (change, &shown.content) {
        (ExampleChange::Delete, _) => {
            edit.deleted = true;
            edit.label = shown.label();
        }
        (ExampleChange::Chat { contents }, ExampleContent::Chat { messages }) => {
            if contents.len() != messages.len() {
                return Err(EditError::Mismatch);
            }
            if let Some(m) = messages.iter().zip(contents).find(|(_, c)| c.trim().is_empty()) {
                return Err(EditError::Empty(Some(m.0.role)));
            }
            for (at, (message, content)) in messages.iter().zip(contents).enumerate() {
                if message.content != *content {
                    let at = at as u32;
                    edit.messages.retain(|(i, _)| *i != at);
                    edit.messages.push((at, content.clone()));
                }
            }
            edit.messages.sort_by_key(|(i, _)| *i);
        }
        (ExampleChange::Text { body }, ExampleContent::Text { body: old, .. }) => {
            if body.trim().is_empty() {
                return Err(EditError::Empty(None));
            }
            if body != old {
                edit.body = Some(body.clone());
            }
        }
        _ => return Err(EditError::Mismatch),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ChatMessage;

    fn id(location: &str) -> ExampleId {
        ExampleId { source: "qa.csv".into(), location: location.into(), window: String::new() }
    }

    fn chat(location: &str, answer: &str) -> ExampleView {
        let message = |role, content: &str| ChatMessage { role, content: content.into() };
        ExampleView {
            id: id(location),
            number: 1,
            held_out: false,
            tokens: 30,
            trained_tokens: 8,
            truncated: false,
            edited: false,
            rendered: String::new(),
            content: ExampleContent::Chat {
                messages: vec![
                    message(Speaker::System, "Be precise."),
                    message(Speaker::User, "What is   ice?"),
                    message(Speaker::Assistant, answer),
                ],
            },
        }
    }

    fn contents(answer: &str) -> ExampleChange {
        ExampleChange::Chat { contents: vec!["Be precise.".into(), "What is   ice?".into(), answer.into()] }
    }

    #[test]
    fn only_the_changed_messages_are_kept() {
        let mut edits = Vec::new();
        record(&mut edits, &id("line 2"), &contents("Frozen water."), Some(&chat("line 2", "Frozen water."))).unwrap();
        assert!(edits.is_empty(), "nothing changed");
        record(&mut edits, &id("line 2"), &contents("Solid water."), Some(&chat("line 2", "Frozen water."))).unwrap();
        assert_eq!(edits[0].messages, vec![(2, "Solid water.".to_string())]);
        // Edited again as shown (with the first edit): the positions merge.
        let mut question = contents("Solid water.");
        if let ExampleChange::Chat { contents } = &mut question {
            contents[1] = "What is ice made of?".into();
        }
        record(&mut edits, &id("line 2"), &question, Some(&chat("line 2", "Solid water."))).unwrap();
        assert_eq!(edits[0].messages, vec![(1, "What is ice made of?".into()), (2, "Solid water.".into())]);
        record(&mut edits, &id("line 2"), &ExampleChange::Revert, None).unwrap();
        assert!(edits.is_empty());
    }

    #[test]
    fn empty_messages_and_misfits_are_refused() {
        let mut edits = Vec::new();
        let err = record(&mut edits, &id("line 2"), &contents("  \n"), Some(&chat("line 2", "Frozen water."))).unwrap_err();
        assert_eq!(err.to_string(), "The assistant's answer is empty: write it, or delete the example instead.");
        let text = ExampleChange::Text { body: "Ice.".into() };
        assert_eq!(record(&mut edits, &id("line 2"), &text, Some(&chat("line 2", "A"))), Err(EditError::Mismatch));
        assert_eq!(record(&mut edits, &id("line 2"), &ExampleChange::Delete, None), Err(EditError::Gone));
        assert!(edits.is_empty(), "refused changes leave nothing behind");
        let window = ExampleView {
            content: ExampleContent::Text { context: "notes.md › Ice\n\n".into(), body: "Ice floats.".into() },
            ..chat("section \"Ice\"", "")
        };
        let empty = ExampleChange::Text { body: " ".into() };
        assert_eq!(record(&mut edits, &window.id, &empty, Some(&window)), Err(EditError::Empty(None)));
        record(&mut edits, &window.id, &ExampleChange::Text { body: "Ice sinks? No.".into() }, Some(&window)).unwrap();
        assert_eq!(edits[0].body.as_deref(), Some("Ice sinks? No."));
    }

    #[test]
    fn a_deletion_is_labelled_and_can_be_undone_keeping_the_edit() {
        let mut edits = Vec::new();
        let shown = chat("line 2", "Frozen water.");
        record(&mut edits, &id("line 2"), &contents("Solid water."), Some(&shown)).unwrap();
        record(&mut edits, &id("line 2"), &ExampleChange::Delete, Some(&shown)).unwrap();
        assert!(edits[0].deleted);
        assert_eq!(edits[0].label, "qa.csv, line 2: What is ice?");
        record(&mut edits, &id("line 2"), &ExampleChange::Restore, None).unwrap();
        assert!(!edits[0].deleted);
        assert_eq!(edits[0].messages.len(), 1, "the edit outlives the deletion");
        let long = ExampleView {
            content: ExampleContent::Text { context: String::new(), body: "word ".repeat(30) },
            ..chat("", "")
        };
        assert_eq!(long.label(), format!("qa.csv: {}…", "word ".repeat(12).trim_end()));
    }
}
