//! Training examples: token windows (boundaries, overlap, context line), ChatML masks
//! (assistant content + its <|im_end|> only), presets, split determinism, duplicates,
//! personal-data redaction, the summary, preview and export.

mod data_common;

use classtune::chat::{ChatTemplate, Message, Role};
use classtune::data::chunk::{ChunkOptions, Chunker};
use classtune::data::examples::{conversation_messages, tokenize_chat};
use classtune::data::export::{axolotl_yaml, export_line, ExportFiles, TrainSettings};
use classtune::data::privacy::PiiScanner;
use classtune::data::readers::{Block, Conversation};
use classtune::data::split::{split_of, Split};
use classtune::data::{DataOptions, Example, ExampleKind, Preset};
use data_common::*;

fn paragraph(i: usize) -> String {
    format!("Paragraph {i} talks about rivers, rain and clouds in some detail so that it has a few tokens.")
}

fn windows(blocks: &[Block], seq_len: usize, overlap: usize) -> Vec<Example> {
    let (tok, _) = tiny();
    let mut c = Chunker::new(&tok, ChunkOptions { seq_len, overlap }, "unit/notes.md").unwrap();
    let mut out = Vec::new();
    for b in blocks {
        c.push(b, &mut out).unwrap();
    }
    c.finish(&mut out).unwrap();
    out
}

#[test]
fn windows_fit_cut_at_paragraphs_and_carry_context() {
    let (tok, _) = tiny();
    let mut blocks = vec![Block::Heading { level: 1, text: "Water".into() }];
    for i in 0..12 {
        blocks.push(Block::Paragraph(paragraph(i)));
    }
    let out = windows(&blocks, 96, 0);
    assert!(out.len() > 2, "{}", out.len());
    let mut seen = Vec::new();
    for ex in &out {
        assert!(ex.input_ids.len() <= 96);
        assert_eq!(ex.input_ids.len(), ex.loss_mask.len());
        assert_eq!(ex.kind, ExampleKind::Text);
        // Context line first (mask 0), then the body (mask 1), nothing masked after.
        let ctx = ex.loss_mask.iter().take_while(|&&m| m == 0).count();
        assert!(ex.loss_mask[ctx..].iter().all(|&m| m == 1));
        let context = tok.decode(&ex.input_ids[..ctx]).unwrap();
        assert_eq!(context, "notes.md › Water\n\n");
        let body = tok.decode(&ex.input_ids[ctx..]).unwrap();
        // Cut between paragraphs: the body is whole paragraphs.
        for part in body.split("\n\n") {
            assert!(part == "# Water" || part.starts_with("Paragraph ") && part.ends_with("tokens."), "{part:?}");
            seen.push(part.to_string());
        }
    }
    // Without overlap every paragraph appears exactly once, in order.
    let expected: Vec<String> = std::iter::once("# Water".to_string()).chain((0..12).map(paragraph)).collect();
    assert_eq!(seen, expected);
}

#[test]
fn windows_overlap_by_whole_trailing_paragraphs() {
    let (tok, _) = tiny();
    let blocks: Vec<Block> = (0..10).map(|i| Block::Paragraph(paragraph(i))).collect();
    let par_len = tok.encode(&paragraph(0), false).unwrap().len();
    let out = windows(&blocks, 4 * (par_len + 2) + 24, par_len + 2);
    assert!(out.len() >= 3);
    let bodies: Vec<String> = out
        .iter()
        .map(|ex| {
            let ctx = ex.loss_mask.iter().take_while(|&&m| m == 0).count();
            tok.decode(&ex.input_ids[ctx..]).unwrap()
        })
        .collect();
    for pair in bodies.windows(2) {
        let last_of_prev = pair[0].rsplit("\n\n").next().unwrap();
        let first_of_next = pair[1].split("\n\n").next().unwrap();
        assert_eq!(last_of_prev, first_of_next, "consecutive windows share the last paragraph");
    }
}

#[test]
fn long_paragraph_is_cut_between_tokens_with_token_overlap() {
    let (tok, _) = tiny();
    let long: String = (0..200).map(|i| format!("word{i} ")).collect();
    let ids = tok.encode(long.trim(), false).unwrap();
    let out = windows(&[Block::Paragraph(long.trim().to_string())], 64, 8);
    assert!(out.len() > 3);
    let mut rebuilt: Vec<u32> = Vec::new();
    for (i, ex) in out.iter().enumerate() {
        assert!(ex.input_ids.len() <= 64);
        let ctx = ex.loss_mask.iter().take_while(|&&m| m == 0).count();
        let body = &ex.input_ids[ctx..];
        if i == 0 {
            rebuilt.extend_from_slice(body);
        } else {
            assert_eq!(&body[..8], &rebuilt[rebuilt.len() - 8..], "window {i} starts with the last 8 tokens");
            rebuilt.extend_from_slice(&body[8..]);
        }
    }
    assert_eq!(rebuilt, ids);
}

