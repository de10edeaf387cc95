//! What a broadcast did, target by target and in sum.

/// What happened to the targets of one broadcast.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FanOutReport {
    /// Records listed, expired ones included.
    pub targets: usize,
    pub delivered: usize,
    /// Answered 410 by API Gateway: the record was deleted.
    pub gone: usize,
    /// Past its TTL but not yet deleted by DynamoDB: not posted to, deleted.
    pub expired: usize,
    /// Still failing after every attempt of both passes.
    pub failed: usize,
    /// Refused for good by the Management API (400, 403, 404): not retried.
    pub refused: usize,
    /// Failed in the first pass, delivered in the second (counted in `delivered` too).
    pub second_pass_delivered: usize,
    /// Not attempted because the circuit breaker was open.
    pub skipped: usize,
    /// The invocation's deadline drew near before every target was posted
    /// to (or listed): the message must be sent again.
    pub stopped_at_deadline: bool,
    /// Frames each target gets (several messages share a frame).
    pub frames: usize,
    /// Posts made, first attempts only: a target's frames that were tried.
    pub posts: u64,
    /// Attempts beyond the first, summed over every post.
    pub retries: u64,
    /// Time spent waiting for listing requests. Pages after the first are
    /// read while posting, so this overlaps `elapsed_ms`.
    pub list_ms: u64,
    /// Time until the first page of targets arrived: when posting started.
    pub first_page_ms: u64,
    /// Listing requests made.
    pub pages: usize,
    pub elapsed_ms: u64,
    /// Summed round trips of the posts that were delivered, from starting the
    /// SDK call to API Gateway's answer (signing and any retries included):
    /// with `delivered_posts`, the L that N x L / C uses.
    pub delivered_post_us: u64,
    /// Posts answered 200, in both passes.
    pub delivered_posts: u64,
}

impl FanOutReport {
    /// The mean round trip of a delivered post, in ms (0 when none was).
    pub fn mean_post_round_trip_ms(&self) -> f64 {
        if self.delivered_posts == 0 {
            return 0.0;
        }
        self.delivered_post_us as f64 / self.delivered_posts as f64 / 1000.0
    }

    /// Whether some target did not get the message and could on a retry.
    pub fn incomplete(&self) -> bool {
        self.skipped > 0 || self.stopped_at_deadline
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Delivered,
    Gone,
    Expired,
    Failed,
    /// Refused for good (400, 403, 404): not retried, not counted by the breaker.
    Refused,
    /// Answered 413: the frame is split into its messages, one post each.
    TooLarge,
    Skipped,
    /// Not posted: the deadline drew near first.
    Stopped,
}

/// What one target's delivery came to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Delivery {
    pub(super) outcome: Outcome,
    /// The first frame not delivered: where a second pass resumes.
    pub(super) resume_at: usize,
    pub(super) posts: u64,
    pub(super) delivered_posts: u64,
    pub(super) delivered_post_us: u64,
}

impl FanOutReport {
    pub(super) fn add_posts(&mut self, delivery: &Delivery) {
        self.posts += delivery.posts;
        self.delivered_posts += delivery.delivered_posts;
        self.delivered_post_us += delivery.delivered_post_us;
    }

    pub(super) fn count(mut self, outcome: Outcome) -> Self {
        match outcome {
            Outcome::Delivered => self.delivered += 1,
            Outcome::Gone => self.gone += 1,
            Outcome::Expired => self.expired += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Refused | Outcome::TooLarge => self.refused += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Stopped => self.stopped_at_deadline = true,
        }
        self
    }
}
