//! `PROTOCOL.md` cannot drift from the code: every ```json block in it is marked with what it
//! is (`<!-- hello -->`, `<!-- welcome -->`, `<!-- request -->`, `<!-- response -->`,
//! `<!-- ops -->`) and must parse as that type; what the daemon sends (welcomes, responses)
//! must be exactly what the types serialize to; the hex dump (`<!-- frame -->`) must be a
//! well-formed frame of the hello that follows it; the error table must list every code;
//! and the limits quoted must be the constants.

use std::collections::BTreeSet;

use rpc_daemon::error::Code;
use rpc_daemon::model::{
    Op, DEFAULT_LIMIT, MAX_BATCH_OPS, MAX_DESCRIPTION_BYTES, MAX_LABELS, MAX_LIMIT, MAX_NAME_BYTES,
    MAX_TITLE_BYTES,
};
use rpc_daemon::proto::{
    HelloFrame, Request, Response, WelcomeFrame, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const DOC: &str = include_str!("../PROTOCOL.md");

/// One fenced block: its marker, its language, its text and the line it starts on.
struct Block {
    marker: Option<String>,
    lang: String,
    text: String,
    line: usize,
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    let mut lines = DOC.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let t = line.trim();
        if let Some(m) = t.strip_prefix("<!--").and_then(|m| m.strip_suffix("-->")) {
            marker = Some(m.trim().to_string());
        } else if let Some(lang) = t.strip_prefix("```") {
            let mut text = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim() == "```" {
                    break;
                }
                text.push_str(l);
                text.push('\n');
            }
            out.push(Block {
                marker: marker.take(),
                lang: lang.trim().to_string(),
                text,
                line: n + 1,
            });
        } else if !t.is_empty() {
            // A marker applies only to the block right below it.
            marker = None;
        }
    }
    out
}

/// Parses `text` strictly as `T` and checks it survives a round trip.
fn parse_as<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    b: &Block,
) -> (T, Value) {
    let v: Value = serde_json::from_str(&b.text)
        .unwrap_or_else(|e| panic!("PROTOCOL.md line {}: not JSON: {e}", b.line));
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        panic!(
            "PROTOCOL.md line {}: not a {}: {e}\n{}",
            b.line,
            std::any::type_name::<T>(),
            b.text
        )
    });
    let again: T = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
    assert_eq!(again, t, "PROTOCOL.md line {}: round trip", b.line);
    (t, v)
}

/// What the daemon sends must be shown exactly as it is serialized (every field present).
fn exactly_as_sent<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(b: &Block) {
    let (t, v) = parse_as::<T>(b);
    assert_eq!(
        serde_json::to_value(&t).unwrap(),
        v,
        "PROTOCOL.md line {}: the daemon would send this differently",
        b.line
    );
}

fn parse_hex_dump(b: &Block) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in b.text.lines().filter(|l| !l.trim().is_empty()) {
        let offset = usize::from_str_radix(&line[..8], 16)
            .unwrap_or_else(|e| panic!("PROTOCOL.md line {}: offset of {line:?}: {e}", b.line));
        assert_eq!(
            offset,
            bytes.len(),
            "PROTOCOL.md line {}: offset column",
            b.line
        );
        let hex = &line[10..line.len().min(57)];
        for tok in hex.split_whitespace() {
            bytes.push(
                u8::from_str_radix(tok, 16)
                    .unwrap_or_else(|e| panic!("PROTOCOL.md line {}: {tok:?}: {e}", b.line)),
            );
        }
        // The ASCII column shows the same bytes.
        let ascii: String = bytes[offset..]
            .iter()
            .map(|&c| {
                if (32..127).contains(&c) {
                    c as char
                } else {
                    '.'
                }
            })
            .collect();
        assert!(
            line.ends_with(&ascii),
            "PROTOCOL.md line {}: {line:?}",
            b.line
        );
    }
    bytes
}

