//! The access log's writer thread: it wakes every tick (or when a flush is asked for),
//! drains the buffer, formats each entry into one reused line buffer and writes it through a
//! `BufWriter`; it flushes the output when the oldest unflushed line is `flush_interval`
//! old, when asked, and when the log is dropped.
//!
//! The request path never wakes this thread: it only pushes into the bounded buffer
//! (`SyncSender::try_send`, no waiter to notify because the thread never blocks on the
//! buffer). That is why the thread polls on a short tick instead of sleeping on the buffer.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::line::{Entry, Format};
use super::Counters;

/// How often the thread drains the buffer when nothing asks it to: the buffer must hold
/// the lines of one tick at peak rate (8192 lines: 800 000 requests per second).
pub(super) const TICK: Duration = Duration::from_millis(10);

/// Bytes gathered before a write to the output.
const WRITE_BUFFER: usize = 64 * 1024;

/// A request for a flush: the thread answers on the channel once done.
pub(super) type FlushAsk = SyncSender<()>;

/// Where lines go.
pub(super) fn open(output: &str) -> anyhow::Result<Box<dyn Write + Send>> {
    Ok(match output.trim() {
        "stdout" => Box::new(io::stdout()),
        "stderr" => Box::new(io::stderr()),
        path => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("opening access log file {path:?}: {e}"))?,
        ),
    })
}

pub(super) struct Writer {
    pub entries: Receiver<Entry>,
    pub asks: Receiver<FlushAsk>,
    pub out: Box<dyn Write + Send>,
    pub format: Format,
    pub counters: Arc<Counters>,
    pub flush_interval: Duration,
    /// Entries drained per round at most, so a flush ask is answered under full load.
    pub capacity: usize,
}

impl Writer {
    /// Runs until the log is dropped; then writes out what is left and returns.
    pub fn run(self) {
        let Writer {
            entries,
            asks,
            out,
            format,
            counters,
            flush_interval,
            capacity,
        } = self;
        let mut out = Output {
            inner: BufWriter::with_capacity(WRITE_BUFFER, out),
            line: Vec::with_capacity(1024),
            format,
            counters,
            dirty_since: None,
            failing: false,
        };
        let tick = TICK.min(flush_interval);
        let mut busy = false;
        loop {
            // A full round means more is waiting: go on at once (answering any ask).
            let ask = if busy {
                asks.try_recv().ok()
            } else {
                // Timed out or the log is dropped (then `drain` finds the buffer closed).
                asks.recv_timeout(tick).ok()
            };
            let (drained, open) = out.drain(&entries, capacity);
            busy = drained == capacity;
            let due = out
                .dirty_since
                .is_some_and(|since| since.elapsed() >= flush_interval);
            if ask.is_some() || due || !open {
                out.flush();
            }
            if let Some(ask) = ask {
                let _ = ask.try_send(());
            }
            if !open {
                return;
            }
        }
    }
}

struct Output {
    inner: BufWriter<Box<dyn Write + Send>>,
    /// One line at a time, reused.
    line: Vec<u8>,
    format: Format,
    counters: Arc<Counters>,
    /// When the oldest line not yet flushed was written to `inner`.
    dirty_since: Option<Instant>,
    /// The last write failed (the next success is reported).
    failing: bool,
}

impl Output {
    /// Writes up to `max` waiting entries; returns how many, and whether the log is still
    /// open (false once it is dropped and the buffer is empty).
    fn drain(&mut self, entries: &Receiver<Entry>, max: usize) -> (usize, bool) {
        let mut drained = 0;
        let mut open = true;
        while drained < max {
            match entries.try_recv() {
                Ok(entry) => {
                    drained += 1;
                    let counter = if self.write(&entry) {
                        &self.counters.written
                    } else {
                        &self.counters.failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        (drained, open)
    }

    fn write(&mut self, entry: &Entry) -> bool {
        self.line.clear();
        entry.write_json(&self.format, &mut self.line);
        self.line.push(b'\n');
        let result = self.inner.write_all(&self.line);
        self.dirty_since.get_or_insert_with(Instant::now);
        self.report(result)
    }

    fn flush(&mut self) {
        let result = self.inner.flush();
        self.dirty_since = None;
        self.report(result);
    }

    /// Logs the first failure of a run of failures, and the recovery.
    fn report(&mut self, result: io::Result<()>) -> bool {
        match (result, self.failing) {
            (Ok(()), false) => true,
            (Ok(()), true) => {
                self.failing = false;
                tracing::info!("access log: writing works again");
                true
            }
            (Err(err), failing) => {
                if !failing {
                    self.failing = true;
                    tracing::warn!(error = %err, "access log: writing failed; lines are lost until it works again");
                }
                false
            }
        }
    }
}
