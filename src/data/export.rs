//! Output formats: the engine's JSONL (token ids + loss mask), and an export for larger
//! runs elsewhere — ChatML JSONL and plain-text JSONL with an Axolotl LoRA config that
//! uses the same base model, rank, targets and hyper-parameters. See docs/data.md.

use serde::{Deserialize, Serialize};

use super::examples::{Example, ExampleKind};
use super::error::DataError;

/// One line of train.jsonl / val.jsonl: the example with its ids and mask.
pub fn engine_line(ex: &Example) -> Result<String, DataError> {
    serde_json::to_string(ex).map_err(|e| DataError::Output(e.to_string()))
}

/// One line of the Axolotl export: `{"messages": [...]}` for chats, `{"text": "..."}` for
/// raw-text windows.
pub fn export_line(ex: &Example) -> Result<String, DataError> {
    #[derive(Serialize)]
    struct Chat<'a> {
        messages: &'a [crate::chat::Message],
    }
    #[derive(Serialize)]
    struct Text<'a> {
        text: &'a str,
    }
    let line = match ex.kind {
        ExampleKind::Chat => serde_json::to_string(&Chat { messages: &ex.messages }),
        ExampleKind::Text => serde_json::to_string(&Text { text: &ex.text }),
    };
    line.map_err(|e| DataError::Output(e.to_string()))
}

/// The export file an example goes to, relative to the export folder.
pub fn export_file(kind: ExampleKind, validation: bool) -> &'static str {
    match (kind, validation) {
        (ExampleKind::Chat, false) => "train_chat.jsonl",
        (ExampleKind::Text, false) => "train_text.jsonl",
        (ExampleKind::Chat, true) => "val_chat.jsonl",
        (ExampleKind::Text, true) => "val_text.jsonl",
    }
}

/// LoRA and training settings shared by ClassTune and the exported Axolotl config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Hugging Face name of the base model.
    pub base_model: String,
    pub lora_r: u32,
    pub lora_alpha: f32,
    pub lora_dropout: f32,
    /// HF module names (`q_proj`, …).
    pub target_modules: Vec<String>,
    pub learning_rate: f64,
    pub epochs: u32,
    pub micro_batch_size: u32,
    pub gradient_accumulation_steps: u32,
    pub warmup_steps: u32,
    pub weight_decay: f64,
    pub seq_len: usize,
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> TrainSettings {
        TrainSettings {
            base_model: "HuggingFaceTB/SmolLM2-135M-Instruct".to_string(),
            lora_r: 8,
            lora_alpha: 16.0,
            lora_dropout: 0.0,
            target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec(),
            learning_rate: 2e-4,
            epochs: 3,
            micro_batch_size: 4,
            gradient_accumulation_steps: 1,
            warmup_steps: 10,
            weight_decay: 0.0,
            seq_len: 512,
            seed: 0,
        }
    }
}

/// Which export files are non-empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportFiles {
    pub train_chat: bool,
    pub train_text: bool,
    pub val_chat: bool,
    pub val_text: bool,
}

/// An Axolotl config (YAML) for LoRA on the exported files. The chat files use the
/// model's own chat template (`tokenizer_default`, which inserts the same default system
/// turn ClassTune does) and train on assistant turns only, as ClassTune's mask does.
pub fn axolotl_yaml(s: &TrainSettings, files: ExportFiles) -> String {
    let q = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| format!("\"{v}\""));
    let chat = |path: &str| {
        format!(
            "  - path: {path}\n    ds_type: json\n    type: chat_template\n    split: train\n    field_messages: messages\n    \
             message_property_mappings:\n      role: role\n      content: content\n    roles_to_train: [\"assistant\"]\n    train_on_eos: turn\n"
        )
    };
    let text = |path: &str| format!("  - path: {path}\n    ds_type: json\n    type: completion\n    split: train\n    field: text\n");
    let mut y = String::new();
    y.push_str("# Axolotl LoRA config written by `classtune data`: same base model, rank, targets and\n");
    y.push_str("# hyper-parameters as ClassTune. Run from this folder: `axolotl train axolotl.yaml`.\n");
    y.push_str("# The adapter it writes (PEFT, adapter_model.safetensors) imports back into ClassTune.\n");
    y.push_str(&format!("base_model: {}\n", q(&s.base_model)));
    y.push_str("model_type: AutoModelForCausalLM\ntokenizer_type: AutoTokenizer\n");
    y.push_str("chat_template: tokenizer_default\n\n");
    y.push_str("datasets:\n");
    if files.train_chat {
        y.push_str(&chat("train_chat.jsonl"));
    }
    if files.train_text {
        y.push_str(&text("train_text.jsonl"));
    }
    if files.val_chat || files.val_text {
        y.push_str("test_datasets:\n");
        if files.val_chat {
            y.push_str(&chat("val_chat.jsonl"));
        }
        if files.val_text {
            y.push_str(&text("val_text.jsonl"));
        }
    } else {
        y.push_str("val_set_size: 0\n");
    }
    y.push_str("dataset_prepared_path: last_run_prepared\noutput_dir: ./outputs/classtune-lora\n\n");
    y.push_str("adapter: lora\n");
    y.push_str(&format!("lora_r: {}\nlora_alpha: {}\nlora_dropout: {}\n", s.lora_r, s.lora_alpha, s.lora_dropout));
    let targets: Vec<String> = s.target_modules.iter().map(|t| q(t)).collect();
    y.push_str(&format!("lora_target_modules: [{}]\n", targets.join(", ")));
    y.push_str("lora_fan_in_fan_out: false\n\n");
    y.push_str(&format!("sequence_len: {}\nsample_packing: false\npad_to_sequence_len: false\n\n", s.seq_len));
    y.push_str(&format!(
        "num_epochs: {}\nmicro_batch_size: {}\ngradient_accumulation_steps: {}\nlearning_rate: {}\n",
        s.epochs, s.micro_batch_size, s.gradient_accumulation_steps, s.learning_rate
    ));
    y.push_str(&format!(
        "optimizer: adamw_torch\nlr_scheduler: cosine\nwarmup_steps: {}\nweight_decay: {}\n",
        s.warmup_steps, s.weight_decay
    ));
    y.push_str(&format!("seed: {}\nbf16: auto\ntf32: false\ngradient_checkpointing: false\nlogging_steps: 1\n", s.seed));
    y
}
