//! The in-memory buffer: a queue of events whose room is given back by their finalizers.
//!
//! Events near the head of the queue are kept as they are, ready to send. Behind the first
//! [`PACK_AFTER`] (a backlog: the endpoint is slow or down), each event is kept packed, as
//! its JSON text, and unpacked when the sink takes it. A typed event takes several times
//! its JSON size in memory (one allocation per string, every optional field's room), so a
//! full buffer of 100,000 events fits in about a third of the memory, and an event that
//! goes straight through is never packed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::{BufferError, Counters, Limits};
use crate::event::{Event, Finalizer, IncidentEvent, Outcome};

/// Events queued beyond this many are packed. Above the number of events a sink takes in
/// hand at once, so a sink keeping up never pays for packing.
pub const PACK_AFTER: usize = 2048;

/// A bounded in-memory queue for one sink.
#[derive(Debug)]
pub struct MemoryBuffer {
    counters: Arc<Counters>,
    state: Mutex<State>,
    items: Notify,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Queued>,
    closed: bool,
}

/// An event in the queue.
#[derive(Debug)]
enum Queued {
    /// As it came.
    Live(Event),
    /// Its incident as JSON text, the rest as it came.
    Packed(Packed),
}

#[derive(Debug)]
struct Packed {
    json: Box<[u8]>,
    id: Arc<str>,
    size: usize,
    received_at: Instant,
    finalizer: Finalizer,
}

impl Queued {
    fn pack(event: Event) -> Queued {
        match serde_json::to_vec(&*event.incident) {
            Ok(json) => Queued::Packed(Packed {
                json: json.into_boxed_slice(),
                id: event.id,
                size: event.size,
                received_at: event.received_at,
                finalizer: event.finalizer,
            }),
            // Cannot happen (every key of the typed event is a string); kept as it is then.
            Err(_) => Queued::Live(event),
        }
    }

    fn unpack(self) -> Option<Event> {
        match self {
            Queued::Live(event) => Some(event),
            Queued::Packed(packed) => match serde_json::from_slice::<IncidentEvent>(&packed.json) {
                Ok(incident) => Some(Event {
                    incident: Arc::new(incident),
                    id: packed.id,
                    size: packed.size,
                    received_at: packed.received_at,
                    finalizer: packed.finalizer,
                }),
                Err(error) => {
                    // Cannot happen either: the text was written from a typed event.
                    tracing::error!(webhook_id = %packed.id, %error, "a buffered event cannot be read back; dropped");
                    packed.finalizer.finish(Outcome::Dropped);
                    None
                }
            },
        }
    }
}

impl MemoryBuffer {
    /// An empty buffer.
    pub fn new(limits: Limits) -> Self {
        MemoryBuffer { counters: Arc::new(Counters::new(limits)), state: Mutex::default(), items: Notify::new() }
    }

