//! Issue 6, "a 200 MB file (streamed, bounded memory)": a ~200 MB Markdown course file
//! made on disk here is streamed through `Pipeline::add_file` into a sink that keeps
//! nothing. It must finish with plausible counts and no errors, and the process's peak
//! resident memory (VmHWM) must grow by far less than the file's size.
//!
//! Size and the memory bound can be changed for profiling with `CLASSTUNE_LARGE_MB` and
//! `CLASSTUNE_LARGE_MAX_GROWTH_MB`.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use classtune::chat::ChatTemplate;
use classtune::data::{DataError, DataOptions, Example, ExampleSink, Pipeline, Split};
use classtune::gguf::Gguf;
use classtune::tokenizer::Tokenizer;

const MODEL: &[u8] = include_bytes!("../fixtures/tiny/tiny-llama.gguf");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Removes the temporary directory however the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("classtune-data-large-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Peak resident set size of this process, in bytes.
fn vm_hwm() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM line");
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM value");
    kb * 1024
}

/// A small deterministic generator (xorshift64*), so the file is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const SUBJECTS: [&str; 16] = [
    "Evaporation", "Condensation", "Precipitation", "The river basin", "Groundwater", "Transpiration",
    "Cloud formation", "The water table", "Erosion", "Photosynthesis", "The carbon cycle", "Soil layers",
    "Weather fronts", "Ocean currents", "Glaciers", "Wetlands",
];
const NOUNS: [&str; 24] = [
    "water", "the sun", "a droplet", "the ocean", "vapour", "the air", "a cloud", "rain", "the soil", "a plant",
    "the leaf", "energy", "heat", "the river", "ice", "the atmosphere", "a lake", "the mountain", "the valley",
    "the student", "the experiment", "a thermometer", "the beaker", "the catchment",
];
const VERBS: [&str; 20] = [
    "moves through", "warms", "cools", "absorbs", "releases", "carries", "changes", "feeds", "drains into",
    "rises above", "falls onto", "shapes", "measures", "collects in", "returns to", "evaporates from",
    "condenses on", "flows past", "freezes over", "melts into",
];
const TAILS: [&str; 14] = [
    "during the day", "at night", "in winter", "over many years", "in the tropics", "near the coast",
    "after heavy rain", "in the laboratory", "on a hot afternoon", "when the pressure drops", "in our model",
    "as the diagram shows", "in the field trip notes", "according to the data",
];

/// One paragraph of 3–9 sentences; `serial` makes every paragraph unique.
fn paragraph(rng: &mut Rng, serial: u64, out: &mut String) {
    let sentences = 3 + rng.below(7);
    for s in 0..sentences {
        let noun = rng.pick(&NOUNS);
        let mut first = noun.chars();
        if let Some(c) = first.next() {
            out.extend(c.to_uppercase());
            out.push_str(first.as_str());
        }
        out.push(' ');
        out.push_str(rng.pick(&VERBS));
        out.push(' ');
        out.push_str(rng.pick(&NOUNS));
        out.push(' ');
        out.push_str(rng.pick(&TAILS));
        if s == 0 {
            // Numbers a course has (not ID-like: short), and the serial for variety.
            out.push_str(&format!(", about {}.{} degrees in trial {serial}", rng.below(40), rng.below(10)));
        }
        out.push_str(if rng.below(6) == 0 { "?" } else { "." });
        // Wrapped lines, as notes typed in an editor are.
        out.push(if rng.below(3) == 0 { '\n' } else { ' ' });
    }
    if rng.below(5) == 0 {
        for i in 1..=3 {
            out.push_str(&format!("\n- point {i}: {} {} {}", rng.pick(&NOUNS), rng.pick(&VERBS), rng.pick(&NOUNS)));
        }
    }
    while out.ends_with(' ') || out.ends_with('\n') {
        out.pop();
    }
    out.push_str("\n\n");
}

/// Writes about `target` bytes of Markdown course notes to `path`, one paragraph at a time.
fn write_course(path: &PathBuf, target: u64) -> u64 {
    let file = File::create(path).expect("create course file");
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut written = 0u64;
    let mut buf = String::with_capacity(8 << 10);
    let mut serial = 0u64;
    let mut unit = 0u64;
    while written < target {
        unit += 1;
        buf.clear();
        buf.push_str(&format!("# Unit {unit}: {}\n\n", rng.pick(&SUBJECTS)));
        for lesson in 1..=(2 + rng.below(4)) {
            buf.push_str(&format!("## Lesson {unit}.{lesson} — {}\n\n", rng.pick(&SUBJECTS).to_lowercase()));
            for _ in 0..(3 + rng.below(6)) {
                serial += 1;
                paragraph(&mut rng, serial, &mut buf);
            }
        }
        w.write_all(buf.as_bytes()).expect("write course file");
        written += buf.len() as u64;
    }
    w.flush().expect("flush course file");
    written
}

/// Counts what it is given and keeps nothing.
#[derive(Default)]
struct CountingSink {
    examples: usize,
    validation: usize,
    tokens: usize,
    max_len: usize,
    bad: usize,
}

