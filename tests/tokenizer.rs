//! The GGUF tokenizer against transformers' conversion of the real SmolLM2 file
//! (fixtures/tokenizer/smollm2.json, made by scripts/fixtures/make_tokenizer_fixture.py),
//! plus tiny tokenizers written with GgufWriter.

use std::path::{Path, PathBuf};

use classtune::gguf::write::GgufWriter;
use classtune::gguf::{Gguf, MappedFile, Value, ValueType};
use classtune::tokenizer::{byte_level, PreType, Tokenizer, TokenizerError};
use serde_json::Value as Json;

fn model_path() -> PathBuf {
    classtune::paths::default_model()
}

fn smollm2() -> Tokenizer {
    let path = model_path();
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh to download SmolLM2-135M-Instruct (or set CLASSTUNE_MODEL)",
        path.display()
    );
    let file = MappedFile::open(&path).expect("open model");
    let gguf = Gguf::parse(file.bytes(), file.bytes().len() as u64).expect("parse GGUF header");
    Tokenizer::from_gguf(&gguf).expect("tokenizer from GGUF")
}

fn fixture() -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizer/smollm2.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn smollm2_metadata() {
    let tok = smollm2();
    let fx = fixture();
    assert_eq!(tok.vocab_size() as u64, fx["vocab_size"].as_u64().unwrap());
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert_eq!(tok.pad_id(), Some(2));
    assert!(!tok.add_bos());
    assert_eq!(tok.pre_type(), PreType::Smollm);
    assert_eq!(tok.token_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.id_to_token(2), Some("<|im_end|>"));
    assert_eq!(tok.id_to_token(49_152), None);
    assert!(tok.is_control(0) && !tok.is_control(17));
}

#[test]
fn smollm2_matches_reference_encode_and_decode() {
    let tok = smollm2();
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        // llama.cpp's reading where transformers' GGUF conversion differs (see the script).
        let expected = ids(case.get("ids_llama_cpp").unwrap_or(&case["ids"]));
        let got = tok.encode(text, true).unwrap();
        if got != expected {
            failures.push(format!(
                "encode {text:?}:\n  got      {got:?}\n  expected {expected:?}"
            ));
        }
        let decoded = tok.decode(&ids(&case["ids"])).unwrap();
        if decoded != case["decoded"].as_str().unwrap() {
            failures.push(format!("decode of {text:?}: got {decoded:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_round_trips_and_streams() {
    let tok = smollm2();
    let fx = fixture();
    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        for special in [false, true] {
            let ids = tok.encode(text, special).unwrap();
            assert_eq!(
                tok.decode(&ids).unwrap(),
                text,
                "round trip (special={special}) of {text:?}"
            );
            let mut stream = tok.stream_decoder();
            let mut streamed = String::new();
            for &id in &ids {
                if let Some(piece) = stream.push(id).unwrap() {
                    assert!(
                        !piece.contains('\u{FFFD}'),
                        "stream broke a character in {text:?}"
                    );
                    streamed.push_str(&piece);
                }
            }
            assert_eq!(stream.finish(), None, "stream left bytes for {text:?}");
            assert_eq!(streamed, text, "stream of {text:?}");
        }
    }
}

#[test]
fn stream_decoder_waits_for_complete_characters() {
    let tok = smollm2();
    let text = "家族 👨‍👩‍👧‍👦 🇯🇵 Grüße";
    let ids = tok.encode(text, false).unwrap();
    let mut stream = tok.stream_decoder();
    let mut pieces = Vec::new();
    let mut silent = 0;
    for &id in &ids {
        match stream.push(id).unwrap() {
            Some(p) => pieces.push(p),
            None => silent += 1,
        }
    }
    assert!(
        silent > 0,
        "some token should end inside a multi-byte character"
    );
    assert_eq!(pieces.concat(), text);
    // A lone continuation byte is invalid: one U+FFFD, same as decode().
    // "é" is C3 A9; take the two single-byte tokens.
    let byte_token = |b: u8| {
        tok.token_id(&byte_level::byte_to_char(b).to_string())
            .unwrap()
    };
    let lone = [byte_token(0xC3), byte_token(0xA9)];
    assert_eq!(tok.decode(&lone).unwrap(), "é");
    let mut s = tok.stream_decoder();
    let got = s.push(lone[1]).unwrap();
    assert_eq!(got.as_deref(), Some("\u{FFFD}"));
    assert_eq!(tok.decode(&lone[1..]).unwrap(), "\u{FFFD}");
    // An unfinished character at the end comes out of finish() as U+FFFD.
    let mut s = tok.stream_decoder();
    assert_eq!(s.push(lone[0]).unwrap(), None);
    assert_eq!(s.finish().as_deref(), Some("\u{FFFD}"));
    assert!(matches!(
        s.push(60_000),
        Err(TokenizerError::IdOutOfRange { id: 60_000, .. })
    ));
}

#[test]
fn special_tokens_parsed_only_when_asked() {
    let tok = smollm2();
    let fx = fixture();
    let sp = &fx["special"];
    let text = sp["text"].as_str().unwrap();
    assert_eq!(tok.encode(text, true).unwrap(), ids(&sp["ids_parsed"]));
    assert_eq!(tok.encode(text, false).unwrap(), ids(&sp["ids_unparsed"]));
    assert_eq!(tok.encode("<|im_end|>", true).unwrap(), vec![2]);
    assert_ne!(tok.encode("<|im_end|>", false).unwrap(), vec![2]);
    assert_eq!(
        tok.decode(&[1, 2, 0]).unwrap(),
        "<|im_start|><|im_end|><|endoftext|>"
    );
    assert!(matches!(
        tok.decode(&[49_152]),
        Err(TokenizerError::IdOutOfRange {
            id: 49_152,
            vocab_size: 49_152
        })
    ));
}

// ---- tiny tokenizers written with GgufWriter ----

fn strings(items: &[String]) -> Value {
    Value::Array(
        ValueType::String,
        items.iter().map(|s| Value::String(s.clone())).collect(),
    )
}

/// 3 control tokens, the 256 byte tokens, then "he", "ll", "hell", "hello".
fn tiny_writer() -> GgufWriter {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    tokens.extend((0..=255u8).map(|b| byte_level::byte_to_char(b).to_string()));
    tokens.extend(["he", "ll", "hell", "hello"].map(String::from));
    let merges: Vec<String> = ["h e", "l l", "he ll", "hell o"].map(String::from).to_vec();
    let mut types = vec![Value::I32(3); 3];
    types.extend(std::iter::repeat_n(Value::I32(1), tokens.len() - 3));
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()))
        .set("tokenizer.ggml.model", Value::String("gpt2".into()))
        .set("tokenizer.ggml.pre", Value::String("smollm".into()))
        .set("tokenizer.ggml.tokens", strings(&tokens))
        .set("tokenizer.ggml.merges", strings(&merges))
        .set(
            "tokenizer.ggml.token_type",
            Value::Array(ValueType::I32, types),
        )
        .set("tokenizer.ggml.bos_token_id", Value::U32(1))
        .set("tokenizer.ggml.eos_token_id", Value::U32(2))
        .set("tokenizer.ggml.add_bos_token", Value::Bool(false));
    w
}

