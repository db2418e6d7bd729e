//! Decoding: how the bytes a source receives become incident events.
//!
//! A body (or a stdin line) is framed into its top-level JSON values (one value, an array,
//! or NDJSON), nesting is bounded, and each value goes through the source's codec:
//!
//! - `incident` (default): the value is an incident event (the standard payload), passed
//!   through as it is;
//! - `alertmanager`: the value is Prometheus Alertmanager's webhook payload; each alert in
//!   it becomes one event;
//! - `mapped`: the value is any JSON object (a log event from Vector, Fluent Bit,
//!   syslog-ng…), mapped onto the incident model by the source's `mapping`.
//!
//! The codec is chosen explicitly per source: a body that looks like one format can
//! always be read as another, so guessing would be ambiguous.
//!
//! A body decodes whole or not at all: the first bad value fails it, with its number,
//! line and column and the field at fault, so a sender never has a body half-accepted.

pub mod alertmanager;
mod error;
internal_mod!(
    /// Splitting a body into its top-level JSON values; the depth limit.
    framing
);
internal_mod!(
    /// The `incident` codec.
    incident
);
pub mod mapping;

use serde::{Deserialize, Serialize};

use crate::error::{prefixed, FieldError};
use crate::event::{Decoded, IncidentEvent};

pub use self::alertmanager::{AlertmanagerConfig, AlertmanagerDecoder};
pub use self::error::DecodeError;
pub use self::incident::decode_incident;
pub use self::mapping::{MappingConfig, MappingDecoder};

/// Deepest nesting of arrays and objects accepted in an event, by default.
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// Which codec a source uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Incident events (the standard payload).
    #[default]
    Incident,
    /// Prometheus Alertmanager webhook payloads.
    Alertmanager,
    /// Any JSON objects, through `mapping`.
    Mapped,
}

/// How a source decodes what it receives (`decoding` in a source's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodingConfig {
    /// `incident`, `alertmanager` or `mapped`. Default: `incident`.
    #[serde(default)]
    pub codec: Codec,
    /// Options of the `alertmanager` codec. Default: see [`AlertmanagerConfig`].
    #[serde(default)]
    pub alertmanager: AlertmanagerConfig,
    /// The field mapping of the `mapped` codec; required with it. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<MappingConfig>,
    /// Deepest nesting of arrays and objects accepted in one value; deeper bodies are
    /// refused (400), none of their events taken. Default: 32.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
}

fn default_max_depth() -> usize {
    DEFAULT_MAX_DEPTH
}