    /// Room accounting.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Queues events whose room was reserved.
    pub fn push(&self, events: Vec<Event>) -> Result<(), BufferError> {
        // Packing happens outside the lock; a concurrent push may make the split a little
        // off, which only moves where packing starts.
        let live = PACK_AFTER.saturating_sub(self.queued());
        let items: Vec<Queued> = events
            .into_iter()
            .enumerate()
            .map(|(i, mut event)| {
                let (counters, size) = (self.counters.clone(), event.size as u64);
                event.finalizer.push(move |_| counters.give_back(1, size));
                if i < live {
                    Queued::Live(event)
                } else {
                    Queued::pack(event)
                }
            })
            .collect();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return Err(BufferError::Closed);
        }
        state.queue.extend(items);
        drop(state);
        self.items.notify_waiters();
        Ok(())
    }

    /// The next event; `None` once closed and empty.
    pub async fn pop(&self) -> Option<Event> {
        loop {
            // Most pops find an event waiting: no need to register for a wake-up then.
            if let Some(event) = self.try_pop() {
                return Some(event);
            }
            let notified = self.items.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                match state.queue.pop_front() {
                    Some(item) => {
                        drop(state);
                        match item.unpack() {
                            Some(event) => return Some(event),
                            None => continue,
                        }
                    }
                    None if state.closed => return None,
                    None => {}
                }
            }
            notified.await;
        }
    }

    /// The next event if one is queued now.
    pub fn try_pop(&self) -> Option<Event> {
        loop {
            let item = self.state.lock().unwrap_or_else(|p| p.into_inner()).queue.pop_front()?;
            if let Some(event) = item.unpack() {
                return Some(event);
            }
        }
    }

    /// Events queued and not yet taken by the sink.
    pub fn queued(&self) -> usize {
        self.state.lock().map(|s| s.queue.len()).unwrap_or(0)
    }

    /// Stops pushes; `pop` drains what is left.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.items.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::super::SinkBuffer;
    use super::*;
    use crate::event::{EventKind, IncidentEvent, Outcome};

    fn event(size: usize) -> Event {
        Event::new(IncidentEvent::new(EventKind::Created), size)
    }

    #[tokio::test]
    async fn room_is_reserved_and_given_back_by_outcomes() {
        let buffer = SinkBuffer::Memory(Arc::new(MemoryBuffer::new(Limits { events: 2, bytes: 100 })));
        let r = buffer.try_reserve(2, 20).unwrap();
        assert!(buffer.try_reserve(1, 1).is_none(), "full by events");
        buffer.push(r, vec![event(10), event(10)]).await.unwrap();
        let first = buffer.pop().await.unwrap();
        assert!(buffer.try_reserve(1, 1).is_none(), "in-flight events still count");
        first.finish(Outcome::Delivered);
        assert_eq!(buffer.usage(), (1, 10));
        assert!(buffer.try_reserve(1, 91).is_none(), "full by bytes");
        drop(buffer.try_reserve(1, 90).unwrap());
        assert_eq!(buffer.usage(), (1, 10), "a dropped reservation gives its room back");
        buffer.close();
        let second = buffer.pop().await.unwrap();
        drop(second);
        assert!(buffer.pop().await.is_none());
        assert_eq!(buffer.usage(), (0, 0));
    }

    #[tokio::test]
    async fn a_backlog_is_packed_and_comes_back_whole_and_in_order() {
        let total = (PACK_AFTER / 100 + 5) * 100;
        let buffer = SinkBuffer::Memory(Arc::new(MemoryBuffer::new(Limits { events: total, bytes: u64::MAX })));
        let mut sample = crate::event::sample_event();
        sample.extra.insert("labels".into(), serde_json::json!({"team": "db", "n": [1, 2.5, null]}));
        let mut sent = Vec::new();
        for chunk in 0..(total / 100) {
            let events: Vec<Event> = (0..100)
                .map(|i| {
                    let mut incident = sample.clone();
                    incident.id = Some(format!("{}", chunk * 100 + i).into());
                    Event::new(incident, 7)
                })
                .collect();
            sent.extend(events.iter().map(|e| (e.id.clone(), e.incident.clone())));
            let r = buffer.try_reserve(events.len(), 700).unwrap();
            buffer.push(r, events).await.unwrap();
        }
        let SinkBuffer::Memory(memory) = &buffer else { unreachable!() };
        let packed = memory.state.lock().unwrap().queue.iter().filter(|q| matches!(q, Queued::Packed(_))).count();
        assert_eq!(packed, total - PACK_AFTER, "everything behind the first PACK_AFTER is packed");
        for (id, incident) in sent {
            let event = buffer.pop().await.unwrap();
            assert_eq!((&event.id, &*event.incident, event.size), (&id, &*incident, 7));
            event.finish(Outcome::Delivered);
        }
        assert_eq!(buffer.usage(), (0, 0), "packed events give their room back too");
    }

    #[tokio::test]
    async fn a_waiting_sender_is_woken_once_its_batch_fits_not_per_event() {
        use futures::FutureExt;
        let buffer = SinkBuffer::Memory(Arc::new(MemoryBuffer::new(Limits { events: 4, bytes: 1000 })));
        let r = buffer.try_reserve(4, 40).unwrap();
        buffer.push(r, (0..4).map(|_| event(10)).collect()).await.unwrap();
        let mut wait = buffer.room_for(3, 30);
        let first = buffer.pop().await.unwrap();
        first.finish(Outcome::Delivered);
        assert!((&mut wait).now_or_never().is_none(), "room for 1 of 3: still waiting");
        for _ in 0..2 {
            buffer.pop().await.unwrap().finish(Outcome::Delivered);
        }
        assert!(wait.now_or_never().is_some(), "room for 3: woken");
        assert!(buffer.try_reserve(3, 30).is_some());
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_buffer_never_fits_not_even_an_empty_one() {
        let buffer = SinkBuffer::Memory(Arc::new(MemoryBuffer::new(Limits { events: 2, bytes: 10 })));
        assert!(buffer.try_reserve(5, 5).is_none(), "more events than the buffer holds");
        assert!(buffer.try_reserve(1, 50).is_none(), "more bytes than the buffer holds");
        assert!(buffer.try_reserve(2, 10).is_some(), "the whole buffer");
    }
}
