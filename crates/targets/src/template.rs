//! Request templates: a body, payload or frame with `{seq}` and `{rand}` placeholders.
//!
//! - `{seq}` is the operation's sequence number (the generator's `seq`), in decimal: unique
//!   within a run, so it can serve as a request id.
//! - `{rand}` is a 64-bit number in decimal drawn from the run's seed and `seq`
//!   (splitmix64), so the same seed renders the same bytes for the same operation.
//!
//! Any other brace is literal text, so JSON needs no escaping:
//! `{"id": {seq}, "key": "k{rand}"}` renders as `{"id": 7, "key": "k1234…"}`. A brace
//! around a bare word that is neither placeholder (`{sequ}`) is refused when the template
//! is parsed, since it is almost surely a typo.

use std::fmt::Write as _;

/// A placeholder or a run of literal bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    Seq,
    Rand,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    seed: u64,
}

/// splitmix64: a well-mixed 64-bit function of its input.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `{rand}` of operation `seq` under `seed`.
pub fn rand_of(seed: u64, seq: u64) -> u64 {
    splitmix64(seed ^ splitmix64(seq))
}

/// If `rest` starts with `{word}` (a bare identifier in braces), the word and the length of
/// the whole placeholder.
fn placeholder(rest: &str) -> Option<(&str, usize)> {
    let inner = rest.strip_prefix('{')?;
    let end = inner.find('}')?;
    let word = &inner[..end];
    let mut chars = word.chars();
    let first = chars.next()?;
    let ident = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    ident.then_some((word, end + 2))
}

impl Template {
    /// Parses `text`; `seed` is what `{rand}` is drawn from. The error names the unknown
    /// placeholder and where it is.
    pub fn parse(text: &str, seed: u64) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < text.len() {
            let rest = &text[i..];
            if let Some((word, len)) = placeholder(rest) {
                let part = match word {
                    "seq" => Part::Seq,
                    "rand" => Part::Rand,
                    other => {
                        return Err(format!(
                            "unknown placeholder {{{other}}} at byte {i} of the template: expected {{seq}} or {{rand}}"
                        ))
                    }
                };
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal).into_bytes()));
                }
                parts.push(part);
                i += len;
                continue;
            }
            let c = rest.chars().next().unwrap_or('\0');
            literal.push(c);
            i += c.len_utf8().max(1);
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal.into_bytes()));
        }
        Ok(Template { parts, seed })
    }

    /// Whether the template renders the same bytes for every operation.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Appends the rendering for operation `seq` to `out`.
    pub fn render_into(&self, seq: u64, out: &mut Vec<u8>) {
        let mut num = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(b) => out.extend_from_slice(b),
                Part::Seq | Part::Rand => {
                    num.clear();
                    let v = if *p == Part::Seq {
                        seq
                    } else {
                        rand_of(self.seed, seq)
                    };
                    let _ = write!(num, "{v}");
                    out.extend_from_slice(num.as_bytes());
                }
            }
        }
    }

    /// The rendering for operation `seq`.
    pub fn render(&self, seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(seq, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render_and_json_braces_stay() {
        let t = Template::parse(r#"{"id": {seq}, "k": "x{rand}"}"#, 7).unwrap();
        let out = String::from_utf8(t.render(42)).unwrap();
        assert_eq!(out, format!(r#"{{"id": 42, "k": "x{}"}}"#, rand_of(7, 42)));
        assert!(!t.is_constant());
        assert!(Template::parse("{} {\"a\":1} é", 1).unwrap().is_constant());
        assert_eq!(
            Template::parse("{} é", 1).unwrap().render(0),
            "{} é".as_bytes()
        );
    }

    #[test]
    fn rand_is_deterministic_in_the_seed() {
        let a = Template::parse("{rand}", 1).unwrap();
        let b = Template::parse("{rand}", 1).unwrap();
        let c = Template::parse("{rand}", 2).unwrap();
        assert_eq!(a.render(5), b.render(5));
        assert_ne!(a.render(5), c.render(5));
        assert_ne!(a.render(5), a.render(6));
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let e = Template::parse("a{sequ}", 1).unwrap_err();
        assert!(e.contains("{sequ}") && e.contains("byte 1"), "{e}");
        assert!(Template::parse("{seq", 1).unwrap().is_constant());
    }
}
