//! `webhook-sink dead-letters list|replay|purge`: what could never be delivered.
//!
//! The store is opened directly, so these commands need the pipeline stopped (a running
//! `webhook-sink run` holds it; the error says so).
//!
//! A stored dead letter that does not decode is skipped and reported on stderr with its
//! number (`purge --seq N` deletes it); the others are worked on as usual. Output to a pipe
//! that closes early (`list | head -1`) ends `list` quietly.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::{build_sink, load, sink_spec};
use crate::component::StreamSink;
use crate::config::PipelineConfig;
use crate::dead_letters::{store_path, DeadLetters};
use crate::event::{Event, IncidentEvent, Outcome};
use crate::storage::dead_letters::{CorruptLetter, DeadLetter, DeadLetterStore};

/// Writes a line to stdout; an error (a closed pipe) is ignored, the work goes on.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// What to do with dead letters.
#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters (oldest first).
    List {
        #[command(flatten)]
        select: Select,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters again through their sink's normal path (filters aside); the
    /// delivered ones are removed, the others go back with their new reason.
    Replay {
        #[command(flatten)]
        select: Select,
    },
    /// Delete dead letters.
    Purge {
        #[command(flatten)]
        select: Select,
    },
}

/// Which dead letters.
#[derive(Debug, Args)]
pub struct Select {
    /// The pipeline file (its `data_dir` holds the dead letters).
    #[arg(long, short)]
    config: std::path::PathBuf,
    /// Only this sink's.
    #[arg(long)]
    sink: Option<String>,
    /// Only these (by the number `list` shows); repeatable.
    #[arg(long = "seq")]
    seqs: Vec<u64>,
    /// At most this many, oldest first.
    #[arg(long)]
    limit: Option<usize>,
}

