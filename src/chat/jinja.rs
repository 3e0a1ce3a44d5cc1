//! A small interpreter for the subset of Jinja that chat templates use, with Hugging
//! Face's settings (`trim_blocks`, `lstrip_blocks`, no trailing newline). It only has to
//! render a few probe conversations when a template is loaded (see `super::ChatTemplate`):
//! anything it does not know is an error, which makes the template "unsupported".
//!
//! Supported: text, `{{ expr }}`, `{% if/elif/else/endif %}`, `{% for x in expr %}`
//! with `loop.*`, `{% set x = expr %}`, `{% generation %}`, comments, `-`/`+` whitespace
//! control; expressions with string/int/bool/none literals, names, `.attr`, `[index]`,
//! `+ - ~`, comparisons, `in`, `not/and/or`, `is [not] defined/none/string`, filters
//! `length` and `trim`. Unsupported constructs only fail when evaluated, so a branch
//! that never runs for plain role/content messages (Qwen's tool calls) is harmless.

mod expr;

use std::collections::HashMap;

use expr::{parse_expr, Expr};

/// A template value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Undefined,
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Undefined | Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }
    fn render(&self) -> Result<String, String> {
        Ok(match self {
            Value::Undefined => String::new(),
            Value::None => "None".into(),
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Int(i) => i.to_string(),
            Value::Str(s) => s.clone(),
            Value::List(_) | Value::Map(_) => return Err("printing a list or mapping".into()),
        })
    }
    fn get(&self, key: &Value) -> Result<Value, String> {
        match (self, key) {
            (Value::Undefined, _) => Err("an attribute or item of an undefined value".into()),
            (Value::Map(m), Value::Str(k)) => Ok(m
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Undefined)),
            (Value::List(l), Value::Int(i)) => {
                let idx = if *i < 0 { l.len() as i64 + i } else { *i };
                Ok(usize::try_from(idx)
                    .ok()
                    .and_then(|i| l.get(i))
                    .cloned()
                    .unwrap_or(Value::Undefined))
            }
            _ => Ok(Value::Undefined),
        }
    }
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Out(Expr),
    If(Vec<(Expr, Vec<Node>)>, Vec<Node>),
    For(String, Expr, Vec<Node>),
    Set(String, Expr),
    Unsupported(String),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

// ---------------------------------------------------------------- lexing

#[derive(Debug)]
enum Tag {
    Text(String),
    Out { src: String },
    Stmt { src: String },
    Comment,
}

struct RawTag {
    kind: u8, // b'{', b'%', b'#'
    src: String,
    ltrim: bool,
    keep_lstrip: bool, // `{%+`
    rtrim: bool,
    keep_newline: bool, // `+%}`
}