fn load(w: &GgufWriter) -> Result<Tokenizer, TokenizerError> {
    let bytes = w.to_bytes();
    let gguf = Gguf::parse(&bytes, bytes.len() as u64).expect("parse written GGUF");
    Tokenizer::from_gguf(&gguf)
}

#[test]
fn tiny_tokenizer_works() {
    let tok = load(&tiny_writer()).unwrap();
    let id = |t: &str| tok.token_id(t).unwrap();
    assert_eq!(tok.vocab_size(), 3 + 256 + 4);
    assert_eq!(tok.encode("hello", false).unwrap(), vec![id("hello")]);
    assert_eq!(
        tok.encode("hello hello", false).unwrap(),
        vec![id("hello"), id("Ġ"), id("hello")]
    );
    assert_eq!(tok.encode("hell", false).unwrap(), vec![id("hell")]);
    // smollm: digits one by one.
    assert_eq!(
        tok.encode("a12", false).unwrap(),
        vec![id("a"), id("1"), id("2")]
    );
    assert_eq!(
        tok.encode("<|im_start|>hello", true).unwrap(),
        vec![1, id("hello")]
    );
    let plain = tok.encode("<|im_start|>hello", false).unwrap();
    assert_eq!(plain.len(), "<|im_start|>".len() + 1);
    for text in ["hello wörld 😀\n\t  x", "", "<|im_end|>"] {
        assert_eq!(tok.decode(&tok.encode(text, true).unwrap()).unwrap(), text);
    }
}

#[test]
fn tiny_tokenizer_llama3_ignores_merges_and_adds_bos() {
    let mut w = tiny_writer();
    w.set("tokenizer.ggml.pre", Value::String("llama-bpe".into()));
    let tok = load(&w).unwrap();
    assert!(!tok.add_bos(), "the file's add_bos_token=false wins");
    let mut metadata_only = GgufWriter::new();
    let bytes = w.to_bytes();
    let gguf = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    for (k, v) in gguf
        .metadata()
        .filter(|(k, _)| *k != "tokenizer.ggml.add_bos_token")
    {
        metadata_only.set(k, v.clone());
    }
    let tok = load(&metadata_only).unwrap();
    assert!(
        tok.add_bos(),
        "llama-bpe defaults to add_bos like llama.cpp"
    );
    assert_eq!(tok.pre_type(), PreType::Llama3);
    assert_eq!(
        tok.encode("hello", false).unwrap(),
        vec![tok.token_id("hello").unwrap()]
    );
}

