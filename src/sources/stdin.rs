//! The `stdin` source: NDJSON incident events on standard input.
//!
//! One JSON value per line, decoded by the source's `decoding` (incident events by
//! default; see [`super::decode`]). Blank
//! lines are skipped; a line that does not decode (bad JSON, a missing `eventType`,
//! invalid UTF-8, longer than [`MAX_LINE_BYTES`]) is logged with its number and skipped,
//! and reading goes on. Events are sent in small batches — up to [`BATCH_SIZE`], or
//! whatever has been read when no more input is ready — so a slow sink holds the reading
//! back. The source stops at end of input, when shut down, or when its output closes.

use std::io;

use async_trait::async_trait;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::decode::{Decoder, DecodingConfig};
use super::validated::ValidatedSource;
use crate::buffer::SourceSender;
use crate::component::{Source, SourceConfig, SourceContext};
use crate::error::{BuildError, FieldError};
use crate::event::Decoded;

/// Most events sent in one batch.
pub const BATCH_SIZE: usize = 128;

/// Longest line taken, in bytes (newline excluded); a longer line is rejected whole.
pub const MAX_LINE_BYTES: usize = 10 * 1024 * 1024;

/// `type = "stdin"`: reads NDJSON incident events from standard input until EOF.
///
/// ```toml
/// [sources.in]
/// type = "stdin"
/// decoding.codec = "incident"   # the default
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {
    /// How lines become incident events. Default: incident events, depth limit 32.
    #[serde(default)]
    pub decoding: DecodingConfig,
}

impl StdinSourceConfig {
    /// Checks the config and builds the decoder; every problem is reported.
    pub fn validate(&self) -> Result<ValidatedStdin, Vec<FieldError>> {
        Ok(ValidatedStdin { config: self.clone(), decoder: self.decoding.validate()? })
    }
}

/// A `stdin` source's config, checked, with its decoder built.
#[derive(Debug, Clone)]
pub struct ValidatedStdin {
    /// The config it came from.
    pub config: StdinSourceConfig,
    decoder: Decoder,
}

/// Compared by the config they came from.
impl PartialEq for ValidatedStdin {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl ValidatedSource for ValidatedStdin {
    fn decoder(&self) -> &Decoder {
        &self.decoder
    }
}

#[async_trait]
impl SourceConfig for ValidatedStdin {
    async fn build(&self, cx: SourceContext) -> Result<Source, BuildError> {
        let decoder = self.decoder.clone();
        Ok(Box::pin(async move {
            let reader = BufReader::new(tokio::io::stdin());
            let (summary, result) = read_lines(&cx.name, reader, &decoder, &cx.out, &cx.shutdown).await;
            info!(
                source = %cx.name,
                lines = summary.lines,
                accepted = summary.accepted,
                rejected = summary.rejected,
                "stdin source stopped"
            );
            result
        }))
    }
}

/// Validate, then build: for hosts that hold a config rather than a checked one.
#[async_trait]
impl SourceConfig for StdinSourceConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BuildError> {
        self.validate().map_err(BuildError::invalid)?.build(cx).await
    }
}

/// What [`read_ndjson`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadSummary {
    /// Lines read, blank ones included.
    pub lines: usize,
    /// Events decoded and sent on.
    pub accepted: usize,
    /// Lines that did not decode.
    pub rejected: usize,
}

/// The reading loop, generic so tests can feed it any reader.
///
/// Returns at end of input, once `shutdown` is cancelled (events already read are still
/// sent), when `out` closes, or on a read error (logged).
pub async fn read_ndjson<R: AsyncBufRead + Unpin>(
    name: &str,
    reader: R,
    decoder: &Decoder,
    out: &SourceSender,
    shutdown: &CancellationToken,
) -> ReadSummary {
    read_lines(name, reader, decoder, out, shutdown).await.0
}

/// [`read_ndjson`], also telling whether reading failed (`Err` only for a read error).
async fn read_lines<R: AsyncBufRead + Unpin>(
    name: &str,
    mut reader: R,
    decoder: &Decoder,
    out: &SourceSender,
    shutdown: &CancellationToken,
) -> (ReadSummary, Result<(), ()>) {
    let mut summary = ReadSummary::default();
    let mut lines = LineReader::default();
    let mut batch: Vec<Decoded> = Vec::new();
    let mut result = Ok(());

    loop {
        if shutdown.is_cancelled() {
            debug!(source = %name, "stdin source shut down");
            break;
        }
        let next = if batch.is_empty() {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => continue,
                next = lines.next(&mut reader) => next,
            }
        } else {
            // Take what is ready now; when the input has to be waited for, send first.
            // Dropping a pending `next` loses nothing: its progress is kept in `lines`.
            match lines.next(&mut reader).now_or_never() {
                Some(next) => next,
                None => {
                    if send(name, out, &mut batch, &mut summary).await.is_err() {
                        return (summary, Ok(()));
                    }
                    continue;
                }
            }
        };
        let line = match next {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                warn!(source = %name, error = %e, "stdin source could not read its input");
                result = Err(());
                break;
            }
        };
        summary.lines += 1;
        let number = summary.lines;
        match decode_line(decoder, line) {
            Ok(events) if events.is_empty() => {}
            Ok(events) => {
                batch.extend(events);
                if batch.len() >= BATCH_SIZE && send(name, out, &mut batch, &mut summary).await.is_err() {
                    return (summary, Ok(()));
                }
            }
            Err(reason) => {
                summary.rejected += 1;
                warn!(source = %name, line = number, reason = %reason, "stdin source rejected a line");
            }
        }
    }
    if !batch.is_empty() {
        let _ = send(name, out, &mut batch, &mut summary).await;
    }
    (summary, result)
}

