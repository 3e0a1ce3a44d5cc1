//! Q&A sheets as CSV or TSV. A header row is recognised by its names (`question`,
//! `answer`, `prompt`, `response`, `q`, `a`, …; case and punctuation ignored); an
//! optional `hint` column holds a guiding question for the Socratic preset. Without a
//! header, a sheet of exactly two columns is read as question, answer (with a warning).
//! Rows with an empty question or answer are skipped with a warning.

use std::io::Read;

use super::{Conversation, Issues};
use crate::chat::Message;
use crate::data::error::DataError;
use crate::data::normalize::clean_text;

const QUESTION: &[&str] = &["question", "questions", "q", "prompt", "instruction", "query", "frage", "pregunta", "input"];
const ANSWER: &[&str] = &["answer", "answers", "a", "response", "output", "completion", "reply", "solution", "antwort", "respuesta"];
const HINT: &[&str] = &["hint", "guidingquestion", "socratic", "socratichint"];

/// Column positions of a sheet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns {
    question: usize,
    answer: usize,
    hint: Option<usize>,
}

/// Reads a CSV (`delimiter` b',') or TSV (b'\t') Q&A sheet and hands each pair to `emit`.
/// Returns the number of pairs.
pub fn read_table<R: Read>(
    file: &str,
    input: R,
    delimiter: u8,
    issues: &mut Issues,
    emit: &mut dyn FnMut(Conversation) -> Result<(), DataError>,
) -> Result<usize, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .quoting(delimiter != b'\t')
        .from_reader(input);
    let mut record = csv::ByteRecord::new();
    let mut columns: Option<Columns> = None;
    let mut count = 0;
    let mut bad_utf8 = 0usize;
    let mut skipped = Vec::new();
    loop {
        let more = reader.read_byte_record(&mut record).map_err(|e| csv_error(file, &e))?;
        if !more {
            break;
        }
        let line = record.position().map_or(0, |p| p.line());
        let cells: Vec<String> = record
            .iter()
            .map(|c| match std::str::from_utf8(c) {
                Ok(s) => s.to_string(),
                Err(_) => {
                    bad_utf8 += 1;
                    String::from_utf8_lossy(c).into_owned()
                }
            })
            .collect();
        if cells.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let cols = match columns {
            Some(c) => c,
            None => {
                let first: Vec<String> = cells.iter().map(|c| c.trim_start_matches('\u{FEFF}').to_string()).collect();
                if let Some(c) = header_columns(&first) {
                    columns = Some(c);
                    continue;
                }
                let filled = first.iter().filter(|c| !c.trim().is_empty()).count();
                if first.len() == 2 && filled == 2 {
                    issues.warn(file, "line 1", "no header row; reading column 1 as questions and column 2 as answers");
                    let c = Columns { question: 0, answer: 1, hint: None };
                    columns = Some(c);
                    c
                } else {
                    return Err(DataError::NoQaColumns {
                        file: file.to_string(),
                        first_row: first.into_iter().take(8).collect(),
                    });
                }
            }
        };
        let get = |i: usize| cells.get(i).map(|c| clean_text(c)).unwrap_or_default();
        let (question, answer) = (get(cols.question), get(cols.answer));
        if question.is_empty() || answer.is_empty() {
            skipped.push(line);
            continue;
        }
        let hint = cols.hint.map(get).filter(|h| !h.is_empty());
        emit(Conversation {
            messages: vec![Message::user(question), Message::assistant(answer)],
            location: format!("line {line}"),
            qa: true,
            hint,
        })?;
        count += 1;
    }
    if columns.is_none() {
        return Err(DataError::Empty { file: file.to_string() });
    }
    if !skipped.is_empty() {
        let list: Vec<String> = skipped.iter().take(10).map(|l| l.to_string()).collect();
        issues.warn(
            file,
            format!("line {}", skipped[0]),
            format!("{} row(s) with an empty question or answer were skipped (lines {})", skipped.len(), list.join(", ")),
        );
    }
    if bad_utf8 > 0 {
        issues.warn(file, "", format!("{bad_utf8} cell(s) are not valid UTF-8; bad bytes were replaced with U+FFFD"));
    }
    if count == 0 {
        return Err(DataError::NoContent {
            file: file.to_string(),
            what: "the sheet has a header but no rows with both a question and an answer".to_string(),
        });
    }
    Ok(count)
}

fn csv_error(file: &str, e: &csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line());
    DataError::BadCsv {
        file: file.to_string(),
        line,
        what: e.to_string(),
    }
}

/// The question/answer (and hint) columns named in a header row, if it is one.
fn header_columns(row: &[String]) -> Option<Columns> {
    let keys: Vec<String> = row
        .iter()
        .map(|c| c.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase())
        .collect();
    let find = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| keys.iter().position(|k| k == n))
    };
    let question = find(QUESTION)?;
    let answer = find(ANSWER)?;
    if question == answer {
        return None;
    }
    Some(Columns {
        question,
        answer,
        hint: find(HINT),
    })
}
