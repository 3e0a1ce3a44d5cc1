//! The data pipeline's readers on real-world-shaped files made here, and every bad
//! input: each named in a clear error, and never losing the rest of the batch.

mod data_common;

use classtune::data::readers::{docx, html, jsonl, pdf, table, text, Block, Conversation, Issues};
use classtune::data::sniff::{sniff, Format};
use classtune::data::{DataError, DataOptions};
use classtune::chat::Role;
use data_common::*;

fn text_blocks(src: &str, markdown: bool) -> (Vec<Block>, Issues) {
    let mut issues = Issues::default();
    let mut blocks = Vec::new();
    text::read_text("t", src.as_bytes(), markdown, &mut issues, &mut |b| {
        blocks.push(b);
        Ok(())
    })
    .unwrap();
    (blocks, issues)
}

fn heading(level: u8, text: &str) -> Block {
    Block::Heading { level, text: text.to_string() }
}

fn para(text: &str) -> Block {
    Block::Paragraph(text.to_string())
}

#[test]
fn markdown_keeps_headings_lists_and_paragraphs() {
    let md = "# Photosynthesis\r\n\r\nPlants make   food\nfrom light.\n\nSetext title\n============\n\n## Inputs ##\n\n- carbon dioxide\n- water\n\n```\ncode  block\n```\n#hashtag is text\n";
    let (blocks, issues) = text_blocks(md, true);
    assert_eq!(
        blocks,
        vec![
            heading(1, "Photosynthesis"),
            para("Plants make food from light."),
            heading(1, "Setext title"),
            heading(2, "Inputs"),
            para("- carbon dioxide\n- water"),
            para("code block"),
            para("#hashtag is text"),
        ]
    );
    assert!(issues.warnings.is_empty());
}

#[test]
fn plain_text_normalizes_unicode_and_strips_control_characters() {
    // "e" + combining acute (NFD) becomes "é" (NFC); NUL-free control chars and a BOM go.
    let src = "\u{FEFF}Cafe\u{301} au\u{7} lait\u{200B}\ttime.\n\n\n\nSecond\u{1B} paragraph.";
    let (blocks, _) = text_blocks(src, false);
    assert_eq!(blocks, vec![para("Café au lait time."), para("Second paragraph.")]);
}

#[test]
fn invalid_utf8_is_read_lossily_with_a_warning() {
    let mut issues = Issues::default();
    let mut blocks = Vec::new();
    let bytes = b"good line\nbad \xFF\xFE byte\n";
    text::read_text("bad.txt", &bytes[..], false, &mut issues, &mut |b| {
        blocks.push(b);
        Ok(())
    })
    .unwrap();
    assert_eq!(blocks, vec![para("good line bad \u{FFFD}\u{FFFD} byte")]);
    assert_eq!(issues.warnings.len(), 1);
    let w = &issues.warnings[0];
    assert_eq!((w.file.as_str(), w.location.as_str()), ("bad.txt", "line 2"));
    assert!(w.message.contains("UTF-8"), "{w}");
    // And through the pipeline, the warning reaches the summary.
    let r = run(&[("bad.txt", bytes)], DataOptions::default());
    assert!(r.summary.warnings.iter().any(|w| w.message.contains("UTF-8")));
    assert_eq!(r.summary.documents, 1);
}

#[test]
fn html_text_without_scripts_or_styles() {
    let page = r#"<!DOCTYPE html><html><head><title>Cells</title><style>p { color: red }</style>
<script>var x = "<p>not text</p>";</script></head>
<body><nav><a href="/">Home</a></nav><h1>Cell &amp; structure</h1>
<p>The <b>nucleus</b> holds DNA.<br>It is the &ldquo;control centre&rdquo;.</p>
<!-- a comment <p>hidden</p> -->
<ul><li>Membrane</li><li>Cytoplasm</li></ul><h2>Plant cells</h2><table><tr><th>Part</th><th>Job</th></tr><tr><td>Wall</td><td>Support</td></tr></table>
<noscript>Enable JS</noscript><p>5 &lt; 6 &#233; &#x263A;</p></body></html>"#;
    let blocks = html::read_html(page);
    assert_eq!(
        blocks,
        vec![
            para("Home"),
            heading(1, "Cell & structure"),
            para("The nucleus holds DNA.\nIt is the “control centre”."),
            para("- Membrane"),
            para("- Cytoplasm"),
            heading(2, "Plant cells"),
            para("Part | Job"),
            para("Wall | Support"),
            para("5 < 6 é ☺"),
        ]
    );
}

