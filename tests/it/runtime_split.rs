//! `run --runtime split` (the default on hosts of 2 cores or fewer): the sources run on a
//! thread of their own, and a reload builds the new sources there too; each sink's
//! deliveries are spread over the main thread and a delivery thread; events still reach
//! the receiver through a memory and a disk buffer, the process still stops cleanly, and a
//! `--threads` or `--delivery-threads` that does not apply is refused.

use crate::reload::{batch, post};
use crate::support;
use support::binary::Binary;
use support::{free_addr, Receiver};

use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// The CPU time so far (user + system, in clock ticks) of the process's thread `name`,
/// from `/proc`; `None` if the process has no such thread.
#[cfg(target_os = "linux")]
fn thread_ticks(pid: u32, name: &str) -> Option<u64> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the `(comm)`: state is the 3rd field, utime the 14th, stime the 15th.
            let after = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = after.split(' ').collect();
            return Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?);
        }
    }
    None
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn split_runs_sources_on_their_own_thread_through_a_reload_and_a_clean_stop() {
    let receiver = Receiver::http().await;
    let (first, second) = (free_addr(), free_addr());
    let dir = support::Dir::new();
    // Two sinks, a memory and a disk buffer. The memory buffer has room for every event: a
    // copy that does not fit while the disk buffer takes it would be dead-lettered
    // (buffer/fanout.rs), which is not what this tests.
    let template = "template = '{\"id\": \"{{ event.id }}\"}'";
    let text = |address| {
        format!(
            "data_dir = '{}'\n[sources.alerts]\ntype = \"http_server\"\naddress = \"{address}\"\n\n\
             [sinks.hook]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{}\"\nbuffer.max_events = 20000\n{template}\n\n\
             [sinks.stored]\ntype = \"webhook\"\ninputs = [\"alerts\"]\nurl = \"{}\"\nbuffer.type = \"disk\"\n{template}\n",
            dir.0.path().display(),
            receiver.url("/hook"),
            receiver.url("/stored")
        )
    };
    let file = dir.write("split.toml", &text(first));
    let mut binary = Binary::start(&["run", "--runtime", "split", "--delivery-threads", "2", "--watch"], &file);
    binary.wait_log("webhook-sink started").await;
    assert!(binary.log().contains("runtime=\"split\"") || binary.log().contains("runtime=split"), "{}", binary.log());
    assert!(binary.log().contains("delivery_threads=2"), "{}", binary.log());
    let pid = binary.child.0.id();
    let before = thread_ticks(pid, "webhook-sources").expect("a thread named webhook-sources");
    let delivery_before = thread_ticks(pid, "webhook-deliv-1").expect("a thread named webhook-deliv-1");

    // Enough events that decoding them shows in the sources thread's CPU time (a clock
    // tick is 10 ms; this debug build decodes a few thousand events in that).
    let mut sent = 0;
    for _ in 0..20 {
        assert_eq!(post(&format!("http://{first}/"), batch(sent, 250)).await, 200);
        sent += 250;
    }
    receiver.wait_for(2 * sent, WAIT).await;
    let after = thread_ticks(pid, "webhook-sources").expect("the thread is still there");
    assert!(after > before, "the sources thread did the decoding: {before} -> {after} ticks");
    let delivery_after = thread_ticks(pid, "webhook-deliv-1").expect("the thread is still there");
    assert!(
        delivery_after > delivery_before,
        "the delivery thread delivered its share: {delivery_before} -> {delivery_after} ticks"
    );

    // A reload that moves the source to another port: the new one is built and run on the
    // sources thread as well, and the old port is closed.
    std::fs::write(&file, text(second)).unwrap();
    binary.wait_log("reloaded").await;
    assert_eq!(post(&format!("http://{second}/"), batch(sent, 10)).await, 200);
    sent += 10;
    receiver.wait_for(2 * sent, WAIT).await;
    // The old source lets go of its socket once it has stopped, on its own thread: bounded wait.
    let deadline = std::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(first).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the old port is still open after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    binary.signal("TERM");
    let status = binary.exit_within(WAIT).await.expect("exits after SIGTERM");
    assert!(status.success(), "{status}; log:\n{}", binary.log());
    // Each event once to each sink: the memory-buffered one and the disk-buffered one, whose
    // records the sources' thread writes and the sinks' thread reads.
    for path in ["/hook", "/stored"] {
        let mut ids: Vec<String> = receiver
            .requests()
            .iter()
            .filter(|r| r.path_and_query == path)
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        let all = receiver.requests().iter().filter(|r| r.path_and_query == path).count();
        assert_eq!(ids.len(), sent, "{path}: each event delivered once ({all} requests); log:\n{}", binary.log());
    }
    assert_eq!(receiver.requests().len(), 2 * sent, "nothing sent twice");
    assert_eq!(binary.log().matches(&format!("delivered={sent}")).count(), 2, "{}", binary.log());
}

/// Runs the binary with `args` on a stdin pipeline: it must exit at once, unsuccessfully,
/// saying `reason`.
async fn refused(args: &[&str], reason: &str) {
    let dir = support::Dir::new();
    let file = dir.write("any.toml", "[sources.in]\ntype = \"stdin\"\n");
    let mut binary = Binary::start(args, &file);
    let status = binary.exit_within(WAIT).await.expect("exits at once");
    assert!(!status.success());
    assert!(binary.log().contains(reason), "the reason is given:\n{}", binary.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn threads_with_a_layout_of_fixed_threads_is_refused() {
    refused(
        &["run", "--runtime", "split", "--threads", "3"],
        "`--threads 3` sets the workers of `--runtime multi-thread`",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_threads_without_split_is_refused() {
    refused(
        &["run", "--runtime", "one-thread", "--delivery-threads", "2"],
        "`--delivery-threads 2` spreads the sinks' deliveries under `--runtime split`",
    )
    .await;
}
