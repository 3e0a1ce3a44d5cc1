//! Jinja expressions: tokenizer and precedence-climbing parser. Constructs we do not
//! evaluate (calls, slices, list literals, most filters) parse to `Expr::Unsupported`, so
//! they only fail when a render reaches them.

use super::Value;

#[derive(Debug, Clone)]
pub(super) enum Expr {
    Lit(Value),
    Name(String),
    Attr(Box<Expr>, String),
    Item(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(Box<Expr>, &'static str, Box<Expr>),
    Test(Box<Expr>, String, bool),
    Filter(Box<Expr>, String),
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Int(i64),
    Op(&'static str),
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    const OPS: [&str; 20] = [
        "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "~", "(", ")", "[", "]", ".",
        ",", "|", ":",
    ];
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                let ch = *chars.get(i).ok_or("unterminated string")?;
                i += 1;
                if ch == c {
                    break;
                }
                if ch == '\\' {
                    let esc = *chars.get(i).ok_or("unterminated string")?;
                    i += 1;
                    s.push(match esc {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '\\' | '\'' | '"' => esc,
                        other => return Err(format!("string escape `\\{other}`")),
                    });
                } else {
                    s.push(ch);
                }
            }
            toks.push(Tok::Str(s));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let n: String = chars[start..i].iter().collect();
            toks.push(Tok::Int(n.parse().map_err(|_| format!("number `{n}`"))?));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Name(chars[start..i].iter().collect()));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = OPS
                .iter()
                .find(|op| rest.starts_with(**op))
                .ok_or(format!("unexpected `{c}`"))?;
            toks.push(Tok::Op(op));
            i += op.chars().count();
        }
    }
    Ok(toks)
}

pub(super) fn parse_expr(src: &str) -> Expr {
    let result = tokenize(src).and_then(|toks| {
        let mut p = Parser { toks, pos: 0 };
        let e = p.or()?;
        match p.toks.get(p.pos) {
            None => Ok(e),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    });
    result.unwrap_or_else(|why| Expr::Unsupported(format!("`{src}`: {why}")))
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            return true;
        }
        false
    }
    fn eat_name(&mut self, name: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Name(n)) if n == name) {
            self.pos += 1;
            return true;
        }
        false
    }
    fn name(&mut self) -> Result<String, String> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Name(n)) => {
                self.pos += 1;
                Ok(n)
            }
            other => Err(format!("expected a name, found {other:?}")),
        }
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat_name("or") {
            e = Expr::Bin(Box::new(e), "or", Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while self.eat_name("and") {
            e = Expr::Bin(Box::new(e), "and", Box::new(self.not()?));
        }
        Ok(e)
    }
    fn not(&mut self) -> Result<Expr, String> {
        if self.eat_name("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.compare()
    }
    fn compare(&mut self) -> Result<Expr, String> {
        let mut e = self.concat()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op(o)) if ["==", "!=", "<", ">", "<=", ">="].contains(o) => *o,
                Some(Tok::Name(n)) if n == "in" => "in",
                Some(Tok::Name(n))
                    if n == "not"
                        && self.toks.get(self.pos + 1) == Some(&Tok::Name("in".into())) =>
                {
                    self.pos += 1;
                    "not in"
                }
                Some(Tok::Name(n)) if n == "is" => {
                    self.pos += 1;
                    let negated = self.eat_name("not");
                    e = Expr::Test(Box::new(e), self.name()?, negated);
                    continue;
                }
                _ => return Ok(e),
            };
            self.pos += 1;
            e = Expr::Bin(Box::new(e), op, Box::new(self.concat()?));
        }
    }
    fn concat(&mut self) -> Result<Expr, String> {
        let mut e = self.sum()?;
        while self.eat_op("~") {
            e = Expr::Bin(Box::new(e), "~", Box::new(self.sum()?));
        }
        Ok(e)
    }
    fn sum(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        loop {
            let op = if self.eat_op("+") {
                "+"
            } else if self.eat_op("-") {
                "-"
            } else if self.eat_op("*") || self.eat_op("/") || self.eat_op("%") {
                return Ok(Expr::Unsupported("`*`, `/` or `%`".into()));
            } else {
                return Ok(e);
            };
            e = Expr::Bin(Box::new(e), op, Box::new(self.unary()?));
        }
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_op("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        let mut e = self.primary()?;
        loop {
            if self.eat_op(".") {
                e = Expr::Attr(Box::new(e), self.name()?);
            } else if self.eat_op("[") {
                let index = self.or()?;
                if !self.eat_op("]") {
                    return Ok(Expr::Unsupported("slices".into()));
                }
                e = Expr::Item(Box::new(e), Box::new(index));
            } else if self.eat_op("(") {
                self.skip_group()?;
                e = Expr::Unsupported("function and method calls".into());
            } else if self.eat_op("|") {
                let filter = self.name()?;
                if self.eat_op("(") {
                    self.skip_group()?;
                    e = Expr::Unsupported(format!("filter `{filter}` with arguments"));
                } else {
                    e = Expr::Filter(Box::new(e), filter);
                }
            } else {
                return Ok(e);
            }
        }
    }
    /// Skips to the `)` closing an already consumed `(`.
    fn skip_group(&mut self) -> Result<(), String> {
        let mut depth = 1;
        while depth > 0 {
            match self.toks.get(self.pos) {
                None => return Err("unclosed `(`".into()),
                Some(Tok::Op("(")) => depth += 1,
                Some(Tok::Op(")")) => depth -= 1,
                _ => {}
            }
            self.pos += 1;
        }
        Ok(())
    }
    fn primary(&mut self) -> Result<Expr, String> {
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of expression")?;
        self.pos += 1;
        Ok(match tok {
            Tok::Str(s) => Expr::Lit(Value::Str(s)),
            Tok::Int(i) => Expr::Lit(Value::Int(i)),
            Tok::Name(n) => match n.as_str() {
                "true" | "True" => Expr::Lit(Value::Bool(true)),
                "false" | "False" => Expr::Lit(Value::Bool(false)),
                "none" | "None" => Expr::Lit(Value::None),
                _ => Expr::Name(n),
            },
            Tok::Op("(") => {
                let e = self.or()?;
                if !self.eat_op(")") {
                    return Err("expected `)`".into());
                }
                e
            }
            Tok::Op("[") => {
                self.skip_brackets()?;
                Expr::Unsupported("list literals".into())
            }
            other => return Err(format!("unexpected {other:?}")),
        })
    }
    fn skip_brackets(&mut self) -> Result<(), String> {
        let mut depth = 1;
        while depth > 0 {
            match self.toks.get(self.pos) {
                None => return Err("unclosed `[`".into()),
                Some(Tok::Op("[")) => depth += 1,
                Some(Tok::Op("]")) => depth -= 1,
                _ => {}
            }
            self.pos += 1;
        }
        Ok(())
    }
}