#[test]
fn html_title_is_used_when_there_is_no_h1() {
    let blocks = html::read_html("<html><head><title>Tides</title></head><body><p>The Moon pulls.</p></body></html>");
    assert_eq!(blocks, vec![heading(1, "Tides"), para("The Moon pulls.")]);
}

#[test]
fn pdf_pages_headings_and_paragraphs() {
    let bytes = sample_handout();
    assert_eq!(sniff("handout.pdf", &bytes), Ok(Format::Pdf));
    let mut issues = Issues::default();
    let blocks = pdf::read_pdf("handout.pdf", &bytes, &mut issues).unwrap();
    assert!(issues.errors.is_empty(), "{:?}", issues.errors);
    assert_eq!(blocks[0], Block::Page(1));
    assert_eq!(blocks[1], heading(1, "The Water Cycle: Student Handout"));
    assert_eq!(blocks[2], heading(2, "What you will learn"));
    assert_eq!(
        blocks[3],
        para("By the end of this unit you should be able to name the stages of the water cycle, explain what happens to water in each stage, and describe how people change it.")
    );
    assert_eq!(blocks[4], heading(2, "Evaporation and transpiration"));
    let page2 = blocks.iter().position(|b| *b == Block::Page(2)).unwrap();
    assert_eq!(blocks[page2 + 1], heading(2, "Condensation and precipitation"));
    let headings: Vec<&Block> = blocks.iter().filter(|b| matches!(b, Block::Heading { .. })).collect();
    assert_eq!(headings.len(), 6);
    assert!(blocks.contains(&para("1. Why is rain fresh water even though most of it evaporated from the salty sea?\n2. Name two ways that water returns from the land to the air.\n3. How could building a large car park change the water cycle in a town?")));
}

#[test]
fn pdf_without_text_layer_looks_scanned() {
    let bytes = make_scanned_pdf(3);
    let err = pdf::read_pdf("scan.pdf", &bytes, &mut Issues::default()).unwrap_err();
    assert_eq!(err, DataError::ScannedPdf { file: "scan.pdf".into(), pages: 3 });
    assert!(err.to_string().contains("looks scanned"), "{err}");
}

#[test]
fn encrypted_pdf_is_named_as_such() {
    let bytes = make_encrypted_pdf();
    let err = pdf::read_pdf("locked.pdf", &bytes, &mut Issues::default()).unwrap_err();
    assert_eq!(err, DataError::EncryptedPdf { file: "locked.pdf".into() }, "{err}");
}

#[test]
fn docx_headings_and_runs() {
    let bytes = make_docx(&[
        (Some("Title"), "Forces"),
        (None, "A force is a push or a pull & it has a direction."),
        (Some("Heading2"), "Friction"),
        (None, "Friction slows moving objects."),
        (None, ""),
    ]);
    assert_eq!(sniff("forces.docx", &bytes), Ok(Format::Docx));
    let blocks = docx::read_docx("forces.docx", &bytes).unwrap();
    assert_eq!(
        blocks,
        vec![
            heading(1, "Forces"),
            para("A force is a push or a pull & it has a direction."),
            heading(2, "Friction"),
            para("Friction slows moving objects."),
        ]
    );
    // A ZIP that is not a Word document.
    let err = docx::read_docx("x.docx", &bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(err, DataError::BadDocx { .. }), "{err}");
}

fn table_rows(src: &str, delimiter: u8) -> Result<(Vec<Conversation>, Issues), DataError> {
    let mut issues = Issues::default();
    let mut out = Vec::new();
    table::read_table("qa.csv", src.as_bytes(), delimiter, &mut issues, &mut |c| {
        out.push(c);
        Ok(())
    })?;
    Ok((out, issues))
}

