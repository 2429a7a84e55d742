//! Structural check of a policy before it is deserialized, every error at once.
//!
//! Every TOML syntax error (the parser recovers and goes on), then every
//! unknown key, wrong type and missing required key, each at its position.
//! The typed deserializer would stop at the first of these; `check`
//! reports them all. The keys and shapes are not listed here: they come
//! from the serde structs of `parse` (see [`Field`]).

use std::{collections::BTreeMap, ops::Range};

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

/// What a value must be.
#[derive(Clone, Copy)]
pub(super) enum Shape {
    Bool,
    Int,
    Str,
    StrList,
    /// A table of named entries, each of this shape.
    Named(&'static Shape),
    /// A table with these keys.
    Table(Keys),
    /// An array of tables (`[[rules]]`).
    TableList(Keys),
}

/// The keys of a table: name, shape, and whether it is required.
pub(super) type Keys = &'static [(&'static str, Shape, bool)];

/// A type a policy value deserializes into, and so the shape the value
/// must have. The tables (`Raw*` structs) implement it through
/// `policy_table!`, which lists their keys from the struct's own fields.
pub(super) trait Field {
    const SHAPE: Shape;
}

impl Field for bool {
    const SHAPE: Shape = Shape::Bool;
}

impl Field for u32 {
    const SHAPE: Shape = Shape::Int;
}

impl Field for String {
    const SHAPE: Shape = Shape::Str;
}

impl<T: Field> Field for Spanned<T> {
    const SHAPE: Shape = T::SHAPE;
}

impl<T: Field> Field for Option<T> {
    const SHAPE: Shape = T::SHAPE;
}

impl<T: Field> Field for Vec<T> {
    const SHAPE: Shape = match T::SHAPE {
        Shape::Str => Shape::StrList,
        Shape::Table(keys) => Shape::TableList(keys),
        _ => panic!("a policy list holds strings or tables"),
    };
}

/// Named entries (`[regions.<name>]`, `[groups]`): keys are names.
impl<K, T: Field> Field for BTreeMap<K, T> {
    const SHAPE: Shape = Shape::Named(&T::SHAPE);
}

/// A problem at a byte span of the policy text.
pub struct Problem {
    pub span: Range<usize>,
    pub message: String,
}

/// Checks `source`'s structure against `top`, the keys of the policy's
/// top-level table; returns every problem found.
pub(super) fn check(source: &str, top: Keys) -> Vec<Problem> {
    let (doc, syntax) = DeTable::parse_recoverable(source);
    if !syntax.is_empty() {
        return syntax_problems(source, &syntax);
    }
    let mut out = Vec::new();
    table(doc.get_ref(), doc.span(), top, "the policy", &mut out);
    out.sort_by_key(|p| (p.span.start, p.span.end));
    out
}

