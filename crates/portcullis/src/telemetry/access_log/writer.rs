//! The access log's writer thread: it wakes every tick (or when a flush is asked for),
//! swaps the shared chunk of finished lines for its empty spare and writes the chunk out
//! with one write, outside the lock; it flushes the output when the oldest unflushed line
//! is `flush_interval` old, when asked, and when the log is dropped.
//!
//! The request path never wakes this thread: it only appends to the chunk. That is why the
//! thread polls on a short tick instead of sleeping on the chunk.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Chunk, Shared};

/// How often the thread takes the chunk when nothing asks it to: the chunk must hold the
/// lines of one tick at peak rate (8192 lines: 800 000 requests per second).
pub(super) const TICK: Duration = Duration::from_millis(10);

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
    pub shared: Arc<Shared>,
    /// The chunk not in use by the request path: empty, keeping its allocation.
    pub spare: Chunk,
    pub asks: Receiver<FlushAsk>,
    pub out: Box<dyn Write + Send>,
    pub flush_interval: Duration,
}

impl Writer {
    /// Runs until the log is dropped; then writes out what is left and returns.
    pub fn run(self) {
        let Writer {
            shared,
            spare,
            asks,
            out,
            flush_interval,
        } = self;
        let mut out = Output {
            inner: out,
            shared,
            spare,
            dirty_since: None,
            failing: false,
        };
        let tick = TICK.min(flush_interval);
        loop {
            let (ask, open) = match asks.recv_timeout(tick) {
                Ok(ask) => (Some(ask), true),
                Err(RecvTimeoutError::Timeout) => (None, true),
                // The log is dropped: no line can come after this round.
                Err(RecvTimeoutError::Disconnected) => (None, false),
            };
            out.write_waiting();
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
    inner: Box<dyn Write + Send>,
    shared: Arc<Shared>,
    spare: Chunk,
    /// When the oldest line not yet flushed was written to `inner`.
    dirty_since: Option<Instant>,
    /// The last write failed (the next success is reported).
    failing: bool,
}

impl Output {
    /// Takes the lines waiting in the shared chunk and writes them in one write.
    fn write_waiting(&mut self) {
        self.shared.take(&mut self.spare);
        let lines = self.spare.lines;
        if lines == 0 {
            return;
        }
        let result = self.inner.write_all(&self.spare.bytes);
        self.spare.bytes.clear();
        self.spare.lines = 0;
        self.dirty_since.get_or_insert_with(Instant::now);
        let counter = if self.report(result) {
            &self.shared.counters.written
        } else {
            &self.shared.counters.failed
        };
        // A line count fits in 64 bits.
        counter.fetch_add(lines as u64, Ordering::Relaxed);
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
