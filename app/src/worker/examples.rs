//! The prepared examples as the page sees them: each under the identity of the
//! example the course material makes (which the teacher's changes are kept by), a page
//! of them decoded exactly as the model reads them, and the changes in the engine's
//! terms for the pipeline.

use classtune::chat::Role as ChatRole;
use classtune::data::summary::marked_text;
use classtune::data::{Edit, Edits, Example, ExampleKey, ExampleKind};
use classtune::tokenizer::Tokenizer;

use crate::protocol::{
    ChatMessage, ExampleContent, ExampleEdit, ExampleId, ExamplePage, ExampleView, Speaker, EXAMPLES_PER_PAGE,
};

/// A prepared example as the page lists it.
pub struct Listed {
    pub id: ExampleId,
    /// On the validation side once the split is final.
    pub held_out: bool,
    pub example: Example,
}

impl Listed {
    /// An example as the pipeline made it, or changed by the teacher: then listed under
    /// the identity of the one the material made, which the change is kept by.
    pub fn new(example: Example) -> Listed {
        let key = example.edited.clone().unwrap_or_else(|| ExampleKey::of(&example));
        let id = ExampleId { source: key.source, location: key.location, window: key.window };
        Listed { id, held_out: false, example }
    }

    /// The example as the page shows it (`at` from 0 among all): its tokens decoded
    /// with the trained spans marked, and what the teacher can edit.
    pub fn view(&self, at: usize, tok: &Tokenizer) -> Result<ExampleView, String> {
        let ex = &self.example;
        let decode = |ids: &[u32]| tok.decode(ids).map_err(|e| e.to_string());
        let content = match ex.kind {
            ExampleKind::Chat => ExampleContent::Chat {
                messages: ex
                    .messages
                    .iter()
                    .map(|m| ChatMessage { role: speaker(m.role), content: m.content.clone() })
                    .collect(),
            },
            ExampleKind::Text => {
                let (context, body) = ex.input_ids.split_at(ex.context_len());
                ExampleContent::Text { context: decode(context)?, body: decode(body)? }
            }
        };
        Ok(ExampleView {
            id: self.id.clone(),
            number: at as u32 + 1,
            held_out: self.held_out,
            tokens: ex.input_ids.len() as u32,
            trained_tokens: ex.trained_tokens() as u32,
            truncated: ex.truncated,
            edited: ex.edited.is_some(),
            rendered: marked_text(tok, &ex.input_ids, &ex.loss_mask).map_err(|e| e.to_string())?,
            content,
        })
    }
}

fn speaker(role: ChatRole) -> Speaker {
    match role {
        ChatRole::System => Speaker::System,
        ChatRole::User => Speaker::User,
        ChatRole::Assistant => Speaker::Assistant,
    }
}

/// Page `page` (from 0) of `listed`, the last page if it is past it.
pub fn page_of(listed: &[Listed], page: u32, tok: &Tokenizer) -> Result<ExamplePage, String> {
    let per_page = EXAMPLES_PER_PAGE as usize;
    let pages = listed.len().div_ceil(per_page).max(1);
    let page = (page as usize).min(pages - 1);
    let examples = listed
        .iter()
        .enumerate()
        .skip(page * per_page)
        .take(per_page)
        .map(|(at, l)| l.view(at, tok))
        .collect::<Result<_, _>>()?;
    Ok(ExamplePage { page: page as u32, pages: pages as u32, total: listed.len() as u32, examples })
}

/// The changes as the engine's pipeline applies them.
pub fn engine_edits(edits: &[ExampleEdit]) -> Edits {
    edits
        .iter()
        .map(|e| {
            let key = ExampleKey { source: e.id.source.clone(), location: e.id.location.clone(), window: e.id.window.clone() };
            let messages = e.messages.iter().map(|(at, content)| (*at as usize, content.clone())).collect();
            (key, Edit { deleted: e.deleted, messages, body: e.body.clone() })
        })
        .collect()
}
