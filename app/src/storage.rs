//! What the worker keeps on this device, and when: the file names it uses in the
//! origin private file system (OPFS), when a running training autosaves, and what a
//! full disk tells the teacher. Plain logic, tested natively; `worker::store` does the
//! OPFS calls.

/// Folder of the models loaded from the app's origin, kept so the next visit loads
/// them from the device (and offline).
pub const MODEL_CACHE: &str = "models";
/// Folder of the saved training run.
pub const RUN_DIR: &str = "run";
/// The saved run's description ([`crate::protocol::SavedRun`], JSON).
pub const RUN_FILE: &str = "run.json";
/// Folder (inside [`RUN_DIR`]) of the run's course files, named by their position.
pub const COURSE_DIR: &str = "course";
/// The two checkpoint files, written alternately: the new one is written in full
/// before `run.json` points to it, so a crash while writing leaves the previous one.
pub const CHECKPOINTS: [&str; 2] = ["checkpoint-a.safetensors", "checkpoint-b.safetensors"];
/// Milliseconds of training between two autosaves.
pub const AUTOSAVE_MS: f64 = 30_000.0;

/// The checkpoint file to write next, given the one `run.json` points to now.
pub fn next_checkpoint(current: &str) -> &'static str {
    if current == CHECKPOINTS[0] {
        CHECKPOINTS[1]
    } else {
        CHECKPOINTS[0]
    }
}

/// A running training saves after its first step (so even a short run has something
/// to resume), then every [`AUTOSAVE_MS`].
pub fn autosave_due(now_ms: f64, last_save_ms: Option<f64>) -> bool {
    last_save_ms.is_none_or(|last| now_ms - last >= AUTOSAVE_MS)
}

/// The OPFS file name of a model fetched from `path` on the origin (`/` is not allowed
/// in a name).
pub fn cached_model_name(path: &str) -> String {
    path.trim_start_matches("./")
        .replace('%', "%25")
        .replace('/', "%2F")
}

/// The name of course file `index` in [`COURSE_DIR`] (the teacher's names may hold
/// characters a file system refuses).
pub fn course_file_name(index: usize) -> String {
    format!("{index:03}")
}

/// What the browser says about this site's storage (`navigator.storage.estimate()`)
/// and what the app keeps in it, by name and size.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub usage: u64,
    pub quota: u64,
    pub kept: Vec<(String, u64)>,
}

/// The message for a write that hit the quota: how much it needed, how much is left,
/// and what can be deleted.
pub fn quota_advice(what: &str, needed: u64, usage: &Usage) -> String {
    let left = usage.quota.saturating_sub(usage.usage);
    let mut text = format!(
        "Not enough storage on this device to save {what}: it needs about {}, and this site may use only {} more \
         ({} of {} used).",
        size(needed),
        size(left),
        size(usage.usage),
        size(usage.quota)
    );
    if !usage.kept.is_empty() {
        let kept: Vec<String> = usage
            .kept
            .iter()
            .map(|(name, bytes)| format!("{name} ({})", size(*bytes)))
            .collect();
        text.push_str(&format!(" ClassTune keeps here: {}.", kept.join(", ")));
    }
    text.push_str(
        " To make room, discard the saved run, delete other sites' data in the browser's settings (Privacy → Site \
         data), or free disk space on this device.",
    );
    text
}

/// Bytes as kB, MB or GB (decimal, as disk sizes are shown).
pub fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", (b / 1e3).ceil())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_alternate() {
        assert_eq!(next_checkpoint(""), CHECKPOINTS[0]);
        assert_eq!(next_checkpoint(CHECKPOINTS[0]), CHECKPOINTS[1]);
        assert_eq!(next_checkpoint(CHECKPOINTS[1]), CHECKPOINTS[0]);
    }

    #[test]
    fn autosave_after_the_first_step_then_at_the_interval() {
        assert!(autosave_due(5.0, None));
        assert!(!autosave_due(1_000.0 + AUTOSAVE_MS - 1.0, Some(1_000.0)));
        assert!(autosave_due(1_000.0 + AUTOSAVE_MS, Some(1_000.0)));
    }

    #[test]
    fn model_names_have_no_slashes() {
        assert_eq!(
            cached_model_name("models/SmolLM2.gguf"),
            "models%2FSmolLM2.gguf"
        );
        assert_eq!(cached_model_name("./a%2Fb/c.gguf"), "a%252Fb%2Fc.gguf");
        assert_ne!(
            cached_model_name("a/b.gguf"),
            cached_model_name("a%2Fb.gguf")
        );
        assert_eq!(course_file_name(7), "007");
    }

    #[test]
    fn the_quota_message_says_what_is_needed_and_what_to_delete() {
        let usage = Usage {
            usage: 990_000_000,
            quota: 1_000_000_000,
            kept: vec![
                ("the model tiny.gguf".into(), 98_000_000),
                ("the saved run".into(), 2_500_000),
            ],
        };
        let text = quota_advice("the checkpoint", 12_000_000, &usage);
        assert!(text.contains("needs about 12.0 MB"), "{text}");
        assert!(
            text.contains("only 10.0 MB more (990.0 MB of 1.0 GB used)"),
            "{text}"
        );
        assert!(
            text.contains("the model tiny.gguf (98.0 MB), the saved run (2.5 MB)"),
            "{text}"
        );
        assert!(text.contains("discard the saved run"), "{text}");
        assert_eq!(size(1), "1 kB");
    }
}