#[test]
fn headings_start_new_windows_once_half_full() {
    let (tok, _) = tiny();
    let mut blocks = Vec::new();
    for s in 0..3 {
        blocks.push(Block::Heading { level: 2, text: format!("Section {s}") });
        for i in 0..3 {
            blocks.push(Block::Paragraph(paragraph(s * 10 + i)));
        }
    }
    let section_len: usize = (0..3).map(|i| tok.encode(&paragraph(i), false).unwrap().len() + 2).sum::<usize>() + 8;
    // Room for one and a half sections: each heading starts a new window.
    let out = windows(&blocks, section_len * 3 / 2 + 16, 0);
    assert_eq!(out.len(), 3, "one window per section");
    for (s, ex) in out.iter().enumerate() {
        let text = tok.decode(&ex.input_ids).unwrap();
        assert!(text.starts_with(&format!("notes.md › Section {s}\n\n## Section {s}\n\n")), "{text:?}");
    }
}

#[test]
fn chat_mask_covers_exactly_assistant_content_and_im_end() {
    let (tok, template) = tiny();
    let messages = vec![
        Message::system("You are a tutor."),
        Message::user("What is evaporation?"),
        Message::assistant("Liquid water turning into vapour."),
        Message::user("And condensation?"),
        Message::assistant("The reverse: vapour to droplets."),
    ];
    let (ids, mask, truncated) = tokenize_chat(&tok, &template, &messages, 4096).unwrap();
    assert!(!truncated);
    // Same ids as tokenizing the rendered template in one go.
    assert_eq!(ids, tok.encode(&template.render(&messages, false), true).unwrap());
    let mut spans = Vec::new();
    let mut i = 0;
    while i < mask.len() {
        if mask[i] == 1 {
            let start = i;
            while i < mask.len() && mask[i] == 1 {
                i += 1;
            }
            spans.push(tok.decode(&ids[start..i]).unwrap());
        }
        i += 1;
    }
    assert_eq!(spans, vec!["Liquid water turning into vapour.<|im_end|>", "The reverse: vapour to droplets.<|im_end|>"]);
    // Truncation.
    let (ids, mask, truncated) = tokenize_chat(&tok, &template, &messages, 20).unwrap();
    assert!(truncated);
    assert_eq!((ids.len(), mask.len()), (20, 20));
}

#[test]
fn default_system_turn_is_rendered_and_not_trained() {
    let (tok, _) = tiny();
    let template = ChatTemplate::chatml_with_default_system("Default system.");
    let messages = vec![Message::user("Q?"), Message::assistant("A.")];
    let (ids, mask, _) = tokenize_chat(&tok, &template, &messages, 4096).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), template.render(&messages, false));
    let trained: Vec<u32> = ids.iter().zip(&mask).filter(|(_, &m)| m == 1).map(|(&i, _)| i).collect();
    assert_eq!(tok.decode(&trained).unwrap(), "A.<|im_end|>");
}

#[test]
fn presets_shape_qa_pairs() {
    let conv = Conversation {
        messages: vec![Message::user("Why is rain fresh?"), Message::assistant("Salt stays behind.")],
        location: "line 2".into(),
        qa: true,
        hint: Some("What is left when salty water dries?".into()),
    };
    let ta = conversation_messages(&conv, Some(Preset::TeachingAssistant), "SYS", "water");
    assert_eq!(ta, vec![Message::system("SYS"), Message::user("Why is rain fresh?"), Message::assistant("Salt stays behind.")]);
    let socratic = conversation_messages(&conv, Some(Preset::SocraticTutor), "SYS", "water");
    assert_eq!(socratic[2].content, "What is left when salty water dries?");
    let quiz = conversation_messages(&conv, Some(Preset::ResourceGenerator), "SYS", "the water cycle");
    assert_eq!(quiz[1].content, "Write one quiz question with its answer about the water cycle.");
    assert_eq!(quiz[2].content, "Question: Why is rain fresh?\nAnswer: Salt stays behind.");
    for p in Preset::ALL {
        assert_eq!(Preset::from_name(p.name()), Some(p));
        assert!(!p.system_prompt().is_empty());
    }
    // Through the pipeline: the teacher's own prompt wins over the preset.
    let opts = DataOptions {
        system_prompt: Some("Answer like a pirate.".into()),
        ..DataOptions::default()
    };
    let r = run(&[("qa.csv", b"q,a\nWhat is ice?,Frozen water.\n")], opts);
    assert_eq!(r.examples[0].1.messages[0], Message::new(Role::System, "Answer like a pirate."));
}

