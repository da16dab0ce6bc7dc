//! The flags that configure a target beyond its spec (method, headers, body, pool size,
//! framing, preamble, consumer), shared by `stress maxrps` and `stress serve`, and the one
//! place a spec becomes a target: `daemon:` here (it starts a daemon process), everything
//! else through [`targets::from_spec`].
//!
//! Plan files carry the same settings as keys (`crate::plan`); both end in
//! [`targets::TargetOptions`], so a flag and a plan key can never mean different things.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use collector::target::{SpecError, Target};
use targets::{Framing, TargetOptions};
use tokio::runtime::Runtime;

/// The largest body file read, bytes (a body is sent with every request).
pub const MAX_BODY_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Target settings that are not part of the spec.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TargetFlags {
    /// HTTP method (`http://`, `h2c://`); default GET, or POST when a body is given.
    #[arg(long)]
    pub method: Option<String>,
    /// A request header `NAME:VALUE` (HTTP) or NATS header; repeatable.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// The request body, payload or frame, inline: a template where `{seq}` is the
    /// operation's number and `{rand}` a number drawn from the seed.
    #[arg(long, conflicts_with = "body_file", allow_hyphen_values = true)]
    pub body: Option<String>,
    /// The request body template, read from this file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Keep-alive connections (`http`, `h2c`, `unix`) or processes at once (`exec`).
    #[arg(long)]
    pub conns: Option<usize>,
    /// Frame delimiting of `unix:`: `u32be` (4-byte length prefix) or `line`.
    #[arg(long)]
    pub framing: Option<String>,
    /// A frame sent first on every new `unix:` connection (a template, seq 0).
    #[arg(long, allow_hyphen_values = true)]
    pub hello: Option<String>,
    /// Text the reply to `--hello` must contain.
    #[arg(long, requires = "hello", allow_hyphen_values = true)]
    pub hello_reply: Option<String>,
    /// Durable consumer of a `jetstream://` target: operations end at delivery (E2).
    #[arg(long)]
    pub consumer: Option<String>,
}

impl TargetFlags {
    /// The options these flags describe; `base` resolves a relative `--body-file`.
    pub fn options(&self, seed: u64, base: &Path) -> Result<TargetOptions> {
        let body = match (&self.body, &self.body_file) {
            (Some(b), _) => Some(b.clone()),
            (None, Some(path)) => Some(read_body_file(&base.join(path))?),
            (None, None) => None,
        };
        let headers = self
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>>>()?;
        let framing = match &self.framing {
            Some(f) => Some(Framing::parse(f).map_err(anyhow::Error::msg)?),
            None => None,
        };
        Ok(TargetOptions {
            method: self.method.clone(),
            headers,
            body,
            conns: check_conns(self.conns)?,
            seed,
            framing,
            hello: self.hello.clone(),
            hello_reply: self.hello_reply.clone(),
            consumer: self.consumer.clone(),
        })
    }
}

/// `conns` if given and in range, else the default.
pub fn check_conns(conns: Option<usize>) -> Result<usize> {
    match conns {
        None => Ok(targets::DEFAULT_CONNS),
        Some(n) if (1..=targets::MAX_CONNS).contains(&n) => Ok(n),
        Some(n) => bail!(
            "invalid conns {n}: expected 1 to {} connections",
            targets::MAX_CONNS
        ),
    }
}

/// `NAME:VALUE` split at the first colon, both sides trimmed; the error names the header.
pub fn parse_header(text: &str) -> Result<(String, String)> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => bail!(
            "invalid header {text:?}: expected NAME:VALUE, like content-type:application/json"
        ),
    }
}

/// A body template file, bounded and UTF-8.
pub fn read_body_file(path: &Path) -> Result<String> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading body file {}", path.display()))?
        .len();
    if len > MAX_BODY_FILE_BYTES {
        bail!(
            "invalid body file {}: {len} bytes, expected at most {MAX_BODY_FILE_BYTES}",
            path.display()
        );
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("reading body file {} (expected UTF-8 text)", path.display()))
}

/// Builds the target `spec` names, outside any runtime: network targets are opened on `rt`,
/// the runtime the load must then run on (they keep connection tasks there); `daemon:`
/// runs its own setup and takes no options.
pub fn resolve(rt: &Runtime, spec: &str, opts: &TargetOptions) -> Result<Arc<dyn Target>> {
    if spec.trim_start().starts_with("daemon:") {
        if *opts != with_seed(opts.seed) {
            bail!("invalid target {spec:?}: daemon: takes its settings in the spec, not as flags");
        }
        return crate::daemon_target::resolve(spec);
    }
    match rt.block_on(targets::from_spec(spec, opts)) {
        Ok(t) => Ok(t),
        Err(targets::TargetError::Spec(SpecError::UnknownKind { spec, known })) => bail!(
            "unknown target {spec:?}: expected one of {known}, {}",
            crate::daemon_target::SPEC_HELP
        ),
        Err(e) => Err(e.into()),
    }
}

fn with_seed(seed: u64) -> TargetOptions {
    TargetOptions {
        seed,
        ..TargetOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_split_at_the_first_colon() {
        assert_eq!(
            parse_header("x-a: b:c").unwrap(),
            ("x-a".to_string(), "b:c".to_string())
        );
        let e = parse_header("nocolon").unwrap_err().to_string();
        assert!(e.contains("\"nocolon\""), "{e}");
        assert!(parse_header(": v").is_err());
    }

    #[test]
    fn conns_out_of_range_are_refused_with_the_value() {
        assert_eq!(check_conns(None).unwrap(), targets::DEFAULT_CONNS);
        assert_eq!(check_conns(Some(3)).unwrap(), 3);
        let e = check_conns(Some(0)).unwrap_err().to_string();
        assert!(e.contains("conns 0"), "{e}");
        assert!(check_conns(Some(targets::MAX_CONNS + 1)).is_err());
    }

    #[test]
    fn flags_become_options() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.json"), "{\"id\":{seq}}").unwrap();
        let flags = TargetFlags {
            method: Some("PUT".into()),
            headers: vec!["a:1".into()],
            body_file: Some("b.json".into()),
            conns: Some(8),
            framing: Some("line".into()),
            ..TargetFlags::default()
        };
        let o = flags.options(7, dir.path()).unwrap();
        assert_eq!(o.body.as_deref(), Some("{\"id\":{seq}}"));
        assert_eq!(o.conns, 8);
        assert_eq!(o.seed, 7);
        assert_eq!(o.framing, Some(Framing::Line));
        assert_eq!(o.headers, vec![("a".to_string(), "1".to_string())]);
        let bad = TargetFlags {
            framing: Some("crlf".into()),
            ..TargetFlags::default()
        };
        let e = bad.options(1, dir.path()).unwrap_err().to_string();
        assert!(e.contains("\"crlf\""), "{e}");
        let missing = TargetFlags {
            body_file: Some("nope.txt".into()),
            ..TargetFlags::default()
        };
        let e = format!("{:#}", missing.options(1, dir.path()).unwrap_err());
        assert!(e.contains("nope.txt"), "{e}");
    }

    #[test]
    fn daemon_refuses_flags() {
        let rt = crate::harness::runtime().unwrap();
        let opts = TargetOptions {
            method: Some("GET".into()),
            ..TargetOptions::default()
        };
        let e = match resolve(&rt, "daemon:op=create", &opts) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("daemon:op=create"), "{e}");
        let e = match resolve(&rt, "ftp://x", &TargetOptions::default()) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("\"ftp://x\"") && e.contains("http://") && e.contains("daemon:"),
            "{e}"
        );
    }
}