#[test]
fn every_json_example_is_the_wire_format() {
    let blocks = blocks();
    let mut seen = BTreeSet::new();
    let mut frame_body: Option<Value> = None;
    for b in &blocks {
        let Some(marker) = &b.marker else {
            assert_ne!(
                b.lang, "json",
                "PROTOCOL.md line {}: a ```json block without a <!-- kind --> marker",
                b.line
            );
            continue;
        };
        seen.insert(marker.clone());
        match (marker.as_str(), b.lang.as_str()) {
            ("hello", "json") => {
                let (_, v) = parse_as::<HelloFrame>(b);
                if let Some(body) = frame_body.take() {
                    assert_eq!(
                        body, v,
                        "PROTOCOL.md line {}: the hex dump shows another hello",
                        b.line
                    );
                }
            }
            ("welcome", "json") => exactly_as_sent::<WelcomeFrame>(b),
            ("request", "json") => {
                parse_as::<Request>(b);
            }
            ("response", "json") => exactly_as_sent::<Response>(b),
            ("ops", "json") => {
                parse_as::<Vec<Op>>(b);
            }
            ("frame", "text") => {
                let bytes = parse_hex_dump(b);
                assert!(bytes.len() >= 4, "PROTOCOL.md line {}", b.line);
                let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                assert_eq!(
                    len,
                    bytes.len() - 4,
                    "PROTOCOL.md line {}: length prefix",
                    b.line
                );
                let body: Value = serde_json::from_slice(&bytes[4..]).unwrap();
                serde_json::from_value::<HelloFrame>(body.clone()).unwrap();
                frame_body = Some(body);
            }
            (m, l) => panic!(
                "PROTOCOL.md line {}: unknown marker {m:?} on a {l:?} block",
                b.line
            ),
        }
    }
    assert!(
        frame_body.is_none(),
        "the hex dump must be followed by its hello"
    );
    for kind in ["hello", "welcome", "request", "response", "ops", "frame"] {
        assert!(seen.contains(kind), "PROTOCOL.md has no {kind} example");
    }
}

/// Every code, by an exhaustive match: a new code does not compile until it is listed here,
/// and this test then asks for it in PROTOCOL.md.
fn all_codes() -> Vec<Code> {
    let all = [
        Code::BadRequest,
        Code::InvalidField,
        Code::NotFound,
        Code::Conflict,
        Code::BatchFailed,
        Code::TooLarge,
        Code::DeadlineExceeded,
        Code::Overloaded,
        Code::WrongDatabase,
        Code::VersionMismatch,
        Code::HandshakeRequired,
        Code::ShuttingDown,
        Code::Busy,
        Code::Internal,
    ];
    for c in all {
        match c {
            Code::BadRequest
            | Code::InvalidField
            | Code::NotFound
            | Code::Conflict
            | Code::BatchFailed
            | Code::TooLarge
            | Code::DeadlineExceeded
            | Code::Overloaded
            | Code::WrongDatabase
            | Code::VersionMismatch
            | Code::HandshakeRequired
            | Code::ShuttingDown
            | Code::Busy
            | Code::Internal => {}
        }
    }
    all.to_vec()
}

#[test]
fn the_error_table_lists_every_code() {
    let section = DOC
        .split("## 6. Error codes")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a section 6 on error codes");
    let listed: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let want: Vec<String> = all_codes().iter().map(|c| c.as_str().to_string()).collect();
    assert_eq!(
        listed, want,
        "section 6 lists the codes of error.rs, in order"
    );
    // Refusal codes of the handshake are real codes.
    let refusals = DOC
        .split("| refusal code")
        .nth(1)
        .expect("the handshake's table of refusal codes");
    let refusals = refusals.split("\n\n").next().unwrap_or_default();
    let mut n = 0;
    for l in refusals.lines().filter_map(|l| l.strip_prefix("| `")) {
        n += 1;
        let code = l.split('`').next().unwrap();
        serde_json::from_value::<Code>(Value::String(code.into()))
            .unwrap_or_else(|e| panic!("handshake table: {code:?}: {e}"));
    }
    assert!(n >= 4, "the refusal table lists {n} codes");
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn the_limits_quoted_are_the_constants() {
    for needle in [
        format!("# The rpc-daemon wire protocol, version {PROTOCOL_VERSION}"),
        format!("\"protocol\": {PROTOCOL_VERSION}"),
        format!("{} bytes", thousands(u64::from(MAX_FRAME_BYTES))),
        format!("1 to {MAX_TITLE_BYTES} bytes"),
        format!("at most {} bytes", thousands(MAX_DESCRIPTION_BYTES as u64)),
        format!("1 to {MAX_NAME_BYTES} bytes"),
        format!("at most {MAX_LABELS} after"),
        format!(
            "1 to {}, default {DEFAULT_LIMIT}",
            thousands(u64::from(MAX_LIMIT))
        ),
        format!("at most {} operations", thousands(MAX_BATCH_OPS as u64)),
        format!("more than {} operations", thousands(MAX_BATCH_OPS as u64)),
    ] {
        assert!(DOC.contains(&needle), "PROTOCOL.md does not say {needle:?}");
    }
}