#[test]
fn csv_and_tsv_with_header_detection() {
    let csv = "\u{FEFF}ID,Question,Topic,Answer,Hint\n1,\"What is 2, doubled?\",maths,4,Add it to itself\n2,Empty answer,maths,,\n3,\"Multi\nline?\",x,\"Yes, \"\"quoted\"\".\",\n";
    let (rows, issues) = table_rows(csv, b',').unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].messages[0].content, "What is 2, doubled?");
    assert_eq!(rows[0].messages[1].content, "4");
    assert_eq!(rows[0].hint.as_deref(), Some("Add it to itself"));
    assert_eq!(rows[1].messages[0].content, "Multi\nline?");
    assert_eq!(rows[1].messages[1].content, "Yes, \"quoted\".");
    assert_eq!(rows[1].location, "line 4");
    assert!(issues.warnings.iter().any(|w| w.message.contains("empty question or answer")));

    let tsv = "prompt\tresponse\nWhat is H2O?\tWater.\n";
    let (rows, _) = table_rows(tsv, b'\t').unwrap();
    assert_eq!(rows[0].messages[1].content, "Water.");

    // No header, exactly two columns: read as question, answer with a warning.
    let (rows, issues) = table_rows("What is ice?,Frozen water.\nWhat is steam?,Water vapour.\n", b',').unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(issues.warnings.len(), 1);
}

#[test]
fn csv_without_question_answer_columns() {
    let err = table_rows("name,score,grade\nAda,90,A\n", b',').unwrap_err();
    match &err {
        DataError::NoQaColumns { file, first_row } => {
            assert_eq!(file, "qa.csv");
            assert_eq!(first_row, &["name", "score", "grade"]);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("question"), "{err}");
}

#[test]
fn jsonl_chatml_alpaca_and_prompt_completion() {
    let src = concat!(
        r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"}]}"#, "\n",
        "\n",
        r#"{"instruction":"Define density.","input":"Use SI units.","output":"Mass per unit volume, kg/m³."}"#, "\n",
        r#"{"prompt":"2+2?","completion":"4"}"#, "\n",
        r#"{"messages":[{"role":"robot","content":"x"}]}"#, "\n",
        r#"{"prompt": "unterminated"#, "\n",
        r#"{"text":"no known keys"}"#, "\n",
        r#"{"messages":[{"role":"user","content":"only a question"}]}"#, "\n",
    );
    let mut issues = Issues::default();
    let mut out = Vec::new();
    let n = jsonl::read_jsonl("chat.jsonl", src.as_bytes(), &mut issues, &mut |c| {
        out.push(c);
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 3);
    assert_eq!(out[0].messages[0].role, Role::System);
    assert!(!out[0].qa);
    assert_eq!(out[1].messages[0].content, "Define density.\n\nUse SI units.");
    assert_eq!(out[1].location, "line 3");
    assert_eq!(out[2].messages[1].content, "4");
    let lines: Vec<(usize, String)> = issues
        .errors
        .iter()
        .map(|e| match e {
            DataError::BadJsonLine { file, line, what } => {
                assert_eq!(file, "chat.jsonl");
                (*line, what.clone())
            }
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), vec![5, 6, 7, 8]);
    assert!(lines[0].1.contains("\"robot\""), "{}", lines[0].1);
    assert!(lines[1].1.contains("not valid JSON"), "{}", lines[1].1);
    assert!(lines[2].1.contains("found [\"text\"]"), "{}", lines[2].1);
    assert!(lines[3].1.contains("no assistant message"), "{}", lines[3].1);
}

#[test]
fn alpaca_json_array() {
    let src = r#"[{"instruction":"Name a gas.","input":"","output":"Oxygen."},{"instruction":"x"}]"#;
    let mut issues = Issues::default();
    let out = jsonl::read_json("alpaca.json", src, &mut issues).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].messages[0].content, "Name a gas.");
    assert_eq!(issues.errors.len(), 1);
    assert!(issues.errors[0].to_string().contains("`output` is missing"), "{}", issues.errors[0]);
    let err = jsonl::read_json("bad.json", "[{\"a\": 1,\n ]", &mut issues).unwrap_err();
    assert!(matches!(err, DataError::BadJson { line: 2, .. }), "{err}");
}

