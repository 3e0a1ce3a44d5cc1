//! Fuzzing the readers: arbitrary and mutated inputs never panic; they give blocks,
//! conversations or a typed error.

mod data_common;

use classtune::data::readers::{docx, html, jsonl, pdf, table, text, Issues};
use classtune::data::sniff::sniff;
use classtune::data::DataOptions;
use proptest::prelude::*;

fn all_readers(bytes: &[u8]) {
    let mut issues = Issues::default();
    let _ = sniff("f.bin", bytes);
    let _ = text::read_text("f", bytes, true, &mut issues, &mut |_| Ok(()));
    let _ = text::read_text("f", bytes, false, &mut issues, &mut |_| Ok(()));
    let _ = html::read_html(&String::from_utf8_lossy(bytes));
    let _ = jsonl::read_jsonl("f", bytes, &mut issues, &mut |_| Ok(()));
    let _ = jsonl::read_json("f", &String::from_utf8_lossy(bytes), &mut issues);
    let _ = table::read_table("f", bytes, b',', &mut issues, &mut |_| Ok(()));
    let _ = table::read_table("f", bytes, b'\t', &mut issues, &mut |_| Ok(()));
    let _ = pdf::read_pdf("f", bytes, &mut issues);
    let _ = docx::read_docx("f", bytes);
    let _ = docx::parse_document_xml(bytes);
}

fn mutate(mut base: Vec<u8>, edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for &(at, b) in edits {
        if !base.is_empty() {
            let i = at % base.len();
            base[i] = b;
        }
    }
    let keep = base.len() - cut % (base.len() + 1) / 2;
    base.truncate(keep);
    base
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        all_readers(&bytes);
    }

    #[test]
    fn text_like(s in "[ -~\\n\\t<>&#;\"',{}\\[\\]:é☺\u{0}\u{7}\u{301}]{0,600}") {
        all_readers(s.as_bytes());
    }

    #[test]
    fn mutated_pdf(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12), cut in any::<usize>()) {
        let pdf = data_common::make_pdf(&[vec![(18.0, "Title"), (11.0, "Body text here."), (11.0, "")], vec![(11.0, "Page two.")]]);
        all_readers(&mutate(pdf, &edits, cut));
    }

    #[test]
    fn mutated_docx(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12), cut in any::<usize>()) {
        let docx = data_common::make_docx(&[(Some("Heading1"), "Title"), (None, "Body & more.")]);
        all_readers(&mutate(docx, &edits, cut));
    }
}

#[test]
fn pipeline_survives_garbage_in_every_format() {
    let garbage: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let names = ["a.txt", "a.md", "a.html", "a.pdf", "a.docx", "a.csv", "a.tsv", "a.jsonl", "a.json", "a"];
    let inputs: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, garbage.as_slice())).collect();
    let r = data_common::run(&inputs, DataOptions::default());
    assert_eq!(r.summary.files.len(), names.len());
    assert_eq!(r.summary.files_failed, names.len());
}