impl Default for DecodingConfig {
    fn default() -> Self {
        DecodingConfig {
            codec: Codec::Incident,
            alertmanager: AlertmanagerConfig::default(),
            mapping: None,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

impl DecodingConfig {
    /// Checks the settings and builds the decoder. Field names are relative to the
    /// source (`decoding.mapping.summary`).
    pub fn validate(&self) -> Result<Decoder, Vec<FieldError>> {
        if self.max_depth == 0 {
            return Err(vec![FieldError::new("decoding.max_depth", "must be at least 1")]);
        }
        let codec = match self.codec {
            Codec::Incident => CodecImpl::Incident,
            Codec::Alertmanager => CodecImpl::Alertmanager(
                AlertmanagerDecoder::new(&self.alertmanager).map_err(|e| prefixed("decoding.alertmanager", e))?,
            ),
            Codec::Mapped => match &self.mapping {
                Some(mapping) => {
                    CodecImpl::Mapped(MappingDecoder::new(mapping).map_err(|e| prefixed("decoding.mapping", e))?)
                }
                None => {
                    return Err(vec![FieldError::new(
                        "decoding.mapping",
                        "`codec = \"mapped\"` needs a `mapping` table",
                    )])
                }
            },
        };
        Ok(Decoder { codec, max_depth: self.max_depth })
    }
}

/// A checked decoder: framing, the depth limit and a codec.
#[derive(Debug, Clone)]
pub struct Decoder {
    codec: CodecImpl,
    max_depth: usize,
}

#[derive(Debug, Clone)]
enum CodecImpl {
    Incident,
    Alertmanager(AlertmanagerDecoder),
    Mapped(MappingDecoder),
}

impl Default for Decoder {
    /// The `incident` codec with the default depth limit.
    fn default() -> Self {
        Decoder { codec: CodecImpl::Incident, max_depth: DEFAULT_MAX_DEPTH }
    }
}

impl Decoder {
    /// Decodes a whole body: every value in it, or an error for the first bad one.
    pub fn decode(&self, body: &[u8]) -> Result<Vec<IncidentEvent>, DecodeError> {
        Ok(self.decode_sized(body)?.into_iter().map(|decoded| decoded.incident).collect())
    }

    /// As [`Decoder::decode`], with each event's share of the bytes it came in (a value
    /// that yields several events splits its size between them), for buffer limits, and
    /// its identity when the codec knows one.
    pub fn decode_sized(&self, body: &[u8]) -> Result<Vec<Decoded>, DecodeError> {
        match self.decode_sized_within(body, DecodeCap::NONE) {
            Ok(events) => Ok(events),
            Err(CappedDecodeError::Invalid(e)) => Err(e),
            // Neither the count nor the sizes of a body's events can pass `usize::MAX`.
            Err(CappedDecodeError::OverCap { .. }) => unreachable!("an uncapped decode passed its cap"),
        }
    }

    /// As [`Decoder::decode_sized`], stopping as soon as the events decoded so far pass
    /// `cap` (more events, or more bytes of them, than it allows): a body of many small
    /// events takes several times its size in memory once decoded, so decoding what could
    /// never be taken is not finished. A bad value met before the cap is passed is
    /// reported as such; the values after that point are not decoded (and so not checked,
    /// beyond being well-formed JSON when the body is a JSON array).
    pub fn decode_sized_within(&self, body: &[u8], cap: DecodeCap) -> Result<Vec<Decoded>, CappedDecodeError> {
        if let CodecImpl::Incident = self.codec {
            match self.decode_incident_stream(body, cap) {
                Stream::Done(events) => return Ok(events),
                Stream::OverCap(over) => return Err(over),
                Stream::Other => {}
            }
        }
        let mut events = Vec::new();
        let mut bytes = 0u64;
        for (i, framed) in framing::frame(body, self.max_depth)?.into_iter().enumerate() {
            let text = framed.raw.get();
            let decoded = self.decode_value(text).map_err(|e| {
                let (line, column) = framed.position(body);
                e.within(i + 1, line, column)
            })?;
            let share = text.len() / decoded.len().max(1);
            bytes += (share * decoded.len()) as u64;
            events.extend(decoded.into_iter().map(|event| Decoded { size: share, ..event }));
            if cap.passed(events.len(), bytes) {
                return Err(CappedDecodeError::OverCap { events: events.len(), bytes });
            }
        }
        Ok(events)
    }

    /// The fast path for a body of incident events that is one object or NDJSON: a single
    /// pass, straight into events, keeping no positions. `None` for anything else (a JSON
    /// array, any error): the framed path then decodes it, or finds and explains what is
    /// wrong. Framing first and decoding each value after reads every byte twice, which
    /// was a third of the cost of taking a batch in.
    ///
    /// Stops with [`Stream::OverCap`] once the events read pass `cap`.
    fn decode_incident_stream(&self, body: &[u8], cap: DecodeCap) -> Stream {
        let Some(start) = body.iter().position(|b| !b.is_ascii_whitespace()) else { return Stream::Other };
        if body[start] == b'[' {
            return Stream::Other;
        }
        // Checked as UTF-8 once, whole: parsing from a `str` then skips the check string by
        // string, which costs more for an event's many short strings. A body that is not
        // UTF-8 goes to the framed path, which says where.
        let Ok(text) = std::str::from_utf8(body) else { return Stream::Other };
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<IncidentEvent>();
        let mut events = Vec::new();
        let mut end = 0;
        let mut bytes = 0u64;
        while let Some(next) = stream.next() {
            // The depth limit is checked on each event as it comes out of the parser (a
            // walk of its few untyped values) rather than by a pass over every byte before:
            // that pass was an eighth of the cost of decoding. serde_json's own limit (128)
            // keeps the parse itself within the stack; an event deeper than `max_depth` goes
            // to the framed path, which refuses the body and says where.
            let Ok(event) = next else { return Stream::Other };
            if event.nests_deeper_than(self.max_depth) {
                return Stream::Other;
            }
            // The value's own bytes, without the white space before it (as framing counts).
            let value_start = end + body[end..].iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
            end = stream.byte_offset();
            if events.is_empty() {
                // Room for as many events as the first one's size suggests: the vector is
                // sized about once instead of growing (and moving every event again) eight
                // times for a batch of 200. Never more than the cap lets through.
                events.reserve((body.len() / (end - value_start).max(1)).min(cap.events.saturating_add(1)));
            }
            events.push(Decoded::new(event, end - value_start));
            bytes += (end - value_start) as u64;
            if cap.passed(events.len(), bytes) {
                return Stream::OverCap(CappedDecodeError::OverCap { events: events.len(), bytes });
            }
        }
        if events.is_empty() {
            Stream::Other
        } else {
            Stream::Done(events)
        }
    }

    /// The events of one value, sizes not yet set. `alertmanager` and `mapped` events carry
    /// an identity when what identifies them is there; `incident` events never do (each gets
    /// a fresh `webhook-id`): a sender of standard payloads sends each event once, and the
    /// payload has nothing that identifies one event (`id` names the alert, and two distinct
    /// events of it, say two `alert-comment-added`, can be equal field for field).
    fn decode_value(&self, text: &str) -> Result<Vec<Decoded>, DecodeError> {
        match &self.codec {
            CodecImpl::Incident => decode_incident(text).map(|event| vec![Decoded::new(event, 0)]),
            CodecImpl::Alertmanager(decoder) => decoder.decode_identified(text),
            CodecImpl::Mapped(decoder) => decoder.decode_identified(text).map(|decoded| vec![decoded]),
        }
    }
}

/// What the single pass made of a body.
enum Stream {
    /// Every event of it.
    Done(Vec<Decoded>),
    /// It passed the cap.
    OverCap(CappedDecodeError),
    /// Not for the single pass (an array, an error): the framed path decides.
    Other,
}

/// The most a body may decode to: see [`Decoder::decode_sized_within`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeCap {
    /// Most events.
    pub events: usize,
    /// Most bytes of events (their shares of the body, as [`Decoder::decode_sized`] counts).
    pub bytes: u64,
}

impl DecodeCap {
    /// No cap.
    pub const NONE: DecodeCap = DecodeCap { events: usize::MAX, bytes: u64::MAX };

    fn passed(&self, events: usize, bytes: u64) -> bool {
        events > self.events || bytes > self.bytes
    }
}

/// Why [`Decoder::decode_sized_within`] gave no events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CappedDecodeError {
    /// The body did not decode.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    /// It holds more than the cap allows; decoding stopped there.
    #[error("more than the cap: {events} events ({bytes} bytes) decoded when decoding stopped")]
    OverCap {
        /// Events decoded when decoding stopped (the body holds at least as many).
        events: usize,
        /// Their bytes.
        bytes: u64,
    },
}

/// Decodes a body of incident events with the default settings.
pub fn decode_body(body: &[u8]) -> Result<Vec<IncidentEvent>, DecodeError> {
    Decoder::default().decode(body)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn one_object_an_array_and_ndjson() {
        let one = br#"{"eventType":"alert-created","id":"1"}"#;
        assert_eq!(decode_body(one).unwrap().len(), 1);
        let array = br#" [ {"eventType":"alert-created"}, {"eventType":"alert-resolved"} ] "#;
        assert_eq!(decode_body(array).unwrap().len(), 2);
        let ndjson = b"{\"eventType\":\"alert-created\"}\n{\"eventType\":\"alert-resolved\"}\n\n";
        assert_eq!(decode_body(ndjson).unwrap().len(), 2);
        let pretty = b"{\n  \"eventType\": \"alert-created\"\n}\n";
        assert_eq!(decode_body(pretty).unwrap().len(), 1);
    }

    #[test]
    fn the_single_pass_and_the_framed_path_agree() {
        let bodies: [&[u8]; 7] = [
            b"{\"eventType\":\"alert-created\",\"id\":\"1\"}",
            "{\"eventType\":\"alert-created\",\"summary\":\"caf\u{e9} \u{1f525}\"}".as_bytes(),
            // Not UTF-8 inside a string: refused, whichever path reads it.
            b"{\"eventType\":\"alert-created\"}\n{\"eventType\":\"alert-created\",\"summary\":\"\xff\"}\n",
            b"  {\"eventType\":\"alert-created\"}\n\n {\"eventType\":\"alert-resolved\",\"x\":[1,{\"y\":\"z\"}]}\n",
            b"{\"eventType\":\"alert-created\"}{\"eventType\":\"alert-created\",\"summary\":\"a \\\"b\\\" c\"}",
            b"[{\"eventType\":\"alert-created\"}]",
            b"{\"eventType\":\"alert-created\"}\n{\"id\":\"no type\"}\n",
        ];
        let decoder = Decoder::default();
        for body in bodies {
            let fast = match decoder.decode_incident_stream(body, DecodeCap::NONE) {
                Stream::Done(events) => Some(events),
                Stream::Other => None,
                Stream::OverCap(e) => panic!("no cap, yet {e}"),
            };
            let slow: Result<Vec<_>, _> = framing::frame(body, DEFAULT_MAX_DEPTH).and_then(|values| {
                values
                    .iter()
                    .map(|v| decode_incident(v.raw.get()).map(|e| Decoded::new(e, v.raw.get().len())))
                    .collect()
            });
            match (fast, slow) {
                (Some(fast), Ok(slow)) => assert_eq!(fast, slow, "{}", String::from_utf8_lossy(body)),
                (None, _) => assert!(body.trim_ascii_start().starts_with(b"[") || decoder.decode_sized(body).is_err()),
                (Some(_), Err(e)) => panic!("fast path took a body the framed path refuses: {e}"),
            }
        }
    }

    /// Any JSON value, a few levels deep.
    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            "[a-z\\[{\"]{0,3}".prop_map(Value::from)
        ];
        leaf.prop_recursive(5, 24, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,2}", inner, 0..3)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// An event with a nesting value in every place that takes one, each there or not.
    fn nesting_event() -> impl Strategy<Value = String> {
        use serde_json::{json, Value};
        let some = || prop::option::of(json());
        (
            some(),
            prop::option::of((some(), some(), some())),
            some(),
            prop::option::of(prop::collection::vec(some(), 0..3)),
            prop::option::of(prop::collection::vec(json(), 0..3)),
        )
            .prop_map(|(custom, source, user, links, responders)| {
                let mut event = json!({"eventType": "alert-created"});
                if let Some(x) = custom {
                    event["custom"] = x;
                }
                if let Some((id, policy_more, source_more)) = source {
                    let mut policy = json!({"name": "p"});
                    if let Some(x) = policy_more {
                        policy["more"] = x;
                    }
                    let mut source = json!({"escalationPolicy": policy});
                    if let Some(x) = id {
                        source["id"] = x;
                    }
                    if let Some(x) = source_more {
                        source["more"] = x;
                    }
                    event["alertSource"] = source;
                }
                if let Some(x) = user {
                    event["assignedTo"] = json!({"username": "u", "more": x});
                }
                if let Some(links) = links {
                    let link =
                        |x: Option<Value>| x.map_or_else(|| json!({"href": "h"}), |x| json!({"href": "h", "more": x}));
                    event["links"] = links.into_iter().map(link).collect();
                }
                if let Some(responders) = responders {
                    event["responders"] = Value::Array(responders);
                }
                event.to_string()
            })
    }

