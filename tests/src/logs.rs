//! A capture of the JSON log lines a test's handlers write.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// Collects the JSON log lines written on this thread while it is installed
/// (tests run on a current-thread runtime, so the handler logs here too).
///
/// One global subscriber serves every capture: a per-thread default
/// subscriber would race with the other tests of the binary over tracing's
/// global callsite cache, and an event could then be dropped unseen.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static THREAD_CAPTURE: std::cell::RefCell<Option<LogCapture>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the capture installed on the writing thread, or nowhere.
struct ThreadCaptureWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadCaptureWriter {
    type Writer = Box<dyn Write>;

    fn make_writer(&'a self) -> Self::Writer {
        match THREAD_CAPTURE.with(|capture| capture.borrow().clone()) {
            Some(capture) => Box::new(capture),
            None => Box::new(std::io::sink()),
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
    pub fn install(&self) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(ThreadCaptureWriter)
                .finish();
            // Another global subscriber (none in these tests) would leave captures empty, and their assertions fail.
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
        THREAD_CAPTURE.with(|capture| *capture.borrow_mut() = Some(self.clone()));
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
