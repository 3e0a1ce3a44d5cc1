//! Natively run round trips of every message, payloads included, and the presets.

use super::*;

#[test]
fn requests_round_trip() {
    let requests = [
        ToWorker::Probe,
        ToWorker::LoadModel { source: ModelSource::Url { path: "models/m.gguf".into() } },
        ToWorker::LoadModel { source: ModelSource::Opfs { name: "picked.gguf".into() } },
        ToWorker::Generate { id: 3, prompt: "Hi \"there\"\n".into(), settings: GenerateSettings::default() },
        ToWorker::Cancel { id: 3 },
        ToWorker::Logits { source: ModelSource::Url { path: "t/tiny.gguf".into() }, ids: vec![1, 2, 3] },
    ];
    for request in requests {
        assert_eq!(ToWorker::decode(&request.encode()).unwrap(), request);
    }
    assert_eq!(ToWorker::Probe.encode(), r#"{"type":"probe"}"#);
    // The shape the end-to-end tests post by hand.
    let logits = r#"{"type":"logits","source":{"kind":"url","path":"x.gguf"},"ids":[4,5]}"#;
    assert_eq!(
        ToWorker::decode(logits).unwrap(),
        ToWorker::Logits { source: ModelSource::Url { path: "x.gguf".into() }, ids: vec![4, 5] }
    );
}

#[test]
fn replies_round_trip() {
    let limits = GpuLimits {
        max_storage_buffer_binding_size: 128 << 20,
        max_buffer_size: 256 << 20,
        max_compute_workgroup_storage_size: 16384,
        max_compute_invocations_per_workgroup: 256,
        max_storage_buffers_per_shader_stage: 8,
    };
    let replies = [
        FromWorker::Ready,
        FromWorker::Gpu(GpuReport {
            description: " (BrowserWebGpu, Cpu)".into(),
            vendor: "google".into(),
            architecture: "swiftshader".into(),
            software: true,
            subgroups: false,
            limits,
            self_test: true,
        }),
        FromWorker::GpuUnavailable { message: "no adapter".into() },
        FromWorker::Token { id: 1, text: "é🙂".into() },
        FromWorker::ModelLoaded(ModelReport {
            name: "SmolLM2".into(),
            architecture: "llama".into(),
            parameters: 134_515_008,
            quantization: "Q4_1".into(),
            gpu_bytes: 90 << 20,
            kv_cache_bytes: 90 << 20,
            kv_positions: 2048,
            vocab: 49152,
            context: 8192,
            load_seconds: 1.5,
        }),
        FromWorker::Done {
            id: 1,
            tokens: 5,
            prompt_tokens: 30,
            tokens_per_second: 2.5,
            seconds: 3.0,
            stop: StopReason::MaxTokens,
        },
        FromWorker::Logits { vocab: 2, logits: vec![0.5, -1.25e-7, 3.0, f32::MAX] },
        FromWorker::Error { request: "generate".into(), message: "not yet".into() },
    ];
    for reply in replies {
        assert_eq!(FromWorker::decode(&reply.encode()).unwrap(), reply);
    }
}

#[test]
fn unknown_messages_are_errors() {
    assert!(ToWorker::decode(r#"{"type":"format_disk"}"#).is_err());
    assert!(FromWorker::decode("not json").is_err());
}

fn data() -> DataSettings {
    DataSettings { role: Role::SocraticTutor, redact: false, seq_len: 64, system_prompt: Some("Ask one question at a time.".into()) }
}

#[test]
fn training_requests_round_trip_with_payloads() {
    let train = TrainPreset::Quick.settings(true, 512);
    let requests = [
        ToWorker::RemoveCourseFile { name: "notes.md".into(), data: data() },
        ToWorker::PrepareCourse { data: data() },
        ToWorker::StartTraining { data: data(), train },
        ToWorker::PauseTraining,
        ToWorker::ResumeTraining,
        ToWorker::CancelTraining,
        ToWorker::Export { format: ExportFormat::GgufLora },
        ToWorker::Generate {
            id: 9,
            prompt: "Why does it rain?".into(),
            settings: GenerateSettings { adapter: true, system: Some("Be brief.".into()), ..Default::default() },
        },
    ];
    for request in requests {
        assert!(request.payloads().is_empty());
        assert_eq!(ToWorker::decode(&request.encode()).unwrap(), request);
    }
    // Course files: names in the JSON, bytes beside it.
    let files = ToWorker::AddCourseFiles {
        files: vec![
            CourseFile { name: "notes.md".into(), bytes: b"# Water".to_vec() },
            CourseFile { name: "sheet.pdf".into(), bytes: vec![0, 255, 7] },
        ],
        data: data(),
    };
    let text = files.encode();
    assert!(!text.contains("Water"), "bytes leaked into the JSON: {text}");
    let payloads: Vec<Vec<u8>> = files.payloads().into_iter().map(<[u8]>::to_vec).collect();
    let mut back = ToWorker::decode(&text).unwrap();
    assert!(back.attach(vec![vec![1]]).is_err());
    back.attach(payloads).unwrap();
    assert_eq!(back, files);
    assert!(ToWorker::Probe.clone().attach(vec![vec![1]]).is_err());
}

#[test]
fn an_old_generate_request_means_the_base_model() {
    let text = r#"{"type":"generate","id":1,"prompt":"x","settings":{"chat":true,"max_tokens":4,"temperature":0.0,"top_k":0,"top_p":1.0,"seed":0}}"#;
    let ToWorker::Generate { settings, .. } = ToWorker::decode(text).unwrap() else { panic!("not generate") };
    assert!(!settings.adapter);
    assert_eq!(settings.system, None);
}

#[test]
fn training_replies_round_trip_with_payloads() {
    let course = CourseReport {
        files: vec![FileReport {
            name: "qa.csv".into(),
            format: "csv".into(),
            bytes: 4086,
            examples: 20,
            tokens: 3000,
            personal_data: 1,
            warnings: vec!["line 4: skipped".into()],
            error: None,
        }],
        train_examples: 18,
        validation_examples: 2,
        tokens: 3000,
        trained_tokens: 1200,
        truncated_examples: 0,
        duplicates_removed: 1,
        seq_len: 256,
        role: Role::TeachingAssistant,
        system_prompt: "You are…".into(),
        personal_data: 1,
        redacted: false,
        unredacted_personal_data: true,
        page: ExamplePage::default(),
        edited: 0,
        deleted: Vec::new(),
        unused_edits: 0,
    };
    let replies = [
        FromWorker::Course(course),
        FromWorker::Training(TrainingPlan {
            phase: TrainPhase::Paused,
            step: 7,
            total_steps: 30,
            train_examples: 60,
            validation_examples: 6,
            lora_parameters: 12_345,
            base_val_loss: Some(5.5),
            best_val_loss: None,
            has_adapter: true,
            unredacted_personal_data: 2,
            message: None,
        }),
        FromWorker::Progress(StepProgress {
            step: 7,
            total_steps: 30,
            epoch: 0.25,
            loss: 3.25,
            val_loss: Some(3.5),
            lr: 5e-4,
            tokens_per_second: 120.5,
            eta_seconds: 31.0,
            gpu_bytes: 3 << 20,
            gpu_peak_bytes: 4 << 20,
        }),
    ];
    for reply in replies {
        assert!(reply.payloads().is_empty());
        assert_eq!(FromWorker::decode(&reply.encode()).unwrap(), reply);
    }
    let exported = FromWorker::Exported {
        format: ExportFormat::Peft,
        file_name: "adapter.zip".into(),
        mime: "application/zip".into(),
        bytes: b"PK\x03\x04".to_vec(),
    };
    let text = exported.encode();
    assert!(!text.contains("PK"), "bytes leaked into the JSON: {text}");
    let mut back = FromWorker::decode(&text).unwrap();
    assert!(back.clone().attach(Vec::new()).is_err());
    back.attach(exported.payloads().into_iter().map(<[u8]>::to_vec).collect()).unwrap();
    assert_eq!(back, exported);
}

#[test]
fn presets_grow_from_quick_to_thorough_and_fit_the_device() {
    for software in [false, true] {
        let [quick, balanced, thorough] = TrainPreset::ALL.map(|p| p.settings(software, 8192));
        assert!(quick.rank < balanced.rank && balanced.rank < thorough.rank);
        assert!(quick.seq_len < balanced.seq_len && balanced.seq_len < thorough.seq_len);
        let steps = |s: &TrainSettings| if s.max_steps == 0 { u32::MAX } else { s.max_steps };
        assert!(steps(&quick) < steps(&balanced) && steps(&balanced) <= steps(&thorough));
        for s in [&quick, &balanced, &thorough] {
            s.check(8192).unwrap();
            assert_eq!(s.alpha, 2.0 * s.rank as f32);
            assert_eq!(s.targets.len(), TARGETS.len());
        }
    }
    // A CPU adapter gets a lighter run than a GPU for the same preset.
    for preset in TrainPreset::ALL {
        let (gpu, cpu) = (preset.settings(false, 8192), preset.settings(true, 8192));
        assert!(cpu.rank <= gpu.rank && cpu.seq_len <= gpu.seq_len && cpu.batch <= gpu.batch);
        assert_eq!(TrainPreset::from_name(preset.name()), Some(preset));
    }
    // Never longer than the model's context.
    let short = TrainPreset::Thorough.settings(false, 128);
    assert_eq!(short.seq_len, 128);
    short.check(128).unwrap();
}

#[test]
fn bad_settings_are_refused_with_a_reason() {
    let good = TrainPreset::Quick.settings(false, 2048);
    let cases: [(TrainSettings, &str); 7] = [
        (TrainSettings { rank: 0, ..good.clone() }, "rank"),
        (TrainSettings { rank: 65, ..good.clone() }, "rank"),
        (TrainSettings { lr: f32::NAN, ..good.clone() }, "learning rate"),
        (TrainSettings { seq_len: 16, ..good.clone() }, "sequence length"),
        (TrainSettings { seq_len: 4096, ..good.clone() }, "sequence length"),
        (TrainSettings { targets: vec![], ..good.clone() }, "projection"),
        (TrainSettings { targets: vec!["qkv".into()], ..good.clone() }, "unknown projection"),
    ];
    for (settings, expected) in cases {
        let message = settings.check(2048).unwrap_err();
        assert!(message.contains(expected), "{message:?} should mention {expected:?}");
    }
    for role in Role::ALL {
        assert_eq!(Role::from_name(role.name()), Some(role));
    }
}
