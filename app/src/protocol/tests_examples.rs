//! Natively run round trips of the messages that browse and change the prepared
//! examples, and the shapes the end-to-end tests read.

use super::*;

fn id() -> ExampleId {
    ExampleId { source: "notes.md".into(), location: "section \"Rain\"".into(), window: "0123456789abcdef".into() }
}

fn page() -> ExamplePage {
    let chat = ExampleView {
        id: ExampleId { source: "qa.csv".into(), location: "line 3".into(), window: String::new() },
        number: 11,
        held_out: true,
        tokens: 40,
        trained_tokens: 12,
        truncated: false,
        edited: true,
        rendered: "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n⟦Because.<|im_end|>⟧\n".into(),
        content: ExampleContent::Chat {
            messages: vec![
                ChatMessage { role: Speaker::System, content: "Be brief.".into() },
                ChatMessage { role: Speaker::User, content: "Why?".into() },
                ChatMessage { role: Speaker::Assistant, content: "Because \"so\".".into() },
            ],
        },
    };
    let text = ExampleView {
        id: id(),
        number: 12,
        held_out: false,
        truncated: true,
        edited: false,
        rendered: "notes.md › Rain\n\n⟦Rain falls.⟧".into(),
        content: ExampleContent::Text { context: "notes.md › Rain\n\n".into(), body: "Rain falls.".into() },
        ..chat.clone()
    };
    ExamplePage { page: 1, pages: 3, total: 25, examples: vec![chat, text] }
}

#[test]
fn example_requests_round_trip() {
    let data = DataSettings::default();
    let changes = [
        ExampleChange::Chat { contents: vec!["Be brief.".into(), "Why?".into(), "Since.\n".into()] },
        ExampleChange::Text { body: "Rain falls from clouds.".into() },
        ExampleChange::Delete,
        ExampleChange::Restore,
        ExampleChange::Revert,
    ];
    for change in changes {
        let request = ToWorker::ChangeExample { id: id(), change, data: data.clone() };
        assert!(request.payloads().is_empty());
        assert_eq!(ToWorker::decode(&request.encode()).unwrap(), request);
        assert_eq!(request.name(), "change_example");
    }
    let browse = ToWorker::CourseExamples { page: 2 };
    assert_eq!(browse.encode(), r#"{"type":"course_examples","page":2}"#);
    assert_eq!(ToWorker::decode(&browse.encode()).unwrap(), browse);
    // A deletion as a hand-written request would spell it.
    let text = r#"{"type":"change_example","id":{"source":"qa.csv","location":"line 3"},"change":{"kind":"delete"},
        "data":{"role":"teaching-assistant","redact":true,"seq_len":256}}"#;
    let ToWorker::ChangeExample { id, change, .. } = ToWorker::decode(text).unwrap() else { panic!("not a change") };
    assert_eq!((id.window.as_str(), change), ("", ExampleChange::Delete));
}

#[test]
fn example_replies_round_trip() {
    let reply = FromWorker::CourseExamples(page());
    assert_eq!(FromWorker::decode(&reply.encode()).unwrap(), reply);
    let report = CourseReport {
        files: Vec::new(),
        train_examples: 20,
        validation_examples: 4,
        tokens: 900,
        trained_tokens: 300,
        truncated_examples: 1,
        duplicates_removed: 0,
        seq_len: 64,
        role: Role::SocraticTutor,
        system_prompt: "Guide.".into(),
        personal_data: 0,
        redacted: true,
        unredacted_personal_data: false,
        page: page(),
        edited: 1,
        deleted: vec![DeletedExample { id: id(), label: "notes.md, section \"Rain\": Rain falls.".into() }],
        unused_edits: 2,
    };
    let reply = FromWorker::Course(report);
    assert_eq!(FromWorker::decode(&reply.encode()).unwrap(), reply);
}

#[test]
fn saved_edits_round_trip_and_old_runs_have_none() {
    let edit = ExampleEdit {
        id: id(),
        deleted: true,
        messages: vec![(2, "Since.".into())],
        body: Some("Rain falls.".into()),
        label: "notes.md: Rain".into(),
    };
    let json = serde_json::to_string(&edit).unwrap();
    assert_eq!(serde_json::from_str::<ExampleEdit>(&json).unwrap(), edit);
    let bare: ExampleEdit = serde_json::from_str(r#"{"id":{"source":"a.md","location":""}}"#).unwrap();
    assert!(!bare.deleted && bare.messages.is_empty() && bare.body.is_none());
}
