//! Natively run round trips of the messages for calibration, probes, the quiz,
//! imports, models from disk, merged exports and conversations.

use super::*;

fn question(chat: bool) -> Question {
    Question { prompt: "What is evaporation?".into(), reference: "Water turning into vapour.".into(), chat }
}

#[test]
fn new_requests_round_trip_with_payloads() {
    let history = vec![Turn { user: "Hi".into(), assistant: "Hello! \"Ask\" away.".into() }];
    let requests = [
        ToWorker::Quiz { max_tokens: 32, data: DataSettings::default() },
        ToWorker::LoadModel { source: ModelSource::File { name: "my model.gguf".into(), size: 98 << 20 } },
        ToWorker::Export { format: ExportFormat::MergedF16 },
        ToWorker::Export { format: ExportFormat::MergedQ8 },
        ToWorker::Generate {
            id: 4,
            prompt: "And then?".into(),
            settings: GenerateSettings { adapter: true, history: history.clone(), ..Default::default() },
        },
    ];
    for request in requests {
        assert!(request.payloads().is_empty());
        assert_eq!(ToWorker::decode(&request.encode()).unwrap(), request);
    }
    // A model file's bytes never go into the JSON: only its name and size.
    assert_eq!(
        ToWorker::LoadModel { source: ModelSource::File { name: "m.gguf".into(), size: 7 } }.encode(),
        r#"{"type":"load_model","source":{"kind":"file","name":"m.gguf","size":7}}"#
    );
    assert_eq!(ExportFormat::MergedQ8.name(), "merged-q8");

    // Imports: names in the JSON, bytes beside it, in order.
    let adapter = ToWorker::ImportAdapter {
        files: vec![
            ImportFile { name: "adapter_model.safetensors".into(), bytes: vec![8, 0, 0, 0] },
            ImportFile { name: "adapter_config.json".into(), bytes: b"{\"r\": 4}".to_vec() },
        ],
    };
    let checkpoint = ToWorker::ImportCheckpoint {
        file: ImportFile { name: "run-checkpoint.safetensors".into(), bytes: vec![1, 2, 3] },
        data: DataSettings::default(),
    };
    for request in [adapter, checkpoint] {
        let text = request.encode();
        assert!(!text.contains("\\\"r\\\""), "bytes leaked into the JSON: {text}");
        let payloads: Vec<Vec<u8>> = request.payloads().into_iter().map(<[u8]>::to_vec).collect();
        let mut back = ToWorker::decode(&text).unwrap();
        assert!(back.clone().attach(vec![vec![1]; payloads.len() + 1]).is_err());
        back.attach(payloads).unwrap();
        assert_eq!(back, request);
    }
}

#[test]
fn a_generate_request_without_history_starts_a_conversation() {
    let text = r#"{"type":"generate","id":1,"prompt":"x","settings":{"chat":true,"max_tokens":4,"temperature":0.0,"top_k":0,"top_p":1.0,"seed":0}}"#;
    let ToWorker::Generate { settings, .. } = ToWorker::decode(text).unwrap() else { panic!("not generate") };
    assert!(settings.history.is_empty());
}

#[test]
fn new_replies_round_trip() {
    let replies = [
        FromWorker::Calibration(Calibration {
            tokens: 64,
            warmup_seconds: 3.5,
            seconds: 0.25,
            total_steps: 30,
            batch: 2,
            estimate_seconds: 16.0,
        }),
        FromWorker::Probe(ProbeReport {
            step: 6,
            total_steps: 30,
            answers: vec![ProbeAnswer { question: question(true), answer: "It evaporates…".into() }],
            seconds: 1.5,
        }),
        FromWorker::Quiz(QuizReport {
            items: vec![QuizItem { question: question(false), base: "b".into(), adapter: "a".into() }],
            base_val_loss: Some(5.25),
            adapter_val_loss: Some(3.5),
            val_step: 30,
        }),
        FromWorker::AdapterImported(ImportedAdapter {
            source: "adapter.zip".into(),
            format: "peft".into(),
            base_name: "SmolLM2 135M".into(),
            rank: 8,
            alpha: 16.0,
            targets: vec!["q".into(), "v".into()],
            parameters: 1234,
        }),
        FromWorker::CheckpointImported(ImportedCheckpoint {
            file: "run.safetensors".into(),
            step: 12,
            settings: TrainPreset::Quick.settings(true, 2048),
        }),
    ];
    for reply in replies {
        assert!(reply.payloads().is_empty());
        assert_eq!(FromWorker::decode(&reply.encode()).unwrap(), reply);
    }
    // A merged model's bytes travel as a Blob beside the text; the page's link fills
    // in the URL it makes for it.
    let blob = FromWorker::ExportedBlob {
        format: ExportFormat::MergedF16,
        file_name: "merged.gguf".into(),
        size: 270 << 20,
        url: "blob:http://x/1".into(),
    };
    let text = blob.encode();
    assert!(!text.contains("blob:"), "the page's URL went into the JSON: {text}");
    let FromWorker::ExportedBlob { url, size, .. } = FromWorker::decode(&text).unwrap() else {
        panic!("not exported_blob")
    };
    assert_eq!((url.as_str(), size), ("", 270 << 20));
}

#[test]
fn an_older_model_report_has_no_cache_estimate() {
    let text = r#"{"type":"model_loaded","name":"m","architecture":"llama","parameters":1,"quantization":"F32","gpu_bytes":4,"vocab":2,"context":8,"load_seconds":0.5}"#;
    let FromWorker::ModelLoaded(report) = FromWorker::decode(text).unwrap() else { panic!("not model_loaded") };
    assert_eq!((report.kv_cache_bytes, report.kv_positions), (0, 0));
}
