//! Student privacy: an on-device scan for personal data — e-mail addresses, phone
//! numbers, ID-like numbers and names from the teacher's class roster — replaced by
//! placeholders (`[EMAIL]`, `[PHONE]`, `[ID]`, `[NAME]`) before anything is tokenized.
//!
//! The patterns favour catching too much over too little, but avoid the numbers course
//! material is full of: years, dates (`2024-05-01`), quantities with thousands
//! separators, short numbers. Phone numbers need a `+`, parentheses, `-`/`.`
//! separators or a leading 0, and 7–15 digits; ID-like numbers are 7+ digits, or 1–3
//! capital letters followed by 5+ digits (`S1234567`). Roster names match in full
//! (`Ada Lovelace`, `Lovelace, Ada`, any case) and by each part of 3+ letters as a
//! capitalised word (`Ada`, `Lovelace`).

use std::borrow::Cow;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::error::DataError;

/// How many of each kind were found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiiCounts {
    pub emails: usize,
    pub phones: usize,
    pub ids: usize,
    pub names: usize,
}

impl PiiCounts {
    pub fn total(&self) -> usize {
        self.emails + self.phones + self.ids + self.names
    }
    pub fn add(&mut self, other: &PiiCounts) {
        self.emails += other.emails;
        self.phones += other.phones;
        self.ids += other.ids;
        self.names += other.names;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Email,
    Name,
    Phone,
    Id,
}

impl Kind {
    fn placeholder(self) -> &'static str {
        match self {
            Kind::Email => "[EMAIL]",
            Kind::Name => "[NAME]",
            Kind::Phone => "[PHONE]",
            Kind::Id => "[ID]",
        }
    }
}

/// The scanner, built once per run.
#[derive(Debug, Clone)]
pub struct PiiScanner {
    email: Regex,
    phone: Regex,
    id: Regex,
    date: Regex,
    names_full: Option<Regex>,
    names_part: Option<Regex>,
}

impl PiiScanner {
    /// A scanner for the names in `roster` (one student per entry).
    pub fn new(roster: &[String]) -> Result<PiiScanner, DataError> {
        let build = |p: &str| Regex::new(p).map_err(|e| DataError::Config(format!("personal-data pattern: {e}")));
        let mut full = Vec::new();
        let mut parts = Vec::new();
        for name in roster {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            let (first, last) = match name.split_once(',') {
                Some((last, first)) => (first.trim().to_string(), last.trim().to_string()),
                None => match name.rsplit_once(' ') {
                    Some((first, last)) => (first.trim().to_string(), last.trim().to_string()),
                    None => (name.to_string(), String::new()),
                },
            };
            for form in [format!("{first} {last}"), format!("{last}, {first}"), format!("{last} {first}")] {
                let form = form.trim().trim_matches(',').trim().to_string();
                if form.contains(' ') {
                    let words: Vec<String> = form.split_whitespace().map(regex::escape).collect();
                    full.push(words.join(r"\s+"));
                }
            }
            for part in first.split_whitespace().chain(last.split_whitespace()) {
                let part = part.trim_matches(|c: char| !c.is_alphanumeric());
                if part.chars().count() >= 3 && part.chars().next().is_some_and(char::is_uppercase) {
                    parts.push(regex::escape(part));
                }
            }
        }
        full.sort_by_key(|f| std::cmp::Reverse(f.len()));
        full.dedup();
        parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
        parts.dedup();
        let names_full = if full.is_empty() {
            None
        } else {
            Some(build(&format!(r"(?i)\b(?:{})\b", full.join("|")))?)
        };
        let names_part = if parts.is_empty() {
            None
        } else {
            Some(build(&format!(r"\b(?:{})\b", parts.join("|")))?)
        };
        Ok(PiiScanner {
            email: build(r"(?i)\b[a-z0-9][a-z0-9._%+-]*@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}\b")?,
            phone: build(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,5}){1,5}|\+\d{7,15}")?,
            id: build(r"\b(?:[A-Z]{1,3}[- ]?\d{5,}|\d{7,})\b")?,
            date: build(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")?,
            names_full,
            names_part,
        })
    }

    /// Finds personal data in `text`. With `redact`, returns the text with each finding
    /// replaced by its placeholder; otherwise the text unchanged.
    pub fn scan<'a>(&self, text: &'a str, redact: bool) -> (Cow<'a, str>, PiiCounts) {
        let mut spans: Vec<(usize, usize, Kind)> = Vec::new();
        let add = |s: usize, e: usize, k: Kind, spans: &mut Vec<(usize, usize, Kind)>| {
            if !spans.iter().any(|&(a, b, _)| s < b && a < e) {
                spans.push((s, e, k));
            }
        };
        for m in self.email.find_iter(text) {
            add(m.start(), m.end(), Kind::Email, &mut spans);
        }
        for re in [&self.names_full, &self.names_part].into_iter().flatten() {
            for m in re.find_iter(text) {
                add(m.start(), m.end(), Kind::Name, &mut spans);
            }
        }
        for m in self.phone.find_iter(text) {
            if self.is_phone(text, m.start(), m.end()) {
                add(m.start(), m.end(), Kind::Phone, &mut spans);
            }
        }
        for m in self.id.find_iter(text) {
            add(m.start(), m.end(), Kind::Id, &mut spans);
        }
        let mut counts = PiiCounts::default();
        for &(_, _, k) in &spans {
            match k {
                Kind::Email => counts.emails += 1,
                Kind::Name => counts.names += 1,
                Kind::Phone => counts.phones += 1,
                Kind::Id => counts.ids += 1,
            }
        }
        if !redact || spans.is_empty() {
            return (Cow::Borrowed(text), counts);
        }
        spans.sort_by_key(|s| s.0);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (s, e, k) in spans {
            out.push_str(&text[at..s]);
            out.push_str(k.placeholder());
            at = e;
        }
        out.push_str(&text[at..]);
        (Cow::Owned(out), counts)
    }

    fn is_phone(&self, text: &str, start: usize, end: usize) -> bool {
        let s = &text[start..end];
        // Not glued to letters, digits or decimal points around it.
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '.' || c == ',')
            || after.is_some_and(|c| c.is_alphanumeric() || (c == ',' || c == '.') && text[end..].chars().nth(1).is_some_and(|d| d.is_ascii_digit()))
        {
            return false;
        }
        let digits = s.chars().filter(char::is_ascii_digit).count();
        if !(7..=15).contains(&digits) || self.date.is_match(s) {
            return false;
        }
        let marked = s.starts_with('+') || s.contains('(');
        let dashed = s.contains('-') || s.contains('.');
        let national = s.starts_with('0') && digits >= 9;
        marked || dashed || national
    }
}
