//! Round trips on a critical path: how many requests had to finish, one
//! after another, before something could start. Requests in flight at the
//! same time share a round trip; one sent after another was answered adds
//! one.

use std::time::Instant;

/// One request as a server saw it.
#[derive(Debug, Clone)]
pub struct RequestSpan {
    /// `X-Amz-Target`'s operation, for example `UpdateItem`.
    pub operation: String,
    /// The tables the request names.
    pub tables: Vec<String>,
    pub arrived: Instant,
    pub answered: Instant,
}

/// The longest chain of `spans`, each sent after the one before it was
/// answered, that was answered before `moment`: the round trips that
/// `moment` waited for.
pub fn round_trips_before(spans: &[RequestSpan], moment: Instant) -> usize {
    let mut done: Vec<&RequestSpan> = spans.iter().filter(|span| span.answered <= moment).collect();
    done.sort_by_key(|span| span.answered);
    // depth[i]: the longest chain ending with done[i].
    let mut depth: Vec<usize> = Vec::with_capacity(done.len());
    for (index, span) in done.iter().enumerate() {
        let before = done[..index]
            .iter()
            .zip(&depth)
            .filter(|(earlier, _)| earlier.answered <= span.arrived)
            .map(|(_, depth)| *depth)
            .max()
            .unwrap_or(0);
        depth.push(before + 1);
    }
    depth.into_iter().max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn span(start: Instant, from_ms: u64, to_ms: u64) -> RequestSpan {
        RequestSpan {
            operation: "GetItem".into(),
            tables: Vec::new(),
            arrived: start + Duration::from_millis(from_ms),
            answered: start + Duration::from_millis(to_ms),
        }
    }

    #[test]
    fn requests_in_flight_together_share_a_round_trip() {
        let start = Instant::now();
        let spans = [
            span(start, 0, 10),
            span(start, 1, 12),
            span(start, 12, 20),
            span(start, 21, 30),
            span(start, 22, 31),
            span(start, 40, 50),
        ];
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(round_trips_before(&spans, at(35)), 3);
        assert_eq!(round_trips_before(&spans, at(11)), 1);
        assert_eq!(round_trips_before(&spans, at(0)), 0);
        assert_eq!(round_trips_before(&spans, at(60)), 4);
    }
}