    proptest! {
        /// The depth limit checked on the decoded events (the single pass) refuses exactly
        /// the bodies that the count on the bytes (the framed path) refuses, at every limit
        /// around a body's depth, and names the same place.
        #[test]
        fn the_depth_limit_holds_on_the_single_pass_as_on_the_bytes(first in nesting_event(), second in nesting_event()) {
            let body = format!("{first}\n{second}\n");
            let depth = (1..200).find(|&max| framing::check_depth(body.as_bytes(), max).is_ok()).unwrap_or(200);
            for max_depth in depth.saturating_sub(2).max(1)..depth + 2 {
                let decoder = Decoder { max_depth, ..Decoder::default() };
                let framed = framing::check_depth(body.as_bytes(), max_depth);
                match decoder.decode_incident_stream(body.as_bytes(), DecodeCap::NONE) {
                    Stream::Done(events) => {
                        prop_assert!(framed.is_ok(), "{} taken at {}", body, max_depth);
                        prop_assert_eq!(events.len(), 2);
                    }
                    Stream::Other => prop_assert!(framed.is_err(), "{} left to the framed path at {}", body, max_depth),
                    Stream::OverCap(e) => prop_assert!(false, "no cap, yet {}", e),
                }
                match (decoder.decode_sized(body.as_bytes()), framed) {
                    (Ok(_), Ok(())) => {}
                    (Err(got), Err(expected)) => prop_assert_eq!(got, expected),
                    (got, expected) => prop_assert!(false, "{:?} against {:?} for {} at {}", got, expected, body, max_depth),
                }
            }
        }
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused_where_it_goes_wrong() {
        let body = b"{\"eventType\":\"alert-created\"}\n{\"eventType\":\"alert-created\",\"summary\":\"ok \xff\"}\n";
        let err = decode_body(body).unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert!(err.to_string().starts_with("line 2, column ") && err.message.contains("unicode"), "{err}");
    }

    #[test]
    fn errors_name_event_line_column_and_field() {
        let ndjson = b"{\"eventType\":\"alert-created\"}\n{\"eventType\":\"alert-created\",\"summary\":5}\n";
        let err = decode_body(ndjson).unwrap_err();
        assert_eq!(err.event, Some(2));
        assert_eq!(err.line, 2);
        assert_eq!(err.field.as_deref(), Some("summary"));
        assert!(err.to_string().starts_with("event 2 at line 2, column "), "{err}");

        let missing = b"[{\"eventType\":\"alert-created\"},\n  {\"id\":\"7\"}]";
        let err = decode_body(missing).unwrap_err();
        assert_eq!((err.event, err.line), (Some(2), 2));
        assert!(err.message.contains("eventType"), "{err}");

        let broken = b"{\"eventType\":\"alert-created\"}\n{\"eventType\": }\n";
        let err = decode_body(broken).unwrap_err();
        assert_eq!((err.event, err.line), (None, 2));

        let not_object = b"[\"hello\"]";
        assert_eq!(decode_body(not_object).unwrap_err().event, Some(1));
        assert!(decode_body(b"  \n").is_err());
    }

    #[test]
    fn decoding_stops_once_the_cap_is_passed() {
        let decoder = Decoder::default();
        let line = "{\"eventType\":\"alert-created\"}\n";
        let ndjson = line.repeat(10);
        let array = format!("[{}]", ndjson.trim_end().replace('\n', ","));
        let cap = |events, bytes| DecodeCap { events, bytes };
        for body in [ndjson.as_bytes(), array.as_bytes()] {
            let text = String::from_utf8_lossy(body);
            assert_eq!(decoder.decode_sized_within(body, cap(10, 290)).unwrap().len(), 10, "{text}");
            let over = decoder.decode_sized_within(body, cap(3, u64::MAX)).unwrap_err();
            assert_eq!(over, CappedDecodeError::OverCap { events: 4, bytes: 116 }, "{text}");
            let over = decoder.decode_sized_within(body, cap(100, 100)).unwrap_err();
            assert_eq!(over, CappedDecodeError::OverCap { events: 4, bytes: 116 }, "{text}");
        }
        // A bad value before the cap is passed is reported; one after it is not reached.
        let bad_first = format!("{{\"id\":\"x\"}}\n{}", line.repeat(5));
        let err = decoder.decode_sized_within(bad_first.as_bytes(), cap(3, u64::MAX)).unwrap_err();
        assert!(matches!(err, CappedDecodeError::Invalid(ref e) if e.event == Some(1)), "{err:?}");
        let bad_last = format!("{}{{\"id\":\"x\"}}\n", line.repeat(5));
        let err = decoder.decode_sized_within(bad_last.as_bytes(), cap(3, u64::MAX)).unwrap_err();
        assert!(matches!(err, CappedDecodeError::OverCap { events: 4, .. }), "{err:?}");
        // Alertmanager: one value, several events; the cap counts the events.
        let alertmanager = DecodingConfig { codec: Codec::Alertmanager, ..Default::default() }.validate().unwrap();
        let alert = r#"{"status":"firing","labels":{"alertname":"A"},"annotations":{},"startsAt":"2024-01-01T00:00:00Z","fingerprint":"f1"}"#;
        let payload = format!(
            r#"{{"version":"4","status":"firing","receiver":"r","groupKey":"g","alerts":[{alert},{alert},{alert}]}}"#
        );
        assert_eq!(alertmanager.decode_sized_within(payload.as_bytes(), cap(3, u64::MAX)).unwrap().len(), 3);
        let err = alertmanager.decode_sized_within(payload.as_bytes(), cap(2, u64::MAX)).unwrap_err();
        assert!(matches!(err, CappedDecodeError::OverCap { events: 3, .. }), "{err:?}");
    }

    #[test]
    fn incident_events_carry_no_identity_on_either_path() {
        let one = br#"{"eventType":"alert-created","id":"1"}"#;
        let array = br#"[{"eventType":"alert-created","id":"1"},{"eventType":"alert-created","id":"1"}]"#;
        for body in [&one[..], &array[..]] {
            let decoded = Decoder::default().decode_sized(body).unwrap();
            assert!(decoded.iter().all(|d| d.identity.is_none()), "{decoded:?}");
        }
    }

    #[test]
    fn mapped_codec_needs_a_mapping_and_depth_must_be_positive() {
        let config = DecodingConfig { codec: Codec::Mapped, ..Default::default() };
        assert_eq!(config.validate().unwrap_err()[0].field, "decoding.mapping");
        let config = DecodingConfig { max_depth: 0, ..Default::default() };
        assert_eq!(config.validate().unwrap_err()[0].field, "decoding.max_depth");
    }
}
