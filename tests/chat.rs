//! Chat templates against jinja2's renders (fixtures/tokenizer/smollm2.json, made by
//! scripts/fixtures/make_tokenizer_fixture.py through tokenizer.apply_chat_template).

use std::path::{Path, PathBuf};

use classtune::chat::{stop_ids, ChatError, ChatTemplate, Message, SpecialTokens};
use classtune::gguf::write::GgufWriter;
use classtune::gguf::{Gguf, MappedFile, Value, ValueType};
use classtune::tokenizer::Tokenizer;
use serde_json::Value as Json;

fn model_path() -> PathBuf {
    classtune::paths::default_model()
}

fn smollm2() -> (ChatTemplate, Tokenizer) {
    let path = model_path();
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh to download SmolLM2-135M-Instruct (or set CLASSTUNE_MODEL)",
        path.display()
    );
    let file = MappedFile::open(&path).expect("open model");
    let gguf = Gguf::parse(file.bytes(), file.bytes().len() as u64).expect("parse GGUF header");
    (
        ChatTemplate::from_gguf(&gguf).expect("SmolLM2 template"),
        Tokenizer::from_gguf(&gguf).expect("tokenizer"),
    )
}

fn fixture() -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizer/smollm2.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn template(fx: &Json, name: &str) -> Result<ChatTemplate, ChatError> {
    ChatTemplate::from_jinja(fx["templates"][name].as_str().unwrap())
}

#[test]
fn renders_equal_jinja2() {
    let fx = fixture();
    let (smollm, _) = smollm2();
    let qwen = template(&fx, "qwen2.5").expect("Qwen2.5 template");
    let chatml = template(&fx, "chatml").expect("plain ChatML template");
    let mut checked = std::collections::BTreeMap::new();
    for case in fx["chat"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let chat = match name {
            "smollm2" => &smollm,
            "qwen2.5" => &qwen,
            "chatml" => &chatml,
            other => panic!("unknown template {other}"),
        };
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let got = chat.render(&messages, gen);
        assert_eq!(
            got,
            case["rendered"].as_str().unwrap(),
            "{name} / {} / gen={gen}",
            case["conversation"]
        );
        *checked.entry(name).or_insert(0) += 1;
    }
    assert_eq!(checked.len(), 3, "{checked:?}");
    assert!(checked.values().all(|&n| n >= 8), "{checked:?}");
}