#[test]
fn sniffing_by_content_not_extension() {
    assert_eq!(sniff("notes.txt", b"%PDF-1.7\n..."), Ok(Format::Pdf));
    assert_eq!(sniff("notes.txt", b"<!DOCTYPE html><p>x"), Ok(Format::Html));
    assert_eq!(sniff("data.txt", b"{\"prompt\":\"a\",\"completion\":\"b\"}\n"), Ok(Format::Jsonl));
    assert_eq!(sniff("noext", b"# Title\n\ntext"), Ok(Format::Markdown));
    assert_eq!(sniff("plain", b"just text"), Ok(Format::Text));
    for (name, bytes) in [
        ("photo.md", &b"\x89PNG\r\n\x1a\n\0\0"[..]),
        ("model.txt", b"GGUF\x03\0\0\0"),
        ("fake.pdf", b"hello, not a pdf"),
        ("blob.csv", b"\x01\x02\x03\x00\x05"),
        ("old.doc", b"\xD0\xCF\x11\xE0\xA1\xB1"),
        ("sheet.xlsx", b"PK\x03\x04xl/workbook"),
        ("utf16.txt", b"\xFF\xFEh\0i\0"),
    ] {
        assert!(sniff(name, bytes).is_err(), "{name}");
    }
}

#[test]
fn one_bad_file_never_loses_the_batch() {
    let good = b"# Volcanoes\n\nMagma rises through the crust.\n";
    let csv = b"question,answer\nWhat is lava?,Magma that reaches the surface.\n";
    let scanned = make_scanned_pdf(2);
    let locked = make_encrypted_pdf();
    let files: Vec<(&str, &[u8])> = vec![
        ("empty.txt", b""),
        ("notes.md", good),
        ("image.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
        ("scan.pdf", &scanned),
        ("locked.pdf", &locked),
        ("grades.csv", b"name,score,grade\nAda,3,A\n"),
        ("qa.csv", csv),
        ("chat.jsonl", b"{\"prompt\":\"a\",\"completion\":\"b\"}\nnot json\n"),
    ];
    let r = run(&files, DataOptions::default());
    let s = &r.summary;
    assert_eq!(s.documents, 3, "{:#?}", s.errors);
    assert_eq!(s.files_failed, 5);
    let message = |file: &str| -> Vec<String> { s.errors.iter().filter(|e| e.file == file).map(|e| e.message.clone()).collect() };
    assert!(message("empty.txt")[0].contains("empty"));
    assert!(message("image.png")[0].contains("PNG"));
    assert!(message("scan.pdf")[0].contains("looks scanned"));
    assert!(message("locked.pdf")[0].contains("encrypted"));
    assert!(message("grades.csv")[0].contains("no question/answer columns"));
    assert_eq!(message("chat.jsonl"), vec!["chat.jsonl, line 2: not valid JSON at column 2: expected ident at line 1 column 2".to_string()]);
    let per_file: Vec<(&str, usize)> = s.files.iter().map(|f| (f.file.as_str(), f.examples)).collect();
    assert_eq!(
        per_file,
        vec![("empty.txt", 0), ("notes.md", 1), ("image.png", 0), ("scan.pdf", 0), ("locked.pdf", 0), ("grades.csv", 0), ("qa.csv", 1), ("chat.jsonl", 1)]
    );
    assert_eq!(s.examples, 3);
}

/// Writes sample-course/water-cycle-handout.pdf (run with `--ignored` after changing it).
#[test]
#[ignore]
fn write_sample_handout() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-course/water-cycle-handout.pdf");
    std::fs::write(path, sample_handout()).unwrap();
}

#[test]
fn sample_handout_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-course/water-cycle-handout.pdf");
    let committed = std::fs::read(path).unwrap();
    let mut issues = Issues::default();
    assert_eq!(
        pdf::read_pdf("h", &committed, &mut issues).unwrap(),
        pdf::read_pdf("h", &sample_handout(), &mut issues).unwrap()
    );
}
