//! The log writer: log lines go through a bounded queue to a thread that writes them to stderr,
//! so a slow or stuck reader of stderr never stops a task that logs (a data-path, admin or
//! shutdown task).
//!
//! Invariants:
//! - a log call never waits: [`LogWriter`] hands the formatted line over with `try_send`; when
//!   the queue is full the line is dropped and counted in [`lines_dropped`]
//!   (`dermaga_log_lines_dropped_total`);
//! - at exit, [`LogGuard`] writes out what is queued, waiting at most its flush timeout (a stuck
//!   reader cannot hold the exit), and never prints anything itself.
//!
//! (tracing-appender's `non_blocking` does the same, but its guard prints to stdout when the
//! queue is full at exit: with stdout an unread pipe too, the exit would hang.)

use std::io::Write;
use std::sync::LazyLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

/// Lines that may wait to be written.
pub const QUEUE_LINES: usize = 8192;
/// At exit, how long queued lines may take to be written out.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Log lines dropped because the queue was full (the writer could not keep up, or the reader of
/// stderr is stuck), or because writing failed. Process-wide, as the log subscriber is.
pub fn lines_dropped() -> Counter {
    static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);
    DROPPED.clone()
}

enum Msg {
    Line(Vec<u8>),
    /// Write everything received so far, then answer.
    Flush(SyncSender<()>),
}

/// The sending side, handed to the log subscriber (cheap to clone: one per event).
#[derive(Clone)]
pub struct LogWriter {
    tx: SyncSender<Msg>,
    dropped: Counter,
}

/// Keeps the writer thread's queue open; dropping it writes out what is queued (bounded by
/// [`FLUSH_TIMEOUT`]). Keep it alive until the end of `main`.
#[must_use = "dropping the guard flushes the log: keep it until the end of main"]
pub struct LogGuard {
    tx: SyncSender<Msg>,
    flush_timeout: Duration,
}

impl LogWriter {
    /// Starts the writer thread on `out`, with room for `capacity` lines.
    pub fn start(out: Box<dyn Write + Send>, capacity: usize) -> (LogWriter, LogGuard) {
        Self::start_counting(out, capacity, lines_dropped(), FLUSH_TIMEOUT)
    }

    fn start_counting(
        out: Box<dyn Write + Send>,
        capacity: usize,
        dropped: Counter,
        flush_timeout: Duration,
    ) -> (LogWriter, LogGuard) {
        let (tx, rx) = mpsc::sync_channel::<Msg>(capacity.max(1));
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_loop(rx, out, counter))
            .expect("spawn the log writer thread");
        (
            LogWriter {
                tx: tx.clone(),
                dropped,
            },
            LogGuard { tx, flush_timeout },
        )
    }
}

fn write_loop(rx: Receiver<Msg>, mut out: Box<dyn Write + Send>, dropped: Counter) {
    let mut buf = Vec::with_capacity(WRITE_BATCH);
    let mut lines = 0u64;
    let mut broken = false;
    let mut write = |buf: &mut Vec<u8>, lines: &mut u64| {
        if !broken && out.write_all(buf).and_then(|()| out.flush()).is_err() {
            // stderr closed: nothing more can be written; count what is lost from now on.
            broken = true;
        }
        if broken {
            dropped.inc_by(*lines);
        }
        buf.clear();
        *lines = 0;
    };
    loop {
        // Block for the first message, then take what is queued, up to a batch.
        let first = match rx.recv_timeout(Duration::from_secs(3600)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(line) => {
                    buf.extend_from_slice(&line);
                    lines += 1;
                    if buf.len() < WRITE_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                Msg::Flush(ack) => {
                    write(&mut buf, &mut lines);
                    let _ = ack.send(());
                    next = rx.try_recv().ok();
                }
            }
        }
        write(&mut buf, &mut lines);
    }
}

impl Write for LogWriter {
    /// The subscriber writes one whole formatted line per call.
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Msg::Line(line.to_vec()))
        {
            self.dropped.inc();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogGuard {
    /// Writes out every line queued so far, waiting up to `timeout`. False if the writer did not
    /// finish in time (the reader of stderr is stuck or slow).
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return false,
            }
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.flush(self.flush_timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An output that blocks every write until opened, recording what it got.
    #[derive(Clone, Default)]
    struct Gate {
        /// (open, a write is waiting).
        state: Arc<(Mutex<(bool, bool)>, std::sync::Condvar)>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Gate {
        fn open(&self) {
            self.state.0.lock().unwrap().0 = true;
            self.state.1.notify_all();
        }

        fn wait_until_blocked(&self) {
            let (lock, cond) = &*self.state;
            let _blocked = cond
                .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(10), |s| !s.1)
                .unwrap();
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cond) = &*self.state;
            let mut state = lock.lock().unwrap();
            state.1 = true;
            cond.notify_all();
            while !state.0 {
                state = cond.wait(state).unwrap();
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_drops_and_counts_lines_and_never_blocks_the_caller() {
        let gate = Gate::default();
        let dropped = Counter::default();
        let (writer, guard) = LogWriter::start_counting(
            Box::new(gate.clone()),
            4,
            dropped.clone(),
            Duration::from_millis(50),
        );
        writer.clone().write_all(b"first\n").unwrap();
        gate.wait_until_blocked();
        let started = Instant::now();
        for i in 0..1000 {
            writer
                .clone()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(dropped.get(), 1000 - 4, "4 lines wait in the queue");
        assert!(
            !guard.flush(Duration::from_millis(50)),
            "stuck: the flush gives up"
        );
        let exit = Instant::now();
        drop(guard);
        assert!(
            exit.elapsed() < Duration::from_secs(1),
            "{:?}",
            exit.elapsed()
        );
        gate.open();
    }

    #[test]
    fn flush_writes_every_queued_line_in_order() {
        let gate = Gate::default();
        gate.open();
        let dropped = Counter::default();
        let (writer, guard) =
            LogWriter::start_counting(Box::new(gate.clone()), 1000, dropped.clone(), FLUSH_TIMEOUT);
        for i in 0..500 {
            writer
                .clone()
                .write_all(format!("{i}\n").as_bytes())
                .unwrap();
        }
        assert!(guard.flush(Duration::from_secs(10)));
        let got = String::from_utf8(gate.got.lock().unwrap().clone()).unwrap();
        let want: String = (0..500).map(|i| format!("{i}\n")).collect();
        assert_eq!(got, want);
        assert_eq!(dropped.get(), 0);
    }
}