#[test]
fn split_is_deterministic_and_by_document() {
    let keys: Vec<String> = (0..400).map(|i| format!("doc:file{i}.md")).collect();
    let a: Vec<Split> = keys.iter().map(|k| split_of(7, k, 0.2)).collect();
    let b: Vec<Split> = keys.iter().map(|k| split_of(7, k, 0.2)).collect();
    assert_eq!(a, b);
    let val = a.iter().filter(|&&s| s == Split::Validation).count();
    assert!((50..110).contains(&val), "{val} of 400 in validation at 0.2");
    let c: Vec<Split> = keys.iter().map(|k| split_of(8, k, 0.2)).collect();
    assert_ne!(a, c, "another seed, another split");
    // All windows of one document are on the same side.
    let long: String = (0..60).map(|i| paragraph(i) + "\n\n").collect();
    let files: Vec<(String, String)> = (0..6).map(|i| (format!("notes{i}.md"), long.replace("Paragraph", &format!("Doc{i} paragraph")))).collect();
    let inputs: Vec<(&str, &[u8])> = files.iter().map(|(n, t)| (n.as_str(), t.as_bytes())).collect();
    let opts = DataOptions { validation_fraction: 0.5, seq_len: 128, ..DataOptions::default() };
    let r1 = run(&inputs, opts.clone());
    let r2 = run(&inputs, opts);
    assert_eq!(r1.summary.content_hash, r2.summary.content_hash);
    assert_eq!(r1.examples, r2.examples);
    for (name, _) in &files {
        let sides: std::collections::HashSet<Split> = r1.examples.iter().filter(|(_, e)| &e.source == name).map(|(s, _)| *s).collect();
        assert_eq!(sides.len(), 1, "{name}");
    }
    assert!(r1.summary.train_examples > 0 && r1.summary.validation_examples > 0);
}

#[test]
fn exact_duplicates_are_removed_and_counted() {
    let csv = b"question,answer\nWhat is ice?,Frozen water.\nWhat is ice?,Frozen water.\nWhat is snow?,Frozen flakes.\n";
    let jsonl = b"{\"prompt\":\"What is ice?\",\"completion\":\"Frozen water.\"}\n";
    let r = run(&[("a.csv", csv), ("b.jsonl", jsonl)], DataOptions::default());
    assert_eq!(r.summary.examples, 2);
    assert_eq!(r.summary.duplicates_removed, 2);
    assert_eq!(r.summary.files[0].duplicates_removed, 1);
    assert_eq!(r.summary.files[1].duplicates_removed, 1);
}

#[test]
fn personal_data_is_found_and_redacted() {
    let roster = vec!["Ada Lovelace".to_string(), "Turing, Alan".to_string(), "Li Na".to_string()];
    let s = PiiScanner::new(&roster).unwrap();
    let text = "Email ada.l@school.example.org or call +44 20 7946 0958 / (555) 123-4567. \
                Student ID S1234567, badge 98765432. Ada Lovelace and alan turing, also Turing. \
                In 1999 about 300,000 people saw 6 CO2 + 6 H2O on 2024-05-01; pi is 3.14159.";
    let (out, counts) = s.scan(text, true);
    assert_eq!(
        out,
        "Email [EMAIL] or call [PHONE] / [PHONE]. Student ID [ID], badge [ID]. [NAME] and [NAME], also [NAME]. \
         In 1999 about 300,000 people saw 6 CO2 + 6 H2O on 2024-05-01; pi is 3.14159."
    );
    assert_eq!((counts.emails, counts.phones, counts.ids, counts.names), (1, 2, 2, 3));
    let (kept, counts2) = s.scan(text, false);
    assert_eq!(kept, text);
    assert_eq!(counts, counts2);

    // Through the pipeline: counted per file and overall; flagged only when kept.
    let notes = b"# Class list\n\nContact Ada Lovelace at ada@example.com.\n";
    let qa = b"question,answer\nWho won?,Alan Turing did.\n";
    let opts = DataOptions { roster: roster.clone(), ..DataOptions::default() };
    let r = run(&[("notes.md", notes), ("qa.csv", qa)], opts.clone());
    assert_eq!(r.summary.personal_data.total(), 3);
    assert_eq!(r.summary.files[0].personal_data.names, 1);
    assert!(r.summary.redacted && !r.summary.unredacted_personal_data);
    assert!(r.preview.contains("[NAME]") && r.preview.contains("[EMAIL]"), "{}", r.preview);
    assert!(!r.preview.contains("Lovelace"));
    let r = run(&[("notes.md", notes)], DataOptions { redact: false, ..opts });
    assert!(r.summary.unredacted_personal_data);
    assert!(r.preview.contains("Lovelace"));
}