#[test]
fn default_system_prompts_come_from_the_template() {
    let fx = fixture();
    let (smollm, _) = smollm2();
    assert_eq!(
        smollm.default_system(),
        Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    );
    let qwen = template(&fx, "qwen2.5").unwrap();
    assert_eq!(
        qwen.default_system(),
        Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
    );
    assert_eq!(template(&fx, "chatml").unwrap().default_system(), None);
    // Another text in SmolLM2's template shape: that text comes out.
    let custom = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
        {{ '<|im_start|>system\nCustom prompt, with \\'quotes\\'<|im_end|>\n' }}{% endif %}\
        {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}\
        {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    let chat = ChatTemplate::from_jinja(custom).unwrap();
    assert_eq!(chat.default_system(), Some("Custom prompt, with 'quotes'"));
    assert_eq!(
        chat.render(&[Message::user("x")], true),
        "<|im_start|>system\nCustom prompt, with 'quotes'<|im_end|>\n<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn non_chatml_templates_are_rejected() {
    let fx = fixture();
    for name in ["llama3", "almost_chatml", "chatml_extra_newlines"] {
        match template(&fx, name) {
            Err(ChatError::UnsupportedTemplate { excerpt, reason }) => {
                assert!(
                    !excerpt.is_empty()
                        && fx["templates"][name]
                            .as_str()
                            .unwrap()
                            .starts_with(excerpt.trim_end_matches('…'))
                );
                eprintln!("{name}: {reason}");
            }
            other => panic!("{name} should be rejected, got {other:?}"),
        }
    }
    for bad in [
        "{% for m in messages %}",
        "{{ 'unclosed ",
        "{% macro x() %}{% endmacro %}",
        "just text",
    ] {
        assert!(
            matches!(
                ChatTemplate::from_jinja(bad),
                Err(ChatError::UnsupportedTemplate { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn missing_template_is_plain_chatml_and_stop_ids() {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    let bytes = w.to_bytes();
    let gguf = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    let chat = ChatTemplate::from_gguf(&gguf).unwrap();
    assert_eq!(chat, ChatTemplate::chatml());
    assert_eq!(
        chat.render(&[Message::user("q")], false),
        "<|im_start|>user\nq<|im_end|>\n"
    );

    let (smollm, tok) = smollm2();
    assert_eq!(stop_ids(&tok), vec![2], "SmolLM2: eos is <|im_end|>");
    assert_eq!(smollm.stop_ids(&tok), vec![2]);
    let prompt = smollm.render(&[Message::user("Hi")], true);
    let ids = tok.encode(&prompt, true).unwrap();
    assert_eq!(ids[0], 1, "prompt starts with <|im_start|>");
    assert_eq!(tok.decode(&ids).unwrap(), prompt);
}

#[test]
fn tiny_fixture_templates_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("gguf") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let gguf = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
        let chat =
            ChatTemplate::from_gguf(&gguf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tok = Tokenizer::from_gguf(&gguf).unwrap();
        assert!(!stop_ids(&tok).is_empty());
        let _ = chat.render(&[Message::user("hello")], true);
    }
}

fn rejection_reason(result: Result<ChatTemplate, ChatError>) -> String {
    match result {
        Err(ChatError::UnsupportedTemplate { reason, .. }) => {
            eprintln!("{reason}");
            reason
        }
        other => panic!("expected UnsupportedTemplate, got {other:?}"),
    }
}

#[test]
fn llama3_is_rejected_as_not_chatml_with_or_without_tokens() {
    let fx = fixture();
    let source = fx["templates"]["llama3"].as_str().unwrap();
    let tokens = SpecialTokens {
        bos: Some("<|begin_of_text|>".into()),
        eos: Some("<|eot_id|>".into()),
    };
    let reason = rejection_reason(ChatTemplate::from_jinja_with_tokens(source, &tokens));
    assert!(reason.contains("not ChatML"), "{reason}");
    assert!(
        reason.contains("<|begin_of_text|><|start_header_id|>user"),
        "{reason}"
    );
    // Without tokens, bos_token is undefined and prints as nothing (not "None").
    let reason = rejection_reason(ChatTemplate::from_jinja(source));
    assert!(
        reason.contains("renders as \"<|start_header_id|>user"),
        "{reason}"
    );
}

#[test]
fn hugging_face_jinja_features() {
    // Python string methods, `raise_exception` on a branch the probes never take,
    // `{% generation %}` and `bos_token` used only in a test.
    let source = "{%- if bos_token is not defined %}{{ raise_exception('no bos') }}{% endif %}\n\
        {%- for message in messages %}\n\
        {%- if message.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role') }}{% endif %}\n\
        {%- if message.role == 'assistant' %}\n\
        {{- '<|im_start|>assistant\\n' }}{% generation %}{{ message.content }}{% endgeneration %}{{ '<|im_end|>\\n' }}\n\
        {%- else %}\n\
        {{- '<|im_start|>' + message.role.strip() + '\\n' + message['content'] + '<|im_end|>\\n' }}\n\
        {%- endif %}\n\
        {%- endfor %}\n\
        {%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}\n";
    let tokens = SpecialTokens {
        bos: Some("<s>".into()),
        eos: None,
    };
    let chat = ChatTemplate::from_jinja_with_tokens(source, &tokens).unwrap();
    assert_eq!(chat, ChatTemplate::chatml());
    // Without a BOS token the template raises, and its message is the reason.
    let reason = rejection_reason(ChatTemplate::from_jinja(source));
    assert!(reason.contains("no bos"), "{reason}");
}

#[test]
fn template_errors_carry_minijinja_messages() {
    let reason = rejection_reason(ChatTemplate::from_jinja(
        "{% for m in messages %}\n{{ m.content }}",
    ));
    assert!(
        reason.starts_with("cannot parse it: syntax error"),
        "{reason}"
    );
    let reason = rejection_reason(ChatTemplate::from_jinja(
        "{% for m in messages %}\n{{ no_such_function(m) }}{% endfor %}",
    ));
    assert!(
        reason.contains("unknown function") && reason.contains("no_such_function(m)"),
        "{reason}"
    );
}

#[test]
fn from_gguf_reads_bos_and_eos_tokens() {
    let gguf_with = |bos: u32| {
        let tokens = ["<unk>", "<s>", "</s>"].map(|t| Value::String(t.into()));
        let mut w = GgufWriter::new();
        w.set(
            "tokenizer.chat_template",
            Value::String("{{ bos_token }}|{{ eos_token }}".into()),
        );
        w.set(
            "tokenizer.ggml.tokens",
            Value::Array(ValueType::String, tokens.to_vec()),
        );
        w.set("tokenizer.ggml.bos_token_id", Value::U32(bos));
        w.set("tokenizer.ggml.eos_token_id", Value::U32(2));
        w.to_bytes()
    };
    let bytes = gguf_with(1);
    let gguf = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(
        SpecialTokens::from_gguf(&gguf).unwrap(),
        SpecialTokens {
            bos: Some("<s>".into()),
            eos: Some("</s>".into()),
        }
    );
    let reason = rejection_reason(ChatTemplate::from_gguf(&gguf));
    assert!(reason.contains("renders as \"<s>|</s>\""), "{reason}");

    let bytes = gguf_with(7);
    let gguf = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    assert!(matches!(
        ChatTemplate::from_gguf(&gguf),
        Err(ChatError::TokenId {
            id: 7,
            vocab_size: 3,
            ..
        })
    ));
}