#[test]
fn every_supported_pre_tokenizer_builds_and_round_trips() {
    for &(name, family) in PreType::NAMES {
        let mut w = tiny_writer();
        w.set("tokenizer.ggml.pre", Value::String(name.into()));
        let tok = load(&w).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tok.pre_type(), family);
        let text = "Hello 12345 world's   \n\n\tend ½ 😀 <|im_end|>";
        for special in [false, true] {
            assert_eq!(
                tok.decode(&tok.encode(text, special).unwrap()).unwrap(),
                text,
                "{name}"
            );
        }
    }
}

fn without(key: &str) -> GgufWriter {
    let w = tiny_writer();
    let bytes = w.to_bytes();
    let gguf = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    let mut out = GgufWriter::new();
    for (k, v) in gguf.metadata().filter(|(k, _)| *k != key) {
        out.set(k, v.clone());
    }
    out
}

#[test]
fn missing_or_bad_metadata_is_a_named_error() {
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.model",
        "tokenizer.ggml.merges",
    ] {
        let err = load(&without(key)).unwrap_err();
        assert!(
            matches!(&err, TokenizerError::MissingKey { key: k } if k == key),
            "{key}: {err:?}"
        );
        assert!(err.to_string().contains(key), "message names {key}: {err}");
    }
    let mut w = tiny_writer();
    w.set("tokenizer.ggml.model", Value::String("llama".into()));
    let err = load(&w).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::UnsupportedModel { model } if model == "llama"),
        "{err:?}"
    );
    assert!(err.to_string().contains("`llama`"));

    let mut w = tiny_writer();
    w.set("tokenizer.ggml.pre", Value::String("mystery-pre".into()));
    let err = load(&w).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::UnsupportedPre { pre, .. } if pre == "mystery-pre"),
        "{err:?}"
    );
    assert!(err.to_string().contains("mystery-pre") && err.to_string().contains("smollm"));

    let mut w = tiny_writer();
    w.set(
        "tokenizer.ggml.merges",
        strings(&["h e".into(), "x".into()]),
    );
    let err = load(&w).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::BadMerge { index: 1, .. }),
        "{err:?}"
    );

    let mut w = tiny_writer();
    w.set("tokenizer.ggml.merges", strings(&["q z".into()]));
    let err = load(&w).unwrap_err();
    assert!(
        err.to_string().contains("`qz` is not in the vocabulary"),
        "{err}"
    );

    let mut w = tiny_writer();
    w.set(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, vec![Value::I32(1); 5]),
    );
    assert!(matches!(
        load(&w).unwrap_err(),
        TokenizerError::LengthMismatch { found: 5, .. }
    ));

    let mut w = tiny_writer();
    w.set("tokenizer.ggml.eos_token_id", Value::U32(100_000));
    assert!(matches!(
        load(&w).unwrap_err(),
        TokenizerError::BadSpecialId { id: 100_000, .. }
    ));

    let mut w = without("tokenizer.ggml.bos_token_id");
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    assert!(matches!(
        load(&w).unwrap_err(),
        TokenizerError::AddBosWithoutBos
    ));

    let mut w = tiny_writer();
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(ValueType::U32, vec![Value::U32(1)]),
    );
    assert!(matches!(load(&w).unwrap_err(), TokenizerError::Metadata(_)));
}

#[test]
fn missing_pre_falls_back_to_default() {
    let tok = load(&without("tokenizer.ggml.pre")).unwrap();
    assert_eq!(tok.pre_type(), PreType::Default);
    assert_eq!(
        tok.decode(&tok.encode("hello 123, world!", false).unwrap())
            .unwrap(),
        "hello 123, world!"
    );
}

/// The tiny model fixtures (fixtures/tiny/*.gguf) load, and agree with the
/// tokenizer.json they were made with (Digits + ByteLevel: a different pipeline than
/// our llama.cpp-style regex splits).
#[test]
fn tiny_fixture_ggufs_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny");
    let reference = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).ok();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("gguf") {
            continue;
        }
        n += 1;
        let bytes = std::fs::read(&path).unwrap();
        let gguf = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
        let tok = Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let fx = fixture();
        for case in fx["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let ids = tok.encode(text, true).unwrap();
            assert_eq!(
                tok.decode(&ids).unwrap(),
                text,
                "{}: round trip",
                path.display()
            );
            if let Some(reference) = &reference {
                let want = reference.encode(text, false).unwrap().get_ids().to_vec();
                assert_eq!(ids, want, "{}: {text:?} vs tokenizer.json", path.display());
            }
        }
    }
    eprintln!(
        "checked {n} tiny GGUFs (reference tokenizer.json: {})",
        reference.is_some()
    );
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<classtune::tokenizer::StreamDecoder>();
}