/// Syntax errors worth showing. The parser recovers and goes on, but after
/// a real syntax error (say an unclosed array) what follows is mostly
/// cascade, so only the first one is kept, with every duplicate key before
/// it. A duplicated table's keys are not reported again as duplicates.
fn syntax_problems(source: &str, errors: &[toml::de::Error]) -> Vec<Problem> {
    let mut errors: Vec<(Range<usize>, &str)> = errors
        .iter()
        .map(|e| (e.span().unwrap_or(0..0), e.message().trim()))
        .collect();
    errors.sort_by_key(|(span, _)| (span.start, span.end));
    let mut out: Vec<Problem> = Vec::new();
    let mut duplicate_table: Option<usize> = None;
    for (span, message) in errors {
        if message == "recursion limit" {
            out.push(deepest_nesting(source));
            break;
        }
        if message != "duplicate key" {
            out.push(Problem {
                span,
                message: message.to_string(),
            });
            break;
        }
        let line_start = source[..span.start.min(source.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let is_header = source[line_start..].trim_start().starts_with('[');
        if let Some(at) = duplicate_table {
            let between = source.get(at..span.start).unwrap_or_default();
            if !is_header && !between.contains("\n[") {
                continue; // a key of the duplicated table
            }
        }
        duplicate_table = is_header.then_some(span.start);
        out.push(Problem {
            span,
            message: "duplicate key: this name is already defined above; expected each name once"
                .to_string(),
        });
    }
    out
}

/// The TOML parser stops at a nesting limit without a position: point at
/// the line nested deepest (dotted keys, tables, arrays, inline tables).
fn deepest_nesting(source: &str) -> Problem {
    let mut best = (0, 0..0);
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let depth = line
            .bytes()
            .filter(|b| matches!(b, b'.' | b'[' | b'{'))
            .count();
        if depth > best.0 {
            let start = offset + (line.len() - line.trim_start().len());
            best = (depth, start..start + 1);
        }
        offset += line.len();
    }
    Problem {
        span: best.1,
        message: "nested too deeply for the TOML parser (dotted keys, tables or arrays inside each other); expected a policy a few levels deep".to_string(),
    }
}

fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn table(
    t: &DeTable<'_>,
    span: Range<usize>,
    keys: &[(&str, Shape, bool)],
    what: &str,
    out: &mut Vec<Problem>,
) {
    for (k, v) in t {
        if let Some((name, shape, _)) = keys
            .iter()
            .find(|(name, _, _)| *name == k.get_ref().as_ref())
        {
            value(v, *shape, name, out);
        } else {
            let expected: Vec<String> = keys.iter().map(|(n, _, _)| format!("`{n}`")).collect();
            out.push(Problem {
                span: k.span(),
                message: format!(
                    "unknown field `{}` in {what}, expected {}",
                    k.get_ref(),
                    if expected.len() == 1 {
                        expected[0].clone()
                    } else {
                        format!("one of {}", expected.join(", "))
                    }
                ),
            });
        }
    }
    for (name, _, required) in keys {
        if *required && !t.iter().any(|(k, _)| k.get_ref().as_ref() == *name) {
            out.push(Problem {
                span: span.clone(),
                message: format!("missing field `{name}` in {what}"),
            });
        }
    }
}

fn value(v: &Spanned<DeValue<'_>>, shape: Shape, name: &str, out: &mut Vec<Problem>) {
    let wrong = |expected: &str, out: &mut Vec<Problem>| {
        out.push(Problem {
            span: v.span(),
            message: format!("`{name}` must be {expected}, found {}", kind(v.get_ref())),
        });
    };
    match (shape, v.get_ref()) {
        (Shape::Bool, DeValue::Boolean(_))
        | (Shape::Int, DeValue::Integer(_))
        | (Shape::Str, DeValue::String(_)) => {}
        (Shape::Bool, _) => wrong("true or false", out),
        (Shape::Int, _) => wrong("a whole number", out),
        (Shape::Str, _) => wrong("a string", out),
        (Shape::StrList, DeValue::Array(items)) => {
            for item in &**items {
                if !matches!(item.get_ref(), DeValue::String(_)) {
                    out.push(Problem {
                        span: item.span(),
                        message: format!(
                            "`{name}` must list strings, found {}",
                            kind(item.get_ref())
                        ),
                    });
                }
            }
        }
        (Shape::StrList, _) => wrong("an array of strings, e.g. [\"...\"]", out),
        (Shape::Named(inner), DeValue::Table(t)) => {
            for (k, entry) in t {
                match (inner, entry.get_ref()) {
                    (Shape::Table(keys), DeValue::Table(body)) => table(
                        body,
                        entry.span(),
                        keys,
                        &format!("[{name}.{}]", k.get_ref()),
                        out,
                    ),
                    _ => value(entry, *inner, &format!("{name}.{}", k.get_ref()), out),
                }
            }
        }
        (Shape::Table(keys), DeValue::Table(t)) => table(t, v.span(), keys, name, out),
        (Shape::Named(_) | Shape::Table(_), _) => wrong("a table", out),
        (Shape::TableList(keys), DeValue::Array(items)) => {
            for item in &**items {
                if let DeValue::Table(t) = item.get_ref() {
                    table(t, item.span(), keys, &format!("[[{name}]]"), out);
                } else {
                    out.push(Problem {
                        span: item.span(),
                        message: format!(
                            "`{name}` must be tables ([[{name}]]), found {}",
                            kind(item.get_ref())
                        ),
                    });
                }
            }
        }
        (Shape::TableList(_), _) => wrong("an array of tables ([[...]])", out),
    }
}
