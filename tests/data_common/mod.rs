//! Shared helpers for the data pipeline tests: the tiny model's tokenizer, and course
//! files made in the tests (a multi-page PDF with headings via lopdf, a .docx via zip).
#![allow(dead_code)]

use std::io::Write;

use classtune::chat::ChatTemplate;
use classtune::data::{DataOptions, Example, Pipeline, Split, Summary};
use classtune::gguf::{Gguf, MappedFile, TensorSource};
use classtune::tokenizer::Tokenizer;
use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Document, Object, Stream};

pub fn tiny() -> (Tokenizer, ChatTemplate) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tiny/tiny-llama.gguf");
    let file = MappedFile::open(std::path::Path::new(path)).unwrap();
    let gguf = Gguf::parse(file.bytes(), file.len()).unwrap();
    (Tokenizer::from_gguf(&gguf).unwrap(), ChatTemplate::from_gguf(&gguf).unwrap())
}

/// Output of a pipeline run over in-memory files.
pub struct Run {
    pub examples: Vec<(Split, Example)>,
    pub summary: Summary,
    pub preview: String,
}

pub fn run(files: &[(&str, &[u8])], opts: DataOptions) -> Run {
    let (tok, template) = tiny();
    let mut pipeline = Pipeline::new(&tok, &template, opts).unwrap();
    let mut examples = Vec::new();
    for (name, bytes) in files {
        pipeline.add_bytes(name, bytes, &mut examples).unwrap();
    }
    let (summary, preview) = pipeline.finish().unwrap();
    Run { examples, summary, preview }
}

/// One line of a PDF page: font size and text.
pub type PdfLine<'a> = (f32, &'a str);

/// A PDF with one page per entry, Helvetica (WinAnsi), each line its own `Td` move;
/// an empty text makes a paragraph gap. Compressed content streams.
pub fn make_pdf(pages: &[Vec<PdfLine<'_>>]) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica", "Encoding" => "WinAnsiEncoding",
    });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let mut kids = Vec::new();
    for lines in pages {
        let mut ops = vec![Operation::new("BT", vec![]), Operation::new("Td", vec![72.into(), 770.into()])];
        let mut size = 0.0;
        for &(s, text) in lines {
            if text.is_empty() {
                ops.push(Operation::new("Td", vec![0.into(), Object::Real(-size * 1.2)]));
                continue;
            }
            if s != size {
                ops.push(Operation::new("Tf", vec!["F1".into(), Object::Real(s)]));
                size = s;
            }
            ops.push(Operation::new("Td", vec![0.into(), Object::Real(-s * 1.3)]));
            ops.push(Operation::new("Tj", vec![Object::string_literal(latin1(text))]));
        }
        ops.push(Operation::new("ET", vec![]));
        kids.push(add_page(&mut doc, pages_id, resources_id, ops));
    }
    finish_pdf(doc, pages_id, kids)
}

/// A PDF whose pages only draw shapes (no text layer), like a scan.
pub fn make_scanned_pdf(pages: usize) -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let resources_id = doc.add_object(dictionary! {});
    let kids = (0..pages)
        .map(|_| {
            let ops = vec![
                Operation::new("re", vec![10.into(), 10.into(), 500.into(), 700.into()]),
                Operation::new("f", vec![]),
            ];
            add_page(&mut doc, pages_id, resources_id, ops)
        })
        .collect();
    finish_pdf(doc, pages_id, kids)
}

/// A text PDF whose trailer declares (bogus) standard encryption.
pub fn make_encrypted_pdf() -> Vec<u8> {
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let resources_id = doc.add_object(dictionary! {});
    let ops = vec![Operation::new("BT", vec![]), Operation::new("ET", vec![])];
    let kids = vec![add_page(&mut doc, pages_id, resources_id, ops)];
    let encrypt = doc.add_object(dictionary! {
        "Filter" => "Standard", "V" => 2, "R" => 3, "Length" => 128, "P" => -44,
        "O" => Object::string_literal(vec![7u8; 32]), "U" => Object::string_literal(vec![9u8; 32]),
    });
    doc.trailer.set("Encrypt", encrypt);
    doc.trailer.set("ID", vec![Object::string_literal(vec![1u8; 16]), Object::string_literal(vec![1u8; 16])]);
    finish_pdf(doc, pages_id, kids)
}

