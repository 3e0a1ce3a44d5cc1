//! The `classtune` binary as a user runs it: results on stdout, diagnostics on stderr,
//! and bad input answered with an error that names the file and the problem.

mod reference;

use std::process::{Command, Output};

use classtune::gguf::write::GgufWriter;
use classtune::gguf::{Gguf, Value};
use reference::{root, Reference};

fn classtune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_classtune")).args(args).output().expect("run classtune")
}

fn tiny(name: &str) -> String {
    root().join("fixtures/tiny").join(name).display().to_string()
}

#[test]
fn info_describes_the_model() {
    let out = classtune(&["info", "--model", &tiny("tiny-qwen2.gguf"), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["config"]["arch"], "qwen2");
    assert_eq!(info["config"]["n_kv_heads"], 1);
    assert_eq!(info["config"]["tied_embeddings"], false);
    assert_eq!(info["config"]["qkv_bias"], true);
    assert!(info["tensor_types"]["Q4_K"]["tensors"].as_u64().unwrap() > 0);
    assert!(info["memory"]["weights_bytes"].as_u64().unwrap() > 100_000);
    let text = classtune(&["info", "--model", &tiny("tiny-llama.gguf")]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("llama") && text.contains("GPU memory"), "{text}");
}

/// Scoring the reference's prose through the CLI (tokenizer included) gives the mean
/// NLL transformers computed for the same text.
#[test]
fn score_equals_the_reference_nll() {
    let reference = Reference::open(&root().join("fixtures/tiny/tiny-llama.ref.json"));
    let prose = &reference.json["sequences"][2];
    let dir = std::env::temp_dir().join(format!("classtune-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("prose.txt");
    std::fs::write(&data, prose["text"].as_str().unwrap()).unwrap();
    let out = classtune(&["score", "--model", &tiny("tiny-llama.gguf"), "--data", data.to_str().unwrap(), "--seq-len", "512"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = prose["ids"].as_array().unwrap().len() as u64;
    assert_eq!(result["tokens"].as_u64(), Some(ids - 1));
    let (ours, expected) = (result["mean_nll"].as_f64().unwrap(), prose["mean_nll"].as_f64().unwrap());
    assert!((ours - expected).abs() < 1e-4, "mean NLL {ours}, transformers {expected}");
}

/// Greedy generation from text equals transformers' greedy tokens, decoded.
#[test]
fn generate_is_greedy_and_streams_only_the_completion() {
    let reference = Reference::open(&root().join("fixtures/tiny/tiny-qwen2.ref.json"));
    let greedy = &reference.json["greedy"];
    let prompt = greedy["prompt_text"].as_str().unwrap();
    let n = greedy["new_ids"].as_array().unwrap().len().to_string();
    let out = classtune(&["generate", "--model", &tiny("tiny-qwen2.gguf"), "--prompt", prompt, "--max-tokens", &n, "--temperature", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = greedy["new_text"].as_str().unwrap();
    assert_eq!(stdout.trim_end_matches('\n'), expected.trim_end_matches('\n'));
    assert!(String::from_utf8_lossy(&out.stderr).contains("generated"));
}

#[test]
fn seeded_sampling_is_reproducible() {
    let run = |seed: &str| {
        let out = classtune(&[
            "generate", "--model", &tiny("tiny-llama.gguf"), "--prompt", "The river", "--max-tokens", "12",
            "--temperature", "0.9", "--top-k", "20", "--seed", seed,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    assert_eq!(run("7"), run("7"));
    assert_ne!(run("7"), run("8"), "different seeds should differ on a random model");
}

fn write_gguf(name: &str, edit: impl FnOnce(&mut GgufWriter, &Gguf)) -> std::path::PathBuf {
    let bytes = std::fs::read(tiny("tiny-llama.gguf")).unwrap();
    let gguf = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    let mut writer = GgufWriter::new();
    for (key, value) in gguf.metadata() {
        writer.set(key, value.clone());
    }
    for t in gguf.tensors() {
        let data = bytes[t.offset as usize..(t.offset + t.size) as usize].to_vec();
        writer.tensor(&t.name, &t.dims, t.ty, data).unwrap();
    }
    edit(&mut writer, &gguf);
    let dir = std::env::temp_dir().join(format!("classtune-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, writer.to_bytes()).unwrap();
    path
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = classtune(args);
    assert!(!out.status.success(), "expected failure for {args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in needles {
        assert!(stderr.contains(needle), "stderr of {args:?} lacks {needle:?}:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_models_get_clear_errors() {
    let arch = write_gguf("gpt2.gguf", |w, _| {
        w.set("general.architecture", Value::String("gpt2".into()));
    });
    fails_with(&["info", "--model", arch.to_str().unwrap()], &["gpt2.gguf", "architecture `gpt2` is not supported"]);

    let no_tokenizer = write_gguf("no-tokens.gguf", |w, _| {
        w.remove("tokenizer.ggml.tokens");
    });
    fails_with(&["generate", "--model", no_tokenizer.to_str().unwrap(), "--prompt", "hi"], &["tokenizer.ggml.tokens"]);

    let garbage = std::env::temp_dir().join(format!("classtune-garbage-{}.gguf", std::process::id()));
    std::fs::write(&garbage, b"PK\x03\x04 this is a zip, not a model").unwrap();
    fails_with(&["info", "--model", garbage.to_str().unwrap()], &["not a GGUF file", "PK"]);

    let bytes = std::fs::read(tiny("tiny-llama.gguf")).unwrap();
    let truncated = std::env::temp_dir().join(format!("classtune-truncated-{}.gguf", std::process::id()));
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&["info", "--model", truncated.to_str().unwrap()], &["past the end of the file"]);

    fails_with(&["info", "--model", "/nonexistent/model.gguf"], &["/nonexistent/model.gguf"]);
    fails_with(
        &["score", "--model", &tiny("tiny-llama.gguf"), "--data", "/nonexistent/notes.txt"],
        &["/nonexistent/notes.txt"],
    );
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("classtune-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn metrics(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `train` on the sample course: the adapter files, metrics, checkpoint and exports
/// land in --out; a paused and resumed run writes the same losses as a straight one;
/// `export` turns the checkpoint into each format; `score --adapter` applies it.
#[test]
fn train_pause_resume_export_and_score_with_the_adapter() {
    let course = root().join("sample-course/water-cycle-notes.md").display().to_string();
    let model = tiny("tiny-llama.gguf");
    let train = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "train", "--model", &model, "--data", &course, "--out", out.to_str().unwrap(), "--seq-len", "64", "--max-steps", "4",
            "--batch", "2", "--lr", "1e-2", "--rank", "4", "--alpha", "8", "--eval-every", "2", "--val-fraction", "0.3",
        ];
        args.extend_from_slice(extra);
        let out = classtune(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let straight = temp_dir("straight");
    let log = train(&straight, &["--export", "gguf-lora"]);
    assert!(log.contains("step 4/4") && log.contains("done: 4 steps"), "{log}");
    for file in ["adapter_model.safetensors", "adapter_config.json", "README.md", "checkpoint.safetensors", "adapter.gguf", "metrics.jsonl"] {
        assert!(straight.join(file).is_file(), "{file} missing");
    }
    let m = metrics(&straight);
    assert_eq!(m.len(), 4);
    for (i, line) in m.iter().enumerate() {
        assert_eq!(line["step"], i + 1);
        for key in ["loss", "lr", "grad_norm", "tokens_per_s"] {
            assert!(line[key].as_f64().is_some(), "{key} missing in {line}");
        }
    }
    assert!(m[1]["val_loss"].as_f64().is_some() && m[0].get("val_loss").is_none());
    let card = std::fs::read_to_string(straight.join("README.md")).unwrap();
    assert!(card.contains("water-cycle-notes.md") && !card.contains("evaporat"), "the card must not quote the course");

    let paused = temp_dir("paused");
    let log = train(&paused, &["--stop-after", "2"]);
    assert!(log.contains("pausing after step 2"), "{log}");
    let ckpt = paused.join("checkpoint.safetensors").display().to_string();
    train(&paused, &["--resume", &ckpt]);
    let resumed = metrics(&paused);
    assert_eq!(resumed.len(), 4);
    for (a, b) in m.iter().zip(&resumed) {
        let (a, b) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-6, "straight {a} vs paused and resumed {b}");
    }
    let want = std::fs::read(straight.join("adapter_model.safetensors")).unwrap();
    assert_eq!(std::fs::read(paused.join("adapter_model.safetensors")).unwrap(), want);

    // Export from the checkpoint equals what train wrote; other formats parse.
    let exported = temp_dir("export");
    let ckpt = straight.join("checkpoint.safetensors").display().to_string();
    for format in ["peft", "gguf-lora", "merged-q8_0"] {
        let out = classtune(&["export", "--model", &model, "--checkpoint", &ckpt, "--format", format, "--out", exported.to_str().unwrap()]);
        assert!(out.status.success(), "{format}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(std::fs::read(exported.join("adapter_model.safetensors")).unwrap(), want);
    assert_eq!(std::fs::read(exported.join("adapter.gguf")).unwrap(), std::fs::read(straight.join("adapter.gguf")).unwrap());
    let merged = std::fs::read(exported.join("merged/merged-q8_0.gguf")).unwrap();
    Gguf::parse(&merged, merged.len() as u64).unwrap();
    let wrong = classtune(&["export", "--model", &tiny("tiny-qwen2.gguf"), "--checkpoint", &ckpt, "--format", "peft", "--out", "/tmp/x"]);
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("was trained on"));

    // The adapter changes the score of the course text.
    let score = |extra: &[&str]| {
        let mut args = vec!["score", "--model", &model, "--data", &course, "--seq-len", "64"];
        args.extend_from_slice(extra);
        let out = classtune(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["mean_nll"].as_f64().unwrap()
    };
    let base = score(&[]);
    let adapted = score(&["--adapter", straight.to_str().unwrap()]);
    assert!(adapted < base, "training on the course should lower its loss: base {base}, adapted {adapted}");
    // The llama.cpp LoRA file is the same adapter.
    let from_gguf = score(&["--adapter", straight.join("adapter.gguf").to_str().unwrap()]);
    assert!((from_gguf - adapted).abs() < 1e-5, "PEFT {adapted} vs GGUF LoRA {from_gguf}");

    // Training can start from an exported adapter: its first loss is the trained one's.
    let more = temp_dir("more");
    train(&more, &["--init-adapter", straight.join("adapter.gguf").to_str().unwrap(), "--stop-after", "1"]);
    let first = metrics(&more)[0]["loss"].as_f64().unwrap();
    assert!(first < m[0]["loss"].as_f64().unwrap(), "{first} vs a fresh adapter's {}", m[0]["loss"]);
}

#[test]
fn train_refuses_bad_settings() {
    let model = tiny("tiny-llama.gguf");
    let course = root().join("sample-course/water-cycle-notes.md").display().to_string();
    let out = temp_dir("bad");
    let o = out.to_str().unwrap();
    fails_with(&["train", "--model", &model, "--data", &course, "--out", o, "--seq-len", "64", "--rank", "65"], &["rank 65"]);
    fails_with(&["train", "--model", &model, "--data", &course, "--out", o, "--seq-len", "64", "--targets", "q,x"], &["unknown LoRA target"]);
    fails_with(&["train", "--model", &model, "--data", "/nonexistent/notes.md", "--out", o, "--seq-len", "64"], &["no training examples"]);
    fails_with(&["train", "--model", &model, "--data", &course, "--out", o, "--seq-len", "64", "--export", "zip"], &["unknown export format"]);
    fails_with(&["train", "--model", &model, "--data", &course, "--out", o, "--seq-len", "64", "--gpu-memory", "1"], &["out of GPU memory", "--batch"]);
    fails_with(&["train", "--model", &model, "--data", &course, "--out", o, "--resume", &course], &["not a safetensors file"]);
}

#[test]
fn a_pass_smaller_than_the_longest_sequence_is_raised_with_a_warning() {
    let course = root().join("sample-course/water-cycle-notes.md").display().to_string();
    let (model, out) = (tiny("tiny-llama.gguf"), temp_dir("small-pass"));
    let args = ["train", "--model", &model, "--data", &course, "--out", out.to_str().unwrap(), "--seq-len", "64", "--max-steps", "1", "--pass-tokens", "8"];
    let run = classtune(&args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("--pass-tokens 8 is below the longest sequence") && stderr.contains("tokens a pass"), "{stderr}");
}
