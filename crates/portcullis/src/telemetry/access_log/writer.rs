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

/// How long the thread keeps retrying an output that takes no more bytes when a flush is
/// asked for, or when the log is dropped (the asker waits at most its own timeout).
const DRAIN_PATIENCE: Duration = Duration::from_secs(2);

/// How often the thread retries an output that took no more bytes, while draining.
const DRAIN_RETRY: Duration = Duration::from_millis(1);

/// Where lines go. A path is opened without blocking (`O_NONBLOCK`): opening a named pipe
/// for writing would otherwise wait for a reader, and some devices wait on open too. A pipe
/// without a reader fails here, with an error that says so. Writes stay non-blocking, so a
/// full pipe makes the thread keep its lines and retry, never wait.
pub(super) fn open(output: &str) -> anyhow::Result<Box<dyn Write + Send>> {
    Ok(match output.trim() {
        "stdout" => Box::new(io::stdout()),
        "stderr" => Box::new(io::stderr()),
        path => Box::new(open_path(path)?),
    })
}

fn open_path(path: &str) -> anyhow::Result<std::fs::File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path).map_err(|e| match refusal(path, &e) {
        Some(why) => anyhow::anyhow!("opening access log file {path:?}: {why} ({e})"),
        None => anyhow::anyhow!("opening access log file {path:?}: {e}"),
    })
}

/// What an open error means for the kind of file at `path`, where the OS error alone would
/// not tell an operator (`ENXIO`: "No such device or address").
fn refusal(path: &str, err: &io::Error) -> Option<&'static str> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if err.raw_os_error() == Some(libc::ENXIO) {
            let kind = std::fs::metadata(path).ok()?.file_type();
            if kind.is_fifo() {
                return Some("no reader on the named pipe; start its reader before the gateway");
            }
            if kind.is_socket() {
                return Some("a Unix socket cannot be opened as a file");
            }
        }
    }
    let _ = (path, err);
    None
}

pub(super) struct Writer {
    pub shared: Arc<Shared>,
    /// The chunk not in use by the request path: empty, keeping its allocation.
    pub spare: Chunk,
    pub asks: Receiver<FlushAsk>,
    pub out: Box<dyn Write + Send>,
    /// The output as configured, for the log lines about it.
    pub name: String,
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
            name,
            flush_interval,
        } = self;
        let mut out = Output {
            inner: out,
            name,
            shared,
            spare,
            sent: 0,
            dirty_since: None,
            health: Health::Fine,
        };
        let tick = TICK.min(flush_interval);
        loop {
            let (ask, open) = match asks.recv_timeout(tick) {
                Ok(ask) => (Some(ask), true),
                Err(RecvTimeoutError::Timeout) => (None, true),
                // The log is dropped: no line can come after this round.
                Err(RecvTimeoutError::Disconnected) => (None, false),
            };
            if ask.is_some() || !open {
                out.drain(DRAIN_PATIENCE);
            } else {
                out.write_waiting();
            }
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

/// Whether the output works, for logging each change once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Fine,
    /// A write or flush failed and no write and flush have both succeeded since.
    Failing {
        /// Lines dropped or lost (all causes) when the run of failures began.
        lost_before: u64,
        /// Lines were written since the last failure: the next good flush ends the run.
        wrote: bool,
    },
}

/// Whether the lines the thread holds are all out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Nothing left to write (written, or lost to a failure).
    Done,
    /// The output takes no more bytes for now (a full pipe); the rest waits in `spare`.
    Stuck,
}

struct Output {
    inner: Box<dyn Write + Send>,
    name: String,
    shared: Arc<Shared>,
    /// The lines being written: empty, or a chunk taken from the request path of which the
    /// first `sent` bytes are out. While it holds lines no new chunk is taken, so a stuck
    /// output fills the shared chunk and requests drop their lines (counted).
    spare: Chunk,
    sent: usize,
    /// When the oldest line not yet flushed was written to `inner`.
    dirty_since: Option<Instant>,
    health: Health,
}

