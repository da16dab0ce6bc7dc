//! Number formatting for reports: stable, readable, and the same on every machine.

/// Formats `v` for a table cell with its unit: integers get thousands separators
/// (`50,000 ops/s`), others keep about four significant digits (`0.0123 ms`, `612.3 µs`).
pub fn number(v: f64, unit: &str) -> String {
    let body = plain(v);
    match unit {
        "" => body,
        "%" => format!("{body}%"),
        u => format!("{body} {u}"),
    }
}

/// Formats `v` without a unit (see [`number`]).
pub fn plain(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if (v.fract() == 0.0 && a < 1e15) || a >= 1000.0 {
        return grouped(v.round());
    }
    let decimals = if a >= 100.0 {
        1
    } else if a >= 10.0 {
        2
    } else if a >= 1.0 {
        3
    } else {
        // Four significant digits below one, at most nine decimals.
        (3 - a.log10().floor() as i32).clamp(1, 9) as usize
    };
    let s = format!("{v:.decimals$}");
    // Drop trailing zeros after the point, but keep at least one decimal digit.
    let trimmed = s.trim_end_matches('0');
    if trimmed.ends_with('.') {
        format!("{trimmed}0")
    } else {
        trimmed.to_string()
    }
}

fn grouped(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if v < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats a byte count in binary units: `1.5 GiB`, `312.0 MiB`, `512 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_readably() {
        assert_eq!(number(50000.0, "ops/s"), "50,000 ops/s");
        assert_eq!(number(-1234567.0, ""), "-1,234,567");
        assert_eq!(number(1234.56, "µs"), "1,235 µs");
        assert_eq!(number(612.34, "µs"), "612.3 µs");
        assert_eq!(number(99.95, "%"), "99.95%");
        assert_eq!(number(1.5, "ms"), "1.5 ms");
        assert_eq!(number(0.012346, "ms"), "0.01235 ms");
        assert_eq!(number(0.0, "ms"), "0 ms");
        assert_eq!(number(7.0, ""), "7");
        assert_eq!(plain(2.0004), "2.0");
    }

    #[test]
    fn formats_bytes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(24 * 1024 * 1024 * 1024), "24.0 GiB");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