/// Sends the batch; `Err` when the output closed (the events are then dropped).
async fn send(name: &str, out: &SourceSender, batch: &mut Vec<Decoded>, summary: &mut ReadSummary) -> Result<(), ()> {
    let events = std::mem::take(batch);
    let count = events.len();
    match out.send(events, None).await {
        Ok(report) => {
            // An event larger than a sink's whole buffer is left out (and logged).
            summary.accepted += report.events;
            Ok(())
        }
        Err(e) => {
            warn!(source = %name, dropped = count, "stdin source stopped: {e}");
            Err(())
        }
    }
}

/// One line as read: its bytes, or how long it was when over [`MAX_LINE_BYTES`].
#[derive(Debug)]
enum RawLine {
    Bytes(Vec<u8>),
    TooLong(usize),
}

/// Decodes a line: no events for a blank one, `Err` with the reason for a bad one.
fn decode_line(decoder: &Decoder, line: RawLine) -> Result<Vec<Decoded>, String> {
    let bytes = match line {
        RawLine::Bytes(bytes) => bytes,
        RawLine::TooLong(len) => {
            return Err(format!("line of {len} bytes is longer than the limit of {MAX_LINE_BYTES} bytes"))
        }
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("invalid UTF-8: {e}"))?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    decoder.decode_sized(text.as_bytes()).map_err(|e| e.to_string())
}

/// Splits input into lines, keeping its progress in itself so that a `next` future may
/// be dropped at any point and the next call picks up where it stopped.
///
/// Hand-written because tokio-util's `LinesCodec` ends its stream at the first error
/// (invalid UTF-8, an over-long line), and one bad line must not stop the source.
#[derive(Debug, Default)]
struct LineReader {
    /// The line read so far.
    buf: Vec<u8>,
    /// Bytes of the current line, kept or not (it is over the limit when `> MAX_LINE_BYTES`).
    len: usize,
}

impl LineReader {
    /// The next line without its newline (`\n` or `\r\n`), or `None` at end of input.
    async fn next<R: AsyncBufRead + Unpin>(&mut self, reader: &mut R) -> io::Result<Option<RawLine>> {
        loop {
            // `fill_buf` is cancel safe; everything after it is synchronous.
            let available = match reader.fill_buf().await {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                // End of input: a last line without a newline still counts.
                return Ok((self.len > 0).then(|| self.take()));
            }
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            self.len += chunk.len();
            if self.len <= MAX_LINE_BYTES {
                self.buf.extend_from_slice(chunk);
            } else {
                self.buf = Vec::new();
            }
            let used = chunk.len() + usize::from(done);
            reader.consume(used);
            if done {
                return Ok(Some(self.take()));
            }
        }
    }

    fn take(&mut self) -> RawLine {
        let len = std::mem::take(&mut self.len);
        let mut bytes = std::mem::take(&mut self.buf);
        if len > MAX_LINE_BYTES {
            return RawLine::TooLong(len);
        }
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        RawLine::Bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::io::{AsyncRead, ReadBuf};

    use super::*;
    use crate::buffer::{event_channel, EventReceiver};
    use crate::event::Event;

    fn ids(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| e.incident.id.as_deref().unwrap_or_default().to_string()).collect()
    }

