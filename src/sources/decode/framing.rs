//! Framing: splitting a body into its top-level JSON values, with where each starts, and
//! refusing nesting deeper than the configured limit before anything is parsed (the
//! `incident` codec's single pass checks each decoded event instead: `IncidentEvent::nests_deeper_than`).
//!
//! A body is one JSON value, a JSON array of values, or NDJSON (values separated by
//! whitespace/newlines).

use serde_json::value::RawValue;

use super::error::DecodeError;

/// One top-level value of a body.
#[derive(Debug, Clone, Copy)]
pub struct Framed<'a> {
    /// The value's JSON text.
    pub raw: &'a RawValue,
    /// Byte offset where it starts in the body.
    pub offset: usize,
}

impl Framed<'_> {
    /// Line and column (1-based) where the value starts in `body`. Computed on demand:
    /// only errors need it, and scanning the body for every value would make decoding a
    /// batch quadratic.
    pub fn position(&self, body: &[u8]) -> (usize, usize) {
        position_at(body, self.offset)
    }
}

/// Splits `body` into its values. `max_depth` bounds how deeply arrays and objects nest
/// inside each value (the array around a batch does not count).
pub fn frame(body: &[u8], max_depth: usize) -> Result<Vec<Framed<'_>>, DecodeError> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let is_array = match start.map(|i| body[i]) {
        None => return Err(DecodeError::at(1, 1, "the body holds no event")),
        Some(b) => b == b'[',
    };
    check_depth(body, max_depth + usize::from(is_array))?;
    let raws: Vec<&RawValue> = if is_array {
        serde_json::from_slice(body).map_err(|e| DecodeError::from_json(&e))?
    } else {
        serde_json::Deserializer::from_slice(body)
            .into_iter::<&RawValue>()
            .collect::<Result<_, _>>()
            .map_err(|e| DecodeError::from_json(&e))?
    };
    Ok(raws
        .into_iter()
        .map(|raw| {
            let offset = (raw.get().as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
            Framed { raw, offset }
        })
        .collect())
}

/// Refuses nesting deeper than `max_depth`, naming where it goes too deep.
///
/// Hand-written because serde_json's own recursion limit is fixed (128) and cannot be
/// lowered. One pass over the bytes; string contents, which are most of an event's bytes,
/// are skipped eight bytes at a time ([`next_quote_or_backslash`]).
pub fn check_depth(body: &[u8], max_depth: usize) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'"' => {
                // Skip to the closing quote: past every `\x` escape pair.
                i += 1;
                loop {
                    match next_quote_or_backslash(&body[i.min(body.len())..]) {
                        None => return Ok(()), // unterminated: the parser reports it
                        Some(at) if body[i + at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at;
                            break;
                        }
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    let (line, column) = position_at(body, i);
                    return Err(DecodeError::at(
                        line,
                        column,
                        format!("JSON nests deeper than the limit of {max_depth}"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Where the first `"` or `\` in `bytes` is.
///
/// Eight bytes at a time with the classic "has a zero byte" bit trick (a word XOR the byte
/// sought has a zero byte where it occurs; the lowest flagged byte is always a true match).
/// Hand-written: `memchr2` does this with SIMD but pays a set-up per call that an event's
/// short strings do not win back (a `cargo bench` A/B showed no gain); this takes half
/// the instructions of a byte loop (callgrind) and costs nothing to start.
fn next_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7]]);
        let (q, b) = (word ^ QUOTES, word ^ BACKSLASHES);
        let found = ((q.wrapping_sub(ONES) & !q) | (b.wrapping_sub(ONES) & !b)) & HIGHS;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks.remainder().iter().position(|&c| c == b'"' || c == b'\\').map(|at| offset + at)
}

fn position_at(body: &[u8], offset: usize) -> (usize, usize) {
    let before = &body[..offset.min(body.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    #[test]
    fn frames_objects_arrays_and_ndjson_with_positions() {
        let framed = frame(b"{\"a\":1}\n  {\"b\":2}", 8).unwrap();
        let body = b"{\"a\":1}\n  {\"b\":2}";
        assert_eq!(framed.iter().map(|f| f.position(body)).collect::<Vec<_>>(), [(1, 1), (2, 3)]);
        let framed = frame(b"[{\"a\":1},\n {\"b\":2}]", 8).unwrap();
        let body = b"[{\"a\":1},\n {\"b\":2}]";
        assert_eq!(framed.iter().map(|f| f.position(body)).collect::<Vec<_>>(), [(1, 2), (2, 2)]);
        assert!(frame(b" \n ", 8).is_err());
    }

    #[test]
    fn depth_is_limited_and_strings_do_not_count() {
        assert!(frame(br#"{"a":{"b":{"c":1}}}"#, 3).is_ok());
        let err = frame(br#"{"a":{"b":{"c":{"d":1}}}}"#, 3).unwrap_err();
        assert_eq!((err.line, err.column), (1, 16));
        assert!(err.message.contains("deeper than the limit of 3"), "{err}");
        assert!(frame(br#"{"a":"[[[[[[[[{{{{\"]]]"}"#, 1).is_ok());
        // Escaped quotes and backslashes inside strings do not end them.
        assert!(check_depth(br#"{"a":"\\","b":"\"[[","c":"x\\\"{{"}"#, 1).is_ok());
        let err = check_depth(br#"{"a":"\\",  "b":[{"c":1}]}"#, 2).unwrap_err();
        assert_eq!(err.column, 18);
        // An unterminated string ends the scan (the parser reports it).
        assert!(check_depth(br#"{"a":"\"#, 1).is_ok());
        // The array around a batch does not count towards the limit.
        assert!(frame(br#"[{"a":1}]"#, 1).is_ok());
    }

    fn depth(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    proptest::proptest! {
        /// The eight-byte search finds the same first `"` or `\\` as a plain search.
        #[test]
        fn word_search_agrees_with_a_byte_search(bytes in proptest::collection::vec(
            proptest::prop_oneof![proptest::num::u8::ANY, proptest::strategy::Just(b'"'), proptest::strategy::Just(b'\\'), proptest::strategy::Just(0x21u8), proptest::strategy::Just(0x5bu8)],
            0..40,
        )) {
            let plain = bytes.iter().position(|&c| c == b'"' || c == b'\\');
            proptest::prop_assert_eq!(next_quote_or_backslash(&bytes), plain);
        }

        /// The scan agrees with the real nesting depth, whatever the strings hold.
        #[test]
        fn scan_agrees_with_the_nesting_depth(
            value in proptest::prop_oneof![
                proptest::string::string_regex(r#"[\[\]{}"\\a ]{0,20}"#).unwrap().prop_map(serde_json::Value::from),
                proptest::num::i64::ANY.prop_map(serde_json::Value::from),
            ].prop_recursive(6, 40, 4, |inner| proptest::prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(
                    proptest::string::string_regex(r#"[\[{"\\k]{0,4}"#).unwrap(), inner, 0..4,
                ).prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]),
            limit in 0usize..8,
        ) {
            let text = serde_json::to_vec(&value).unwrap();
            proptest::prop_assert_eq!(check_depth(&text, limit).is_ok(), depth(&value) <= limit, "{}", String::from_utf8_lossy(&text));
        }
    }
}