impl ExampleSink for CountingSink {
    fn accept(&mut self, split: Split, example: &Example) -> Result<(), DataError> {
        self.examples += 1;
        self.validation += usize::from(split == Split::Validation);
        self.tokens += example.input_ids.len();
        self.max_len = self.max_len.max(example.input_ids.len());
        if example.input_ids.len() != example.loss_mask.len() || example.text.is_empty() {
            self.bad += 1;
        }
        Ok(())
    }
}

#[test]
fn two_hundred_megabyte_file_streams_in_bounded_memory() {
    let megabytes = env_usize("CLASSTUNE_LARGE_MB", 200) as u64;
    let max_growth = env_usize("CLASSTUNE_LARGE_MAX_GROWTH_MB", 64) as u64 * 1_000_000;

    let gguf = Gguf::parse(MODEL, MODEL.len() as u64).expect("tiny model header");
    let tokenizer = Tokenizer::from_gguf(&gguf).expect("tokenizer");
    let template = ChatTemplate::from_gguf(&gguf).expect("template");
    let options = DataOptions::default();
    let seq_len = options.seq_len;

    let dir = TempDir::new();
    let path = dir.0.join("course-notes.md");
    let started = Instant::now();
    let bytes = write_course(&path, megabytes * 1_000_000);
    let written_s = started.elapsed().as_secs_f64();
    assert_eq!(std::fs::metadata(&path).expect("course file").len(), bytes);

    let mut pipeline = Pipeline::new(&tokenizer, &template, options).expect("pipeline");
    let mut sink = CountingSink::default();
    let hwm_before = vm_hwm();
    let started = Instant::now();
    let file = File::open(&path).expect("open course file");
    pipeline
        .add_file("course-notes.md", BufReader::with_capacity(256 << 10, file), &mut sink)
        .expect("sink never fails");
    let (summary, preview) = pipeline.finish().expect("finish");
    let seconds = started.elapsed().as_secs_f64();
    let hwm_after = vm_hwm();
    let growth = hwm_after.saturating_sub(hwm_before);

    println!(
        "data_large: {bytes} bytes (written in {written_s:.1} s), {} examples ({} validation), {} tokens ({} trained), \
         {seconds:.1} s ({:.1} MB/s), VmHWM {:.1} MiB -> {:.1} MiB (growth {:.1} MiB), {} duplicates removed, {} hard cuts",
        sink.examples,
        sink.validation,
        sink.tokens,
        summary.trained_tokens,
        bytes as f64 / 1e6 / seconds,
        hwm_before as f64 / 1048576.0,
        hwm_after as f64 / 1048576.0,
        growth as f64 / 1048576.0,
        summary.duplicates_removed,
        summary.hard_cuts,
    );

    // (a) It completed, with no errors, and the counts are plausible.
    assert!(summary.errors.is_empty(), "errors: {:?}", summary.errors);
    assert!(summary.warnings.is_empty(), "warnings: {:?}", summary.warnings);
    assert_eq!(summary.files_failed, 0);
    assert_eq!(summary.documents, 1);
    assert_eq!(summary.files.len(), 1);
    assert_eq!(summary.files[0].bytes, bytes, "every byte read");
    assert_eq!(summary.files[0].format, "markdown");
    assert_eq!(summary.examples, sink.examples);
    assert_eq!(summary.tokens, sink.tokens);
    assert_eq!(summary.text_examples, sink.examples);
    assert_eq!(sink.bad, 0, "examples with mismatched mask or no text");
    assert!(sink.max_len <= seq_len, "a window of {} tokens > {seq_len}", sink.max_len);
    assert!(sink.tokens as u64 >= bytes / 8, "{} tokens for {bytes} bytes", sink.tokens);
    assert!(summary.trained_tokens as u64 >= bytes / 8, "{} trained tokens for {bytes} bytes", summary.trained_tokens);
    assert!(summary.trained_tokens <= sink.tokens);
    // Windows are at most seq_len tokens, so there are at least tokens / seq_len of them.
    assert!(sink.examples >= sink.tokens / seq_len, "{} windows for {} tokens", sink.examples, sink.tokens);
    assert!(sink.examples as u64 >= bytes / (seq_len as u64 * 8), "{} windows for {bytes} bytes", sink.examples);
    // Every paragraph is unique, so nothing should collapse as a duplicate.
    assert!(summary.duplicates_removed <= sink.examples / 1000, "{} duplicates", summary.duplicates_removed);
    // A whole-file split unit: every window is on the same side.
    assert!(sink.validation == 0 || sink.validation == sink.examples);
    assert!(preview.contains("course-notes.md"), "preview names the file");

    // (b) Peak memory grew by far less than the file.
    assert!(
        growth < max_growth,
        "peak RSS grew by {:.1} MiB while streaming a {:.0} MB file (limit {:.0} MB)",
        growth as f64 / 1048576.0,
        bytes as f64 / 1e6,
        max_growth as f64 / 1e6,
    );
}
