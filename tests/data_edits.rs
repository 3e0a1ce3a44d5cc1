//! The teacher's edits of single examples: a deletion and a rewritten chat or text
//! window applied by the pipeline (tokenized as it tokenizes its own examples, counted,
//! hashed), keyed so they survive other settings and other files.

mod data_common;

use classtune::chat::{Message, Role};
use classtune::data::examples::{chat_example, text_example, tokenize_chat};
use classtune::data::{DataOptions, Edit, ExampleKey, ExampleKind, Preset};
use data_common::*;

const QA: &[u8] = b"question,answer,hint\n\
What is ice?,Frozen water.,What happens to a puddle in winter?\n\
What is snow?,Frozen flakes.,What falls from winter clouds?\n\
What is rain?,Falling water.,What drops from grey clouds?\n";
const NOTES: &[u8] = b"# Water\n\nWater evaporates from the sea and falls again as rain.\n\n\
Rivers carry it back to the sea, and the cycle starts over.\n";

fn opts(edits: &[(ExampleKey, Edit)]) -> DataOptions {
    DataOptions { seq_len: 256, validation_fraction: 0.0, edits: edits.iter().cloned().collect(), ..DataOptions::default() }
}

fn chat_key(location: &str) -> ExampleKey {
    ExampleKey { source: "qa.csv".into(), location: location.into(), window: String::new() }
}

#[test]
fn chat_and_text_examples_are_built_as_the_pipeline_builds_them() {
    let (tok, template) = tiny();
    let r = run(&[("qa.csv", QA)], opts(&[]));
    let (_, made) = &r.examples[0];
    let built = chat_example(&tok, &template, "qa.csv", &made.location, made.messages.clone(), 256).unwrap();
    assert_eq!(&built, made);
    // Cut to the length, and flagged.
    let short = chat_example(&tok, &template, "qa.csv", "line 2", made.messages.clone(), 40).unwrap();
    assert!(short.truncated && short.input_ids.len() == 40);

    let context = tok.encode("notes.md › Water\n\n", false).unwrap();
    let text = text_example(&tok, "notes.md", "section \"Water\"", &context, "Ice floats.", 256).unwrap();
    assert_eq!(text.kind, ExampleKind::Text);
    assert_eq!(text.text, "notes.md › Water\n\nIce floats.");
    assert_eq!(text.context_len(), context.len(), "the context line is read, not trained on");
    assert!(text.loss_mask[context.len()..].iter().all(|&m| m == 1));
    let cut = text_example(&tok, "notes.md", "", &context, &"Ice floats. ".repeat(40), 64).unwrap();
    assert!(cut.truncated && cut.input_ids.len() == 64);
}

#[test]
fn deleted_and_edited_chats_change_the_dataset() {
    let (tok, template) = tiny();
    let plain = run(&[("qa.csv", QA)], opts(&[]));
    assert_eq!(plain.summary.examples, 3);
    let edit = Edit { messages: vec![(2, "Water  that froze.\r\n".into())], ..Edit::default() };
    let edits = [
        (chat_key("line 2"), Edit { deleted: true, ..Edit::default() }),
        (chat_key("line 3"), edit),
        (chat_key("line 99"), Edit { deleted: true, ..Edit::default() }),
    ];
    let r = run(&[("qa.csv", QA)], opts(&edits));
    let s = &r.summary;
    assert_eq!((s.examples, s.train_examples, s.files[0].examples), (2, 2, 2));
    assert_eq!((s.examples_deleted, s.examples_edited, s.edits_unused), (1, 1, 1));
    assert_ne!(s.content_hash, plain.summary.content_hash);
    assert!(r.examples.iter().all(|(_, e)| e.location != "line 2"), "the deleted example is gone");
    let (_, edited) = r.examples.iter().find(|(_, e)| e.location == "line 3").unwrap();
    // The new answer, cleaned as the material is, tokenized with the assistant mask.
    assert_eq!(edited.messages[2], Message::new(Role::Assistant, "Water that froze."));
    let (ids, mask, _) = tokenize_chat(&tok, &template, &edited.messages, 256).unwrap();
    assert_eq!((&edited.input_ids, &edited.loss_mask), (&ids, &mask));
    assert_eq!(edited.edited, Some(chat_key("line 3")));
    assert_eq!(s.tokens, r.examples.iter().map(|(_, e)| e.input_ids.len()).sum::<usize>());

    // Another role and length: the edit still applies, the system prompt follows the role.
    let socratic = DataOptions { preset: Some(Preset::SocraticTutor), seq_len: 512, ..opts(&edits) };
    let r = run(&[("qa.csv", QA)], socratic);
    let (_, edited) = r.examples.iter().find(|(_, e)| e.location == "line 3").unwrap();
    assert_eq!(edited.messages[0].content, Preset::SocraticTutor.system_prompt());
    assert_eq!(edited.messages[2].content, "Water that froze.");
    assert_eq!(r.summary.examples, 2);
}

#[test]
fn edited_text_windows_keep_their_context_line() {
    let plain = run(&[("notes.md", NOTES), ("qa.csv", QA)], opts(&[]));
    let (_, window) = plain.examples.iter().find(|(_, e)| e.kind == ExampleKind::Text).unwrap();
    let key = ExampleKey::of(window);
    assert_eq!(key.window.len(), 16);
    let edit = Edit { body: Some("Rain is fresh water. Mail me at ann@example.org".into()), ..Edit::default() };
    let r = run(&[("notes.md", NOTES), ("qa.csv", QA)], opts(&[(key.clone(), edit.clone())]));
    let (_, edited) = r.examples.iter().find(|(_, e)| e.kind == ExampleKind::Text).unwrap();
    // Redacted as the material is; the context line stays context.
    assert_eq!(edited.text, "notes.md › Water\n\nRain is fresh water. Mail me at [EMAIL]");
    assert_eq!(edited.context_len(), window.context_len());
    assert_eq!(edited.edited, Some(key.clone()));
    assert_eq!(r.summary.examples_edited, 1);
    assert_eq!(r.summary.trained_tokens, plain.summary.trained_tokens - window.trained_tokens() + edited.trained_tokens());

    // Shorter windows are other windows: the edit waits, unused, for its own.
    let short = DataOptions { seq_len: 32, ..opts(&[(key, edit)]) };
    let r = run(&[("notes.md", NOTES)], short);
    assert_eq!((r.summary.examples_edited, r.summary.edits_unused), (0, 1));
}