/// Runs a `dead-letters` command.
pub async fn run(command: DeadLetterCommand) -> Result<ExitCode, String> {
    match command {
        DeadLetterCommand::List { select, json } => {
            let (_, store, letters, corrupt) = open(&select)?;
            drop(store);
            report_corrupt(&corrupt, "skipped");
            match print_list(&letters, json) {
                // The reader went away (`| head`): what it wanted was written.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                Err(e) => Err(format!("cannot write the list: {e}")),
                Ok(()) => Ok(ExitCode::SUCCESS),
            }
        }
        DeadLetterCommand::Purge { select } => {
            let (_, store, letters, corrupt) = open(&select)?;
            let mut seqs: Vec<u64> = letters.iter().map(|l| l.seq).collect();
            // A corrupt letter is purged when named by `--seq`, or when everything is purged.
            let (doomed, kept): (Vec<CorruptLetter>, Vec<CorruptLetter>) = corrupt
                .into_iter()
                .partition(|c| select.seqs.contains(&c.seq) || (select.sink.is_none() && select.seqs.is_empty()));
            seqs.extend(doomed.iter().map(|c| c.seq));
            report_corrupt(&kept, "kept (its sink cannot be read)");
            let removed = store.remove(&seqs).map_err(|e| e.to_string())?;
            say!("purged {removed} dead letter{}", plural(removed));
            Ok(ExitCode::SUCCESS)
        }
        DeadLetterCommand::Replay { select } => replay(&select).await,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The store, the selected letters, and the stored letters that do not decode.
type Opened = (PipelineConfig, Arc<DeadLetterStore>, Vec<DeadLetter>, Vec<CorruptLetter>);

/// Loads the config, opens the store and selects the letters.
fn open(select: &Select) -> Result<Opened, String> {
    let config = load(&select.config)?;
    if let Some(sink) = &select.sink {
        sink_spec(&config, sink)?;
    }
    let path = store_path(&config.data_dir);
    if !path.exists() {
        return Ok((config, Arc::new(open_store(&path)?), Vec::new(), Vec::new()));
    }
    let store = Arc::new(open_store(&path)?);
    let (mut letters, mut corrupt) = store.scan(select.sink.as_deref()).map_err(|e| e.to_string())?;
    if !select.seqs.is_empty() {
        letters.retain(|l| select.seqs.contains(&l.seq));
        corrupt.retain(|c| select.seqs.contains(&c.seq));
    }
    if let Some(limit) = select.limit {
        letters.truncate(limit);
    }
    Ok((config, store, letters, corrupt))
}

/// Tells on stderr which stored letters do not decode, and how to delete them.
fn report_corrupt(corrupt: &[CorruptLetter], what: &str) {
    for c in corrupt {
        eprintln!(
            "warning: dead letter {} does not decode ({}); {what}. `webhook-sink dead-letters purge --seq {}` deletes it",
            c.seq, c.error, c.seq
        );
    }
}

fn open_store(path: &Path) -> Result<DeadLetterStore, String> {
    DeadLetterStore::open(path).map_err(|e| match e {
        crate::storage::StorageError::Locked { .. } => {
            format!("{e}; stop `webhook-sink run` before working on its dead letters")
        }
        other => other.to_string(),
    })
}

fn print_list(letters: &[DeadLetter], json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for letter in letters {
            writeln!(out, "{}", serde_json::to_string(letter).unwrap_or_default())?;
        }
        return out.flush();
    }
    if letters.is_empty() {
        writeln!(out, "no dead letters")?;
        return out.flush();
    }
    writeln!(
        out,
        "{:>5}  {:<12} {:<20} {:>6} {:>8}  {:<36} {:<22} reason",
        "seq", "sink", "time", "status", "attempts", "webhook-id", "event"
    )?;
    for l in letters {
        let status = l.last_status.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        let event = format!(
            "{} {}",
            l.event.get("id").and_then(|v| v.as_str()).unwrap_or("-"),
            l.event.get("eventType").and_then(|v| v.as_str()).unwrap_or("-")
        );
        let digest = l.digest.as_ref().map(|id| format!(" [digest {id}]")).unwrap_or_default();
        writeln!(
            out,
            "{:>5}  {:<12} {:<20} {:>6} {:>8}  {:<36} {:<22} {}{}",
            l.seq, l.sink, l.time, status, l.attempts, l.webhook_id, event, l.reason, digest
        )?;
    }
    writeln!(out, "{} dead letter{}", letters.len(), plural(letters.len()))?;
    out.flush()
}

/// The letters in replay order, in groups: the letters of one digest (same sink, same
/// digest id, stored together) form one group, any other letter a group of its own.
fn digest_groups(letters: Vec<DeadLetter>) -> Vec<Vec<DeadLetter>> {
    let mut groups: Vec<Vec<DeadLetter>> = Vec::new();
    for letter in letters {
        match groups.last_mut() {
            Some(group)
                if letter.digest.is_some() && group[0].digest == letter.digest && group[0].sink == letter.sink =>
            {
                group.push(letter)
            }
            _ => groups.push(vec![letter]),
        }
    }
    groups
}

async fn replay(select: &Select) -> Result<ExitCode, String> {
    let (config, store, letters, corrupt) = open(select)?;
    report_corrupt(&corrupt, "not replayed");
    let dead_letters = Arc::new(DeadLetters::with_store(store.clone()));
    let mut sinks: HashMap<String, Box<dyn StreamSink>> = HashMap::new();
    let (mut delivered, mut failed) = (0usize, 0usize);
    for group in digest_groups(letters) {
        let sink_name = group[0].sink.clone();
        if !sinks.contains_key(&sink_name) {
            if config.sink(&sink_name).is_none() {
                for letter in &group {
                    say!("seq {}: sink `{}` is no longer in the config; kept", letter.seq, letter.sink);
                }
                failed += group.len();
                continue;
            }
            let sink = build_sink(&config, &sink_name, dead_letters.clone()).await?;
            sinks.insert(sink_name.clone(), sink);
        }
        let Some(sink) = sinks.get(&sink_name) else { continue };
        let mut events = Vec::with_capacity(group.len());
        let mut replayed = Vec::with_capacity(group.len());
        for letter in group {
            match serde_json::from_value::<IncidentEvent>(letter.event.clone()) {
                Ok(incident) => {
                    let size = letter.event.to_string().len();
                    events.push(Event::with_id(incident, letter.webhook_id.clone().into(), size));
                    replayed.push(letter);
                }
                Err(e) => {
                    say!("seq {}: stored event does not decode ({e}); kept", letter.seq);
                    failed += 1;
                }
            }
        }
        let outcomes = match events.len() {
            0 => continue,
            1 if replayed[0].digest.is_none() => vec![sink.replay(events.remove(0)).await],
            _ => sink.replay_digest(events).await,
        };
        for (letter, outcome) in replayed.iter().zip(outcomes) {
            // Delivered: gone. Failed again: the sink stored a new dead letter with the new
            // reason, so the old one goes either way (unless even that could not be written).
            if outcome != Outcome::Dropped {
                store.remove(&[letter.seq]).map_err(|e| e.to_string())?;
            }
            if outcome.is_success() {
                delivered += 1;
                say!("seq {}: delivered ({})", letter.seq, letter.webhook_id);
            } else {
                failed += 1;
                say!("seq {}: not delivered; back in the dead letters", letter.seq);
            }
        }
    }
    failed += corrupt.len();
    say!("replayed: {delivered} delivered, {failed} not delivered");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