fn lex(source: &str) -> Result<Vec<Tag>, String> {
    // First split into raw text / raw tags, then apply whitespace control.
    let mut texts: Vec<String> = Vec::new();
    let mut tags: Vec<RawTag> = Vec::new();
    let bytes = source.as_bytes();
    let (mut pos, mut text_start) = (0, 0);
    while pos + 1 < bytes.len() {
        let kind = bytes[pos + 1];
        if bytes[pos] != b'{' || !matches!(kind, b'{' | b'%' | b'#') {
            pos += 1;
            continue;
        }
        texts.push(source[text_start..pos].to_string());
        let body_start = pos + 2;
        let close: &[u8] = match kind {
            b'{' => b"}}",
            b'%' => b"%}",
            _ => b"#}",
        };
        let mut i = body_start;
        let mut quote: Option<u8> = None;
        let end = loop {
            if i >= bytes.len() {
                return Err(format!("unclosed tag at byte {pos}"));
            }
            let c = bytes[i];
            match quote {
                Some(_) if c == b'\\' => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if kind != b'#' && (c == b'\'' || c == b'"') => quote = Some(c),
                None if bytes[i..].starts_with(close) => break i,
                None => {}
            }
            i += 1;
        };
        let mut src = &source[body_start..end];
        let ltrim = src.starts_with('-');
        let keep_lstrip = src.starts_with('+');
        if ltrim || keep_lstrip {
            src = &src[1..];
        }
        let rtrim = src.ends_with('-');
        let keep_newline = src.ends_with('+');
        if rtrim || keep_newline {
            src = &src[..src.len() - 1];
        }
        tags.push(RawTag {
            kind,
            src: src.trim().to_string(),
            ltrim,
            keep_lstrip,
            rtrim,
            keep_newline,
        });
        pos = end + 2;
        text_start = pos;
    }
    texts.push(source[text_start..].to_string());

    // texts[i] precedes tags[i]; texts[i + 1] follows it.
    let mut line_starting = true;
    for (i, slot) in texts.iter_mut().enumerate() {
        let mut text = std::mem::take(slot);
        if let Some(prev) = i.checked_sub(1).and_then(|p| tags.get(p)) {
            if prev.rtrim {
                let kept = text.trim_start().len();
                let consumed = &text[..text.len() - kept];
                line_starting = consumed.ends_with('\n');
                text = text[text.len() - kept..].to_string();
            } else if prev.kind != b'{' && !prev.keep_newline && text.starts_with('\n') {
                text.remove(0);
                line_starting = true;
            } else {
                line_starting = false;
            }
        }
        if let Some(next) = tags.get(i) {
            if next.ltrim {
                text.truncate(text.trim_end().len());
            } else if next.kind != b'{' && !next.keep_lstrip {
                let l_pos = text.rfind('\n').map_or(0, |p| p + 1);
                let tail = &text[l_pos..];
                if (l_pos > 0 || line_starting)
                    && !tail.is_empty()
                    && tail.chars().all(char::is_whitespace)
                {
                    text.truncate(l_pos);
                }
            }
        } else if text.ends_with('\n') {
            text.pop(); // keep_trailing_newline = False
        }
        *slot = text;
    }

    let mut out = Vec::new();
    for (i, text) in texts.into_iter().enumerate() {
        if !text.is_empty() {
            out.push(Tag::Text(text));
        }
        if let Some(tag) = tags.get(i) {
            out.push(match tag.kind {
                b'{' => Tag::Out {
                    src: tag.src.clone(),
                },
                b'%' => Tag::Stmt {
                    src: tag.src.clone(),
                },
                _ => Tag::Comment,
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- statements

impl Template {
    pub fn parse(source: &str) -> Result<Template, String> {
        let tags = lex(source)?;
        let mut iter = tags.into_iter().peekable();
        let (nodes, end) = parse_block(&mut iter)?;
        match end {
            None => Ok(Template { nodes }),
            Some(tag) => Err(format!("unexpected `{{% {tag} %}}`")),
        }
    }

    /// Renders with `messages` and `add_generation_prompt` (and `tools`/`documents` = none).
    pub fn render(&self, messages: Value, add_generation_prompt: bool) -> Result<String, String> {
        let mut scope = HashMap::new();
        scope.insert("messages".to_string(), messages);
        scope.insert(
            "add_generation_prompt".to_string(),
            Value::Bool(add_generation_prompt),
        );
        scope.insert("tools".to_string(), Value::None);
        scope.insert("documents".to_string(), Value::None);
        let mut ctx = Ctx {
            scopes: vec![scope],
        };
        let mut out = String::new();
        ctx.exec(&self.nodes, &mut out)?;
        Ok(out)
    }
}

type Tags = std::iter::Peekable<std::vec::IntoIter<Tag>>;

/// Parses nodes until an `elif`/`else`/`end*` statement, which it returns (unconsumed
/// arguments included) to the caller.
fn parse_block(tags: &mut Tags) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some(tag) = tags.next() {
        match tag {
            Tag::Text(t) => nodes.push(Node::Text(t)),
            Tag::Comment => {}
            Tag::Out { src } => nodes.push(Node::Out(parse_expr(&src))),
            Tag::Stmt { src } => {
                let (word, rest) = src
                    .split_once(char::is_whitespace)
                    .unwrap_or((src.as_str(), ""));
                let rest = rest.trim();
                match word {
                    "if" => {
                        let mut branches = vec![];
                        let mut cond = parse_expr(rest);
                        let mut otherwise = vec![];
                        loop {
                            let (body, end) = parse_block(tags)?;
                            let end = end.ok_or("`if` without `endif`")?;
                            let (w, r) = end
                                .split_once(char::is_whitespace)
                                .unwrap_or((end.as_str(), ""));
                            match w {
                                "elif" => {
                                    branches.push((cond, body));
                                    cond = parse_expr(r.trim());
                                }
                                "else" => {
                                    branches.push((cond, body));
                                    let (body, end) = parse_block(tags)?;
                                    if end.as_deref() != Some("endif") {
                                        return Err("`else` without `endif`".into());
                                    }
                                    otherwise = body;
                                    break;
                                }
                                "endif" => {
                                    branches.push((cond, body));
                                    break;
                                }
                                other => return Err(format!("`{other}` inside `if`")),
                            }
                        }
                        nodes.push(Node::If(branches, otherwise));
                    }
                    "for" => {
                        let (var, iter) = rest.split_once(" in ").ok_or("malformed `for`")?;
                        let var = var.trim();
                        let (body, end) = parse_block(tags)?;
                        if end.as_deref() != Some("endfor") {
                            return Err("`for` without `endfor`".into());
                        }
                        if is_ident(var) {
                            nodes.push(Node::For(var.to_string(), parse_expr(iter.trim()), body));
                        } else {
                            nodes.push(Node::Unsupported(format!("for {var}")));
                        }
                    }
                    "set" => match rest.split_once('=') {
                        Some((name, value)) if is_ident(name.trim()) && !value.starts_with('=') => {
                            nodes.push(Node::Set(name.trim().to_string(), parse_expr(value.trim())))
                        }
                        _ => nodes.push(Node::Unsupported(format!("set {rest}"))),
                    },
                    "generation" => {
                        let (body, end) = parse_block(tags)?;
                        if end.as_deref() != Some("endgeneration") {
                            return Err("`generation` without `endgeneration`".into());
                        }
                        nodes.extend(body);
                    }
                    "elif" | "else" | "endif" | "endfor" | "endgeneration" => {
                        return Ok((nodes, Some(src)))
                    }
                    other => return Err(format!("unsupported statement `{other}`")),
                }
            }
        }
    }
    Ok((nodes, None))
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

// ---------------------------------------------------------------- evaluation

/// Names Hugging Face passes that we cannot model (their values are not ours to pick).
const UNMODELLED: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "raise_exception",
    "strftime_now",
    "date_string",
];

struct Ctx {
    scopes: Vec<HashMap<String, Value>>,
}

impl Ctx {
    fn lookup(&self, name: &str) -> Result<Value, String> {
        if UNMODELLED.contains(&name) {
            return Err(format!("uses `{name}`"));
        }
        Ok(self
            .scopes
            .iter()
            .rev()
            .find_map(|s| s.get(name))
            .cloned()
            .unwrap_or(Value::Undefined))
    }

    fn exec(&mut self, nodes: &[Node], out: &mut String) -> Result<(), String> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Out(e) => out.push_str(&self.eval(e)?.render()?),
                Node::If(branches, otherwise) => {
                    let mut taken = false;
                    for (cond, body) in branches {
                        if self.eval(cond)?.truthy() {
                            self.exec(body, out)?;
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        self.exec(otherwise, out)?;
                    }
                }
                Node::For(var, iter, body) => {
                    let items = match self.eval(iter)? {
                        Value::List(items) => items,
                        Value::Undefined | Value::None => Vec::new(),
                        other => return Err(format!("`for` over {other:?}")),
                    };
                    let n = items.len() as i64;
                    for (i, item) in items.into_iter().enumerate() {
                        let i = i as i64;
                        let lp = Value::Map(vec![
                            ("index".into(), Value::Int(i + 1)),
                            ("index0".into(), Value::Int(i)),
                            ("revindex".into(), Value::Int(n - i)),
                            ("revindex0".into(), Value::Int(n - i - 1)),
                            ("first".into(), Value::Bool(i == 0)),
                            ("last".into(), Value::Bool(i == n - 1)),
                            ("length".into(), Value::Int(n)),
                        ]);
                        let mut scope = HashMap::new();
                        scope.insert(var.clone(), item);
                        scope.insert("loop".to_string(), lp);
                        self.scopes.push(scope);
                        let result = self.exec(body, out);
                        self.scopes.pop();
                        result?;
                    }
                }
                Node::Set(name, e) => {
                    let v = self.eval(e)?;
                    if let Some(scope) = self.scopes.last_mut() {
                        scope.insert(name.clone(), v);
                    }
                }
                Node::Unsupported(what) => return Err(format!("unsupported statement `{what}`")),
            }
        }
        Ok(())
    }

    fn eval(&self, e: &Expr) -> Result<Value, String> {
        Ok(match e {
            Expr::Lit(v) => v.clone(),
            Expr::Name(n) => self.lookup(n)?,
            Expr::Attr(base, name) => self.eval(base)?.get(&Value::Str(name.clone()))?,
            Expr::Item(base, index) => self.eval(base)?.get(&self.eval(index)?)?,
            Expr::Not(x) => Value::Bool(!self.eval(x)?.truthy()),
            Expr::Neg(x) => match self.eval(x)? {
                Value::Int(i) => Value::Int(-i),
                other => return Err(format!("negating {other:?}")),
            },
            Expr::Bin(a, "and", b) => {
                let a = self.eval(a)?;
                if a.truthy() {
                    self.eval(b)?
                } else {
                    a
                }
            }
            Expr::Bin(a, "or", b) => {
                let a = self.eval(a)?;
                if a.truthy() {
                    a
                } else {
                    self.eval(b)?
                }
            }
            Expr::Bin(a, op, b) => binary(self.eval(a)?, op, self.eval(b)?)?,
            Expr::Test(x, test, negated) => {
                let v = self.eval(x)?;
                let r = match test.as_str() {
                    "defined" => v != Value::Undefined,
                    "undefined" => v == Value::Undefined,
                    "none" => v == Value::None,
                    "string" => matches!(v, Value::Str(_)),
                    other => return Err(format!("test `is {other}`")),
                };
                Value::Bool(r != *negated)
            }
            Expr::Filter(x, name) => match (name.as_str(), self.eval(x)?) {
                ("length", Value::Str(s)) => Value::Int(s.chars().count() as i64),
                ("length", Value::List(l)) => Value::Int(l.len() as i64),
                ("trim", Value::Str(s)) => Value::Str(s.trim().to_string()),
                (other, v) => return Err(format!("filter `{other}` on {v:?}")),
            },
            Expr::Unsupported(what) => return Err(format!("unsupported expression: {what}")),
        })
    }
}

fn binary(a: Value, op: &str, b: Value) -> Result<Value, String> {
    use Value::*;
    Ok(match (op, a, b) {
        ("==", a, b) => Bool(a == b),
        ("!=", a, b) => Bool(a != b),
        ("+", Str(a), Str(b)) => Str(a + &b),
        ("+", Int(a), Int(b)) => Int(a + b),
        ("-", Int(a), Int(b)) => Int(a - b),
        ("~", a, b) => Str(a.render()? + &b.render()?),
        ("<", Int(a), Int(b)) => Bool(a < b),
        (">", Int(a), Int(b)) => Bool(a > b),
        ("<=", Int(a), Int(b)) => Bool(a <= b),
        (">=", Int(a), Int(b)) => Bool(a >= b),
        ("in" | "not in", needle, hay) => {
            let found = match (&needle, &hay) {
                (Str(n), Str(h)) => h.contains(n.as_str()),
                (n, List(l)) => l.contains(n),
                (Str(n), Map(m)) => m.iter().any(|(k, _)| k == n),
                _ => return Err(format!("`in` with {needle:?} and {hay:?}")),
            };
            Bool(found == (op == "in"))
        }
        (op, a, b) => return Err(format!("`{op}` on {a:?} and {b:?}")),
    })
}
