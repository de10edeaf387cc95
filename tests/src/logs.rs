//! A capture of the JSON log lines a test's handlers write.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer as _;

/// Collects the JSON log lines written on this thread while it is installed
/// (tests run on a current-thread runtime, so the handler logs here too).
///
/// One global subscriber serves every capture: a per-thread default
/// subscriber would race with the other tests of the binary over tracing's
/// global callsite cache, and an event could then be dropped unseen. It
/// carries two formats, and a capture takes one:
/// - [`LogCapture::install`]: every level down to DEBUG, with each line's
///   whole span list (a secret must not reach even a debug line);
/// - [`LogCapture::install_as_deployed`]: the functions' own format and
///   level ([`airwave_shared::telemetry::json_log_layer`]), so the span a line
///   names is the one CloudWatch would show.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Debug,
    AsDeployed,
}

thread_local! {
    static THREAD_CAPTURE: std::cell::RefCell<Option<(LogCapture, Format)>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the capture installed on the writing thread in `format`, or nowhere.
struct ThreadCaptureWriter(Format);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadCaptureWriter {
    type Writer = Box<dyn Write>;

    fn make_writer(&'a self) -> Self::Writer {
        match THREAD_CAPTURE.with(|capture| capture.borrow().clone()) {
            Some((capture, format)) if format == self.0 => Box::new(capture),
            _ => Box::new(std::io::sink()),
        }
    }
}

/// Uninstalls a [`LogCapture`] from its thread when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        THREAD_CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

impl LogCapture {
    /// Captures this thread's lines at every level down to DEBUG.
    pub fn install(&self) -> CaptureGuard {
        self.install_in(Format::Debug)
    }

    /// Captures this thread's lines as the deployed functions write them.
    pub fn install_as_deployed(&self) -> CaptureGuard {
        self.install_in(Format::AsDeployed)
    }

    fn install_in(&self, format: Format) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let debug = tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(ThreadCaptureWriter(Format::Debug))
                .with_filter(LevelFilter::DEBUG);
            let subscriber =
                tracing_subscriber::registry()
                    .with(debug)
                    .with(airwave_shared::telemetry::json_log_layer(ThreadCaptureWriter(
                        Format::AsDeployed,
                    )));
            // Another global subscriber (none in these tests) would leave captures empty, and their assertions fail.
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
        THREAD_CAPTURE.with(|capture| *capture.borrow_mut() = Some((self.clone(), format)));
        CaptureGuard(())
    }

    /// The captured lines, each parsed as JSON.
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().expect("log buffer").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