    async fn drain(rx: &mut EventReceiver) -> Vec<Event> {
        let mut events = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            events.push(event);
        }
        events
    }

    #[tokio::test]
    async fn good_blank_and_bad_lines() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"eventType\":\"alert-created\",\"id\":\"1\"}\n");
        input.extend_from_slice(b"\n");
        input.extend_from_slice(b"   \r\n");
        input.extend_from_slice(b"{\"eventType\": }\n");
        input.extend_from_slice(b"{\"id\":\"no-type\"}\n");
        input.extend_from_slice(b"{\"eventType\":\"alert-created\",\"summary\":\"\xff\xfe\"}\n");
        input.extend_from_slice(b"{\"eventType\":\"alert-resolved\",\"id\":\"2\"}\r\n");
        input.extend_from_slice(b"{\"eventType\":\"alert-resolved\",\"id\":\"3\"}");

        let (out, mut rx) = event_channel(16);
        let summary = read_ndjson("in", &input[..], &Decoder::default(), &out, &CancellationToken::new()).await;
        drop(out);
        assert_eq!(summary, ReadSummary { lines: 8, accepted: 3, rejected: 3 });
        assert_eq!(ids(&drain(&mut rx).await), ["1", "2", "3"]);
    }

    #[test]
    fn bad_lines_give_reasons() {
        let reason = decode_line(&Decoder::default(), RawLine::Bytes(b"{\"id\":\"1\"}".to_vec())).unwrap_err();
        assert!(reason.contains("eventType"), "{reason}");
        let reason = decode_line(&Decoder::default(), RawLine::Bytes(b"\xff".to_vec())).unwrap_err();
        assert!(reason.contains("UTF-8"), "{reason}");
        let reason = decode_line(&Decoder::default(), RawLine::TooLong(MAX_LINE_BYTES + 1)).unwrap_err();
        assert!(reason.contains("longer"), "{reason}");
        assert!(decode_line(&Decoder::default(), RawLine::Bytes(b" \t".to_vec())).unwrap().is_empty());
    }

    #[tokio::test]
    async fn over_long_lines_are_rejected_and_reading_goes_on() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.push(b'\n');
        input.extend_from_slice(b"{\"eventType\":\"alert-created\",\"id\":\"after\"}\n");
        let (out, mut rx) = event_channel(4);
        let reader = tokio::io::BufReader::with_capacity(4096, &input[..]);
        let summary = read_ndjson("in", reader, &Decoder::default(), &out, &CancellationToken::new()).await;
        drop(out);
        assert_eq!(summary, ReadSummary { lines: 2, accepted: 1, rejected: 1 });
        assert_eq!(ids(&drain(&mut rx).await), ["after"]);
    }

    #[tokio::test]
    async fn many_lines_are_batched_and_back_pressured() {
        let count = BATCH_SIZE * 2 + 5;
        let input: String =
            (0..count).map(|i| format!("{{\"eventType\":\"alert-created\",\"id\":\"{i}\"}}\n")).collect();
        // A channel smaller than a batch: the reader can only finish if it waits for room.
        let (out, mut rx) = event_channel(3);
        let reading = tokio::spawn(async move {
            read_ndjson("in", input.as_bytes(), &Decoder::default(), &out, &CancellationToken::new()).await
        });
        let mut received = Vec::new();
        while received.len() < count {
            let event = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
            received.push(event);
        }
        let summary = tokio::time::timeout(Duration::from_secs(5), reading).await.unwrap().unwrap();
        assert_eq!(summary, ReadSummary { lines: count, accepted: count, rejected: 0 });
        let expected: Vec<String> = (0..count).map(|i| i.to_string()).collect();
        assert_eq!(ids(&received), expected);
    }

    /// Hands out its chunks one per read, then waits forever (an open, idle stdin).
    struct Trickle {
        chunks: Vec<&'static [u8]>,
    }

    impl AsyncRead for Trickle {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            if self.chunks.is_empty() {
                return Poll::Pending;
            }
            let chunk = self.chunks.remove(0);
            buf.put_slice(chunk);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn events_go_out_while_input_waits_and_shutdown_stops_reading() {
        let reader = BufReader::new(Trickle {
            chunks: vec![
                b"{\"eventType\":\"alert-created\",\"id\":\"1\"}\n{\"eventType\":\"alert-cr",
                b"eated\",\"id\":\"2\"}\n{\"eventType\":\"alert-created\",\"id\":\"3\"}\n",
                b"{\"eventType\":\"alert-created\",\"id\":\"partial",
            ],
        });
        let (out, mut rx) = event_channel(16);
        let shutdown = CancellationToken::new();
        let reading = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { read_ndjson("in", reader, &Decoder::default(), &out, &shutdown).await }
        });
        // The input never ends, yet what was read arrives.
        let mut received = Vec::new();
        for _ in 0..3 {
            received.push(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap());
        }
        assert_eq!(ids(&received), ["1", "2", "3"]);
        assert!(!reading.is_finished());

        shutdown.cancel();
        let summary = tokio::time::timeout(Duration::from_secs(5), reading).await.unwrap().unwrap();
        assert_eq!(summary, ReadSummary { lines: 3, accepted: 3, rejected: 0 });
        // The reader (and with it the sender) is gone: the channel closes.
        assert!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn closed_output_stops_reading() {
        let input = "{\"eventType\":\"alert-created\"}\n".repeat(BATCH_SIZE * 3);
        let (out, rx) = event_channel(1);
        drop(rx);
        let summary = tokio::time::timeout(
            Duration::from_secs(5),
            read_ndjson("in", input.as_bytes(), &Decoder::default(), &out, &CancellationToken::new()),
        )
        .await
        .unwrap();
        assert_eq!(summary.accepted, 0);
        assert!(summary.lines <= BATCH_SIZE, "stopped at the first send, read {}", summary.lines);
    }

    #[test]
    fn config_takes_no_options() {
        let config: StdinSourceConfig = toml::from_str("").unwrap();
        assert_eq!(config, StdinSourceConfig::default());
        assert!(toml::from_str::<StdinSourceConfig>("path = \"x\"").is_err());
    }
}