fn add_page(doc: &mut Document, pages_id: lopdf::ObjectId, resources_id: lopdf::ObjectId, ops: Vec<Operation>) -> Object {
    let content = Content { operations: ops };
    let stream = Stream::new(dictionary! {}, content.encode().unwrap());
    let content_id = doc.add_object(stream);
    doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id, "Resources" => resources_id,
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
    })
    .into()
}

fn finish_pdf(mut doc: Document, pages_id: lopdf::ObjectId, kids: Vec<Object>) -> Vec<u8> {
    let count = kids.len() as i64;
    doc.objects.insert(pages_id, Object::Dictionary(dictionary! { "Type" => "Pages", "Kids" => kids, "Count" => count }));
    let catalog = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog);
    doc.compress();
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars().map(|c| if (c as u32) < 256 { c as u8 } else { b'?' }).collect()
}

/// A .docx with the given paragraphs: (style, text), style `Heading1`, `Title` or none.
pub fn make_docx(paragraphs: &[(Option<&str>, &str)]) -> Vec<u8> {
    let mut body = String::new();
    for (style, text) in paragraphs {
        body.push_str("<w:p>");
        if let Some(s) = style {
            body.push_str(&format!("<w:pPr><w:pStyle w:val=\"{s}\"/></w:pPr>"));
        }
        let text = text.replace('&', "&amp;").replace('<', "&lt;");
        // Split runs mid-text, as Word does.
        let mid = text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i);
        body.push_str(&format!(
            "<w:r><w:rPr><w:b/></w:rPr><w:t xml:space=\"preserve\">{}</w:t></w:r><w:r><w:t>{}</w:t></w:r>",
            &text[..mid],
            &text[mid..]
        ));
        body.push_str("</w:p>");
    }
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><w:body>{body}<w:sectPr/></w:body></w:document>"
    );
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("[Content_Types].xml", opts).unwrap();
        zip.write_all(b"<?xml version=\"1.0\"?><Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\"/>").unwrap();
        zip.start_file("word/document.xml", opts).unwrap();
        zip.write_all(xml.as_bytes()).unwrap();
        zip.finish().unwrap();
    }
    out.into_inner()
}

/// The handout of the sample course (sample-course/water-cycle-handout.pdf).
pub fn sample_handout() -> Vec<u8> {
    let h1 = 20.0;
    let h2 = 14.0;
    let b = 11.0;
    make_pdf(&[
        vec![
            (h1, "The Water Cycle: Student Handout"),
            (b, ""),
            (h2, "What you will learn"),
            (b, "By the end of this unit you should be able to name the stages of the water cycle,"),
            (b, "explain what happens to water in each stage, and describe how people change it."),
            (b, ""),
            (h2, "Evaporation and transpiration"),
            (b, "Heat from the Sun turns liquid water from oceans, lakes and puddles into water vapour."),
            (b, "Plants also release water vapour from their leaves. This is called transpiration."),
            (b, ""),
            (b, "Try it: put a clear plastic bag over a leafy branch on a sunny day. After an hour,"),
            (b, "look for droplets inside the bag. Where did the water come from?"),
        ],
        vec![
            (h2, "Condensation and precipitation"),
            (b, "Warm, moist air rises and cools. The water vapour condenses into tiny droplets that"),
            (b, "form clouds. When the droplets join and grow heavy, they fall as rain, snow, sleet or hail."),
            (b, ""),
            (h2, "Where the water goes next"),
            (b, "Some water runs off the land into rivers and the sea. Some soaks into the ground and"),
            (b, "becomes groundwater in aquifers. Some is stored as ice and snow for a long time."),
            (b, ""),
            (h2, "Check your understanding"),
            (b, "1. Why is rain fresh water even though most of it evaporated from the salty sea?"),
            (b, "2. Name two ways that water returns from the land to the air."),
            (b, "3. How could building a large car park change the water cycle in a town?"),
        ],
    ])
}
