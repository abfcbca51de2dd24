//! Progress of long work (DAG generation): a bar on a terminal, periodic log lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Log at most this often when not on a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Reports `(done, total)` progress for one labelled task.
#[derive(Debug)]
pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    last_log: Mutex<Option<Instant>>,
}

impl Progress {
    /// A bar when stderr is a terminal, log lines otherwise.
    pub fn new(label: &str) -> Self {
        Self::with_bar(label, std::io::stderr().is_terminal())
    }

    /// Log lines only (services).
    pub fn logging(label: &str) -> Self {
        Self::with_bar(label, false)
    }

    fn with_bar(label: &str, bar: bool) -> Self {
        let bar = bar.then(|| {
            let b = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {percent}% (eta {eta})",
            ) {
                b.set_style(style);
            }
            b.set_message(label.to_string());
            b
        });
        Self {
            label: label.to_string(),
            bar,
            last_log: Mutex::new(None),
        }
    }

    /// Records progress; safe to call from many threads.
    pub fn update(&self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            if done >= total {
                bar.finish();
            }
            return;
        }
        let Ok(mut last) = self.last_log.lock() else {
            return;
        };
        let now = Instant::now();
        let due = last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY);
        if due || done >= total {
            *last = Some(now);
            let pct = if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            };
            tracing::info!(task = %self.label, done, total, "progress {pct:.1}%");
        }
    }
}
