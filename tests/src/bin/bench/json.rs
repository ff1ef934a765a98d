//! A minimal JSON value and writer (the benchmark needs no parser).

use std::fmt::{self, Write};

#[derive(Clone, Debug)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn obj() -> Json {
        Json::Obj(Vec::new())
    }

    /// Append a key to an object (no-op on other variants).
    pub fn set(&mut self, key: &str, value: impl Into<Json>) -> &mut Json {
        if let Json::Obj(fields) = self {
            fields.push((key.to_owned(), value.into()));
        }
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Json>) -> Json {
        self.set(key, value);
        self
    }

    /// Pretty-print with two-space indentation.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, indent: usize) -> fmt::Result {
        match self {
            Json::Null => out.write_str("null"),
            Json::Bool(b) => write!(out, "{b}"),
            Json::Num(n) if n.is_finite() => {
                if n.fract() == 0.0 && n.abs() < 1e15 {
                    write!(out, "{}", *n as i64)
                } else {
                    write!(out, "{n}")
                }
            }
            Json::Num(_) => out.write_str("null"),
            Json::Str(s) => write_str(out, s),
            Json::Arr(items) if items.is_empty() => out.write_str("[]"),
            Json::Arr(items) => {
                // Short arrays of scalars stay on one line.
                if items.len() <= 8 && items.iter().all(|i| matches!(i, Json::Num(_))) {
                    out.write_char('[')?;
                    for (n, item) in items.iter().enumerate() {
                        if n > 0 {
                            out.write_str(", ")?;
                        }
                        item.write(out, indent)?;
                    }
                    return out.write_char(']');
                }
                out.write_str("[\n")?;
                for (n, item) in items.iter().enumerate() {
                    pad(out, indent + 1)?;
                    item.write(out, indent + 1)?;
                    out.write_str(if n + 1 < items.len() { ",\n" } else { "\n" })?;
                }
                pad(out, indent)?;
                out.write_char(']')
            }
            Json::Obj(fields) if fields.is_empty() => out.write_str("{}"),
            Json::Obj(fields) => {
                out.write_str("{\n")?;
                for (n, (k, v)) in fields.iter().enumerate() {
                    pad(out, indent + 1)?;
                    write_str(out, k)?;
                    out.write_str(": ")?;
                    v.write(out, indent + 1)?;
                    out.write_str(if n + 1 < fields.len() { ",\n" } else { "\n" })?;
                }
                pad(out, indent)?;
                out.write_char('}')
            }
        }
    }
}

fn pad(out: &mut String, indent: usize) -> fmt::Result {
    for _ in 0..indent {
        out.write_str("  ")?;
    }
    Ok(())
}

fn write_str(out: &mut String, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

impl From<f64> for Json {
    fn from(v: f64) -> Json {
        Json::Num(v)
    }
}
impl From<u64> for Json {
    fn from(v: u64) -> Json {
        Json::Num(v as f64)
    }
}
impl From<usize> for Json {
    fn from(v: usize) -> Json {
        Json::Num(v as f64)
    }
}
impl From<bool> for Json {
    fn from(v: bool) -> Json {
        Json::Bool(v)
    }
}
impl From<&str> for Json {
    fn from(v: &str) -> Json {
        Json::Str(v.to_owned())
    }
}
impl From<String> for Json {
    fn from(v: String) -> Json {
        Json::Str(v)
    }
}
impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(v: Option<T>) -> Json {
        v.map_or(Json::Null, Into::into)
    }
}
impl From<Vec<Json>> for Json {
    fn from(v: Vec<Json>) -> Json {
        Json::Arr(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json() {
        let j = Json::obj()
            .with("a", 1.5)
            .with("b", "x\"y\n")
            .with("c", Json::Arr(vec![Json::Num(1.0), Json::Num(f64::NAN)]))
            .with("d", Json::obj())
            .with("e", None::<f64>);
        assert_eq!(
            j.pretty(),
            "{\n  \"a\": 1.5,\n  \"b\": \"x\\\"y\\n\",\n  \"c\": [1, null],\n  \"d\": {},\n  \"e\": null\n}\n"
        );
    }
}
