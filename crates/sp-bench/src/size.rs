//! Message sizes on the command line and in the table: `64`, `1k`, `64KiB`, `1m` in, `64 B`,
//! `64 KiB`, `1 MiB` out (binary units).

/// `64 B`, `64 KiB`, `1 MiB`.
pub fn fmt_size(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// Parses a message size: `64`, `1k`/`1KiB` (KiB), `1m`/`1MiB` (MiB).
///
/// # Errors
/// A message naming the bad input.
pub fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (digits, shift) = match t.strip_suffix('k') {
        Some(d) => (d, 10),
        None => match t.strip_suffix('m') {
            Some(d) => (d, 20),
            None => (t, 0),
        },
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {text:?} (try 64, 1k, 64k, 1m)"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("size too large: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999m").is_err());
        assert_eq!(fmt_size(65536), "64 KiB");
        assert_eq!(fmt_size(1 << 20), "1 MiB");
        assert_eq!(fmt_size(100), "100 B");
    }
}