#[test]
fn summary_preview_and_export_of_the_sample_course() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-course/");
    let names = ["water-cycle-handout.pdf", "water-cycle-notes.md", "water-cycle-qa.csv"];
    let bytes: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(format!("{dir}{n}")).unwrap()).collect();
    let inputs: Vec<(&str, &[u8])> = names.iter().zip(&bytes).map(|(n, b)| (*n, b.as_slice())).collect();
    let r = run(&inputs, DataOptions { seq_len: 512, ..DataOptions::default() });
    let s = &r.summary;
    assert_eq!((s.documents, s.files_failed), (3, 0), "{:?}", s.errors);
    assert!(s.errors.is_empty() && s.warnings.is_empty(), "{:?} {:?}", s.errors, s.warnings);
    assert_eq!(s.chat_examples, 20);
    assert!(s.text_examples >= 4);
    assert_eq!(s.examples, s.train_examples + s.validation_examples);
    assert_eq!(s.tokens, r.examples.iter().map(|(_, e)| e.input_ids.len()).sum::<usize>());
    assert_eq!(s.files.iter().map(|f| f.examples).sum::<usize>(), s.examples);
    assert_eq!(s.content_hash.len(), 64);
    assert_eq!(s.truncated_examples, 0);
    // Preview: the first examples decoded, trained spans marked.
    assert!(r.preview.contains("===== example 1 (train"), "{}", r.preview);
    assert!(r.preview.contains("⟦"));
    let qa = r.examples.iter().find(|(_, e)| e.kind == ExampleKind::Chat).unwrap();
    let line = export_line(&qa.1).unwrap();
    assert!(line.starts_with("{\"messages\":[{\"role\":\"system\""), "{line}");
    let yaml = axolotl_yaml(
        &TrainSettings::default(),
        ExportFiles { train_chat: true, train_text: true, val_chat: false, val_text: true },
    );
    for needle in [
        "base_model: \"HuggingFaceTB/SmolLM2-135M-Instruct\"",
        "adapter: lora",
        "lora_r: 8",
        "lora_target_modules: [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\"]",
        "path: train_chat.jsonl",
        "roles_to_train: [\"assistant\"]",
        "test_datasets:\n  - path: val_text.jsonl",
    ] {
        assert!(yaml.contains(needle), "{needle} in\n{yaml}");
    }
    // The engine's format round-trips.
    let json = serde_json::to_string(&qa.1).unwrap();
    let back: Example = serde_json::from_str(&json).unwrap();
    assert_eq!(back, qa.1);
}

/// A big text file is streamed: memory stays bounded (here: the examples are dropped as
/// they come, and a 40 MB single-line file is cut into bounded paragraphs).
#[test]
fn big_text_is_streamed() {
    struct Counter(usize, usize);
    impl classtune::data::ExampleSink for Counter {
        fn accept(&mut self, _: Split, ex: &Example) -> Result<(), classtune::data::DataError> {
            self.0 += 1;
            self.1 = self.1.max(ex.input_ids.len());
            Ok(())
        }
    }
    let (tok, template) = tiny();
    let mut p = classtune::data::Pipeline::new(&tok, &template, DataOptions { seq_len: 512, overlap: 0, ..DataOptions::default() }).unwrap();
    // 4 MB of one line without newlines, generated on the fly.
    struct Gen(usize, u64);
    impl std::io::Read for Gen {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0);
            for b in buf[..n].iter_mut() {
                self.1 ^= self.1 << 13;
                self.1 ^= self.1 >> 7;
                self.1 ^= self.1 << 17;
                let r = (self.1 >> 32) % 32;
                *b = if r >= 26 { b' ' } else { b'a' + r as u8 };
            }
            self.0 -= n;
            Ok(n)
        }
    }
    let mut sink = Counter(0, 0);
    p.add_file("big.txt", std::io::BufReader::with_capacity(1 << 16, Gen(4 << 20, 0x9E37_79B9_7F4A_7C15)), &mut sink).unwrap();
    let (summary, _) = p.finish().unwrap();
    assert_eq!(summary.files[0].bytes, 4 << 20);
    assert!(sink.0 > 100 && sink.1 <= 512, "{} examples, longest {}", sink.0, sink.1);
    assert!(summary.warnings.iter().any(|w| w.message.contains("over-long")));
}
