//! Progress of long work (snapshot create, corpus runs, training): the
//! libraries report through the small [`Progress`] trait and never print;
//! the binaries hand them a [`Reporter`], which draws a bar when a person
//! watches (stderr is a terminal and no `--json` was asked for) and
//! writes plain lines to stderr otherwise, so logs and pipes get text and
//! stdout stays the verb's output, machine-readable.

/// Where long work says how far it got. Every method has a no-op default,
/// so [`Silent`] is the whole of a caller that does not care.
pub trait Progress: Send + Sync {
    /// The work has `total` units (entries, scenarios, epochs).
    fn total(&self, _total: u64) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// A line worth showing (a phase, a scenario's name).
    fn note(&self, _line: &str) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

#[cfg(feature = "progress")]
pub use reporter::Reporter;

#[cfg(feature = "progress")]
mod reporter {
    use std::io::{IsTerminal, Write};
    use std::sync::Mutex;
    use std::sync::PoisonError;

    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

    use super::Progress;

    /// A bar on a terminal, plain lines on stderr otherwise. Plain mode
    /// writes a count line at each tenth of the total (not every unit: a
    /// snapshot has tens of thousands), and every note.
    pub struct Reporter {
        prefix: String,
        bar: Option<ProgressBar>,
        /// (total, done, tenths already reported) in plain mode.
        plain: Mutex<(u64, u64, u64)>,
    }

    impl Reporter {
        /// `prefix` starts every plain line (`backstop: snapshot`); `json`:
        /// the verb prints JSON, so no bar is drawn whatever stderr is.
        pub fn new(prefix: &str, json: bool) -> Reporter {
            let bar = (!json && std::io::stderr().is_terminal()).then(|| {
                let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                b.set_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                        .expect("a fixed template parses")
                        .progress_chars("=> "),
                );
                b.set_prefix(prefix.to_string());
                b
            });
            Reporter {
                prefix: prefix.to_string(),
                bar,
                plain: Mutex::new((0, 0, 0)),
            }
        }

        fn line(&self, text: &str) {
            let _ = writeln!(std::io::stderr().lock(), "{}: {text}", self.prefix);
        }
    }

    impl Progress for Reporter {
        fn total(&self, total: u64) {
            if let Some(b) = &self.bar {
                b.set_length(total);
                return;
            }
            *self.plain.lock().unwrap_or_else(PoisonError::into_inner) = (total, 0, 0);
        }

        fn advance(&self, n: u64) {
            if let Some(b) = &self.bar {
                b.inc(n);
                return;
            }
            let report = {
                let mut p = self.plain.lock().unwrap_or_else(PoisonError::into_inner);
                p.1 += n;
                let tenths = (p.1 * 10).checked_div(p.0).unwrap_or(0).min(10);
                (tenths > p.2).then(|| {
                    p.2 = tenths;
                    (p.1, p.0)
                })
            };
            if let Some((done, total)) = report {
                self.line(&format!("{done}/{total} ({}%)", done * 100 / total.max(1)));
            }
        }

        fn note(&self, line: &str) {
            match &self.bar {
                Some(b) => b.set_message(line.to_string()),
                None => self.line(line),
            }
        }
    }

    impl Drop for Reporter {
        fn drop(&mut self) {
            if let Some(b) = &self.bar {
                b.finish_and_clear();
            }
        }
    }
}