impl Output {
    /// Writes the lines it holds, or else the lines waiting in the shared chunk, as far as
    /// the output takes them without blocking.
    fn write_waiting(&mut self) -> Progress {
        if self.spare.lines == 0 {
            self.shared.take(&mut self.spare);
            self.sent = 0;
            if self.spare.lines == 0 {
                return Progress::Done;
            }
        }
        let result = loop {
            let rest = self.spare.bytes.get(self.sent..).unwrap_or_default();
            if rest.is_empty() {
                break Ok(());
            }
            match self.inner.write(rest) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.sent += n;
                    self.dirty_since.get_or_insert_with(Instant::now);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Stuck,
                Err(e) => break Err(e),
            }
        };
        // A line count fits in 64 bits.
        let lines = self.spare.lines as u64;
        self.spare.bytes.clear();
        self.spare.lines = 0;
        self.sent = 0;
        let counters = &self.shared.counters;
        match result {
            Ok(()) => {
                counters.written.fetch_add(lines, Ordering::Relaxed);
                if let Health::Failing { wrote, .. } = &mut self.health {
                    *wrote = true;
                }
            }
            Err(err) => {
                counters.failed.fetch_add(lines, Ordering::Relaxed);
                self.failed(&err, lines);
            }
        }
        Progress::Done
    }

    /// Writes out the lines it holds and those recorded until now, retrying an output that
    /// takes no more bytes for at most `patience`.
    fn drain(&mut self, patience: Duration) {
        let until = Instant::now() + patience;
        // The held chunk (if any), then the shared one as it is now.
        for _ in 0..2 {
            while self.write_waiting() == Progress::Stuck {
                if Instant::now() >= until {
                    return;
                }
                // This is the log's own thread, not a tokio worker.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(DRAIN_RETRY);
            }
        }
    }

    fn flush(&mut self) {
        self.dirty_since = None;
        match self.inner.flush() {
            Ok(()) => self.flushed(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.failed(&e, 0),
        }
    }

    /// Lines dropped or lost so far, all causes.
    fn lost(&self) -> u64 {
        let c = &self.shared.counters;
        c.dropped.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed)
    }

    /// Logs the first failure of a run of failures (which lost `lines`, already counted);
    /// later ones only count their lines.
    fn failed(&mut self, err: &io::Error, lines: u64) {
        match &mut self.health {
            Health::Failing { wrote, .. } => *wrote = false,
            Health::Fine => {
                let lost = self.lost();
                self.health = Health::Failing {
                    lost_before: lost.saturating_sub(lines),
                    wrote: false,
                };
                tracing::warn!(
                    output = %self.name, error = %err, lost,
                    "access log output failing: {err}, {lost} lines dropped so far"
                );
            }
        }
    }

    /// Ends a run of failures once lines were written and flushed after the last failure
    /// (a flush alone proves nothing: flushing a file with nothing buffered always works).
    fn flushed(&mut self) {
        if let Health::Failing {
            lost_before,
            wrote: true,
        } = self.health
        {
            self.health = Health::Fine;
            let lost = self.lost().saturating_sub(lost_before);
            tracing::info!(
                output = %self.name, lost,
                "access log output works again, {lost} lines dropped while it failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Mutex, PoisonError};

    use super::*;
    use crate::telemetry::access_log::Counters;

    /// An output that takes at most `step` bytes a write, refuses every other write as
    /// full (`WouldBlock`) and fails while `broken`.
    #[derive(Clone, Default)]
    struct Pipe {
        taken: Arc<Mutex<Vec<u8>>>,
        broken: Arc<AtomicBool>,
        calls: usize,
        step: usize,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.broken.load(Ordering::Relaxed) {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(io::Error::from(io::ErrorKind::WouldBlock));
            }
            let n = buf.len().min(self.step);
            let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
            taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn output(pipe: &Pipe) -> Output {
        Output {
            inner: Box::new(pipe.clone()),
            name: "test".into(),
            shared: Arc::new(Shared {
                chunk: Mutex::new(Chunk::default()),
                full: AtomicBool::new(false),
                counters: Counters::default(),
            }),
            spare: Chunk::default(),
            sent: 0,
            dirty_since: None,
            health: Health::Fine,
        }
    }

    fn record(out: &Output, line: &str) {
        let mut chunk = out
            .shared
            .chunk
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        chunk.bytes.extend_from_slice(line.as_bytes());
        chunk.lines += 1;
    }

    #[test]
    fn a_full_output_gets_every_byte_once_in_order() {
        let pipe = Pipe {
            step: 7,
            ..Pipe::default()
        };
        let mut out = output(&pipe);
        record(&out, "{\"a\":1}\n");
        record(&out, "{\"b\":22}\n");
        let mut stuck = 0;
        while out.write_waiting() == Progress::Stuck {
            stuck += 1;
            // Lines recorded meanwhile wait in the shared chunk.
            if stuck == 1 {
                record(&out, "{\"c\":333}\n");
            }
        }
        assert!(stuck > 0);
        assert_eq!(out.shared.counters.written.load(Ordering::Relaxed), 2);
        while out.write_waiting() == Progress::Stuck {}
        assert_eq!(out.shared.counters.written.load(Ordering::Relaxed), 3);
        let taken = pipe.taken.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(&taken[..], b"{\"a\":1}\n{\"b\":22}\n{\"c\":333}\n");
        assert_eq!(out.health, Health::Fine);
    }

    #[test]
    fn a_run_of_failures_ends_with_a_write_and_a_flush() {
        let pipe = Pipe {
            step: 1 << 20,
            ..Pipe::default()
        };
        let mut out = output(&pipe);
        pipe.broken.store(true, Ordering::Relaxed);
        for _ in 0..3 {
            record(&out, "x\n");
            out.write_waiting();
            // Flushing a broken output with nothing buffered works: it ends nothing.
            out.flush();
            assert!(matches!(out.health, Health::Failing { .. }));
        }
        assert_eq!(out.shared.counters.failed.load(Ordering::Relaxed), 3);
        pipe.broken.store(false, Ordering::Relaxed);
        record(&out, "y\n");
        while out.write_waiting() == Progress::Stuck {}
        assert!(matches!(out.health, Health::Failing { wrote: true, .. }));
        out.flush();
        assert_eq!(out.health, Health::Fine);
    }
}
