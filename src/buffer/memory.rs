//! The in-memory buffer: a queue of events whose room is given back by their finalizers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{BufferError, Counters, Limits};
use crate::event::Event;

/// A bounded in-memory queue for one sink.
#[derive(Debug)]
pub struct MemoryBuffer {
    counters: Arc<Counters>,
    state: Mutex<State>,
    items: Notify,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Event>,
    closed: bool,
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
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.closed {
            return Err(BufferError::Closed);
        }
        for mut event in events {
            let (counters, size) = (self.counters.clone(), event.size as u64);
            event.finalizer.push(move |_| counters.give_back(1, size));
            state.queue.push_back(event);
        }
        drop(state);
        self.items.notify_waiters();
        Ok(())
    }

    /// The next event; `None` once closed and empty.
    pub async fn pop(&self) -> Option<Event> {
        loop {
            let notified = self.items.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(event) = state.queue.pop_front() {
                    return Some(event);
                }
                if state.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// The next event if one is queued now.
    pub fn try_pop(&self) -> Option<Event> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).queue.pop_front()
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
    async fn an_oversized_batch_fits_an_empty_buffer() {
        let buffer = SinkBuffer::Memory(Arc::new(MemoryBuffer::new(Limits { events: 2, bytes: 10 })));
        assert!(buffer.try_reserve(5, 50).is_some());
    }
}
