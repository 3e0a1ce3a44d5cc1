//! The README.md model card that goes with an exported adapter: what it was trained
//! on and how, described by file names, counts and a content hash — never by the
//! course text itself.

use std::fmt::Write;

use crate::data::Summary;

use super::Adapter;

/// How the adapter was trained, for the card.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingFacts {
    pub steps: usize,
    pub epochs: usize,
    pub learning_rate: f32,
    pub seq_len: usize,
    pub batch: usize,
    pub grad_accum: usize,
    pub base_val_loss: Option<f64>,
    pub val_loss: Option<f64>,
}

/// The card's Markdown.
pub fn model_card(adapter: &Adapter, facts: &TrainingFacts, data: &Summary) -> String {
    let c = &adapter.config;
    let targets: Vec<&str> = c.targets.iter().map(|t| t.hf_module()).collect();
    let loss = |v: Option<f64>| v.map_or("not measured".to_string(), |v| format!("{v:.4}"));
    let mut s = String::new();
    let _ = writeln!(s, "---\nbase_model: {}\nlibrary_name: peft\ntags: [lora, classtune]\n---\n", adapter.base_name);
    let _ = writeln!(s, "# LoRA adapter for {}\n", adapter.base_name);
    let _ = writeln!(s, "Fine-tuned with ClassTune on the teacher's own device; the course material never left it.\n");
    let _ = writeln!(s, "## Training\n");
    let _ = writeln!(s, "| setting | value |\n|---|---|");
    let _ = writeln!(s, "| rank / alpha | {} / {}{} |", c.rank, c.alpha, if c.rslora { " (rsLoRA)" } else { "" });
    let _ = writeln!(s, "| dropout | {} |", c.dropout);
    let _ = writeln!(s, "| target modules | {} |", targets.join(", "));
    let _ = writeln!(s, "| steps / epochs | {} / {} |", facts.steps, facts.epochs);
    let _ = writeln!(s, "| learning rate | {} |", facts.learning_rate);
    let _ = writeln!(s, "| sequence length | {} |", facts.seq_len);
    let _ = writeln!(s, "| batch × accumulation | {} × {} |", facts.batch, facts.grad_accum);
    let _ = writeln!(s, "| validation loss, base → adapter | {} → {} |\n", loss(facts.base_val_loss), loss(facts.val_loss));
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(
        s,
        "{} examples ({} train, {} validation), {} tokens; content hash `{}`; preset: {}.\n",
        data.examples,
        data.train_examples,
        data.validation_examples,
        data.tokens,
        data.content_hash,
        data.preset.as_deref().unwrap_or("none")
    );
    let _ = writeln!(s, "| file | format | examples | tokens |\n|---|---|---|---|");
    for f in &data.files {
        let _ = writeln!(s, "| {} | {} | {} | {} |", file_name(&f.file), f.format, f.examples, f.tokens);
    }
    let pii = data.personal_data.total();
    let _ = writeln!(
        s,
        "\nPersonal data found in the material: {pii} item(s), {}.",
        match (pii, data.redacted) {
            (0, _) => "none to handle",
            (_, true) => "replaced by placeholders before training",
            (_, false) => "NOT redacted: the adapter may have memorized it; do not share it",
        }
    );
    let _ = writeln!(s, "\nUse with PEFT: `PeftModel.from_pretrained(base, this_folder)`.");
    s
}

/// The last path component: folder names can say more than the teacher meant to share.
fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::LoraConfig;

    #[test]
    fn card_names_files_and_counts_but_no_text() {
        let adapter = Adapter { config: LoraConfig::default(), base_name: "SmolLM2".into(), pairs: vec![] };
        let data = Summary {
            examples: 3,
            content_hash: "abc123".into(),
            files: vec![crate::data::FileSummary { file: "/home/t/private/notes.md".into(), examples: 3, ..Default::default() }],
            ..Summary::default()
        };
        let facts = TrainingFacts {
            steps: 10,
            epochs: 2,
            learning_rate: 2e-4,
            seq_len: 256,
            batch: 4,
            grad_accum: 1,
            base_val_loss: Some(2.5),
            val_loss: Some(2.1),
        };
        let card = model_card(&adapter, &facts, &data);
        assert!(card.contains("| notes.md |") && !card.contains("private"));
        assert!(card.contains("abc123") && card.contains("2.5000 → 2.1000"));
        assert!(card.contains("base_model: SmolLM2"));
    }
}
