//! Per-partition limits: on AWS one partition-key value gets at most 1,000
//! write units and 3,000 read units per second, whatever the table's
//! capacity ("Best practices for designing and using partition keys
//! effectively"). With limits, the meter keeps a token bucket per
//! partition and direction, refilled at the limit per second and holding at
//! most one second of it.
//!
//! DynamoDB is more generous to a short burst (its burst and adaptive
//! capacity, best effort and undocumented in their details); one second of
//! the limit is what a design can count on, so the meter holds a hot key to
//! that.
//!
//! A request's units are known only once the meter has sized it, so a
//! request is charged after it is answered and the bucket can go below
//! zero; the requests that then touch a partition in debt are refused
//! before they are forwarded, until the bucket has refilled to zero.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;

use super::pricing::Units;

/// The throughput one partition-key value gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartitionLimits {
    /// Write units per second (table and index writes of the partition's
    /// items together). Zero, a negative number or NaN: writes unlimited.
    pub write_units_per_second: f64,
    /// Read units per second. Zero, a negative number or NaN: reads unlimited.
    pub read_units_per_second: f64,
}

impl Default for PartitionLimits {
    /// DynamoDB's: 1,000 write units and 3,000 read units per second.
    fn default() -> Self {
        PartitionLimits {
            write_units_per_second: 1_000.0,
            read_units_per_second: 3_000.0,
        }
    }
}

/// One partition: a partition-key value of a table, or of one of its global
/// secondary indexes (a local index shares its table's partitions).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Partition {
    pub(super) table: String,
    /// A global secondary index queried on its own partition key.
    pub(super) index: Option<String>,
    /// The key value as DynamoDB's JSON writes it, `{"S":"room"}`. Numbers
    /// are compared as written: `1` and `1.0` count as two partitions here.
    pub(super) key: String,
}

impl Partition {
    pub(super) fn new(table: &str, index: Option<&str>, value: &Value) -> Self {
        Partition {
            table: table.to_owned(),
            index: index.map(str::to_owned),
            key: value.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Read,
    Write,
}

/// The units a partition may still spend; below zero, it is in debt.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
    }
}

#[derive(Debug)]
struct Buckets {
    read: Bucket,
    write: Bucket,
}

/// How many partitions the limiter remembers before it forgets those with a
/// full bucket, which are as good as new.
const REMEMBERED_PARTITIONS: usize = 10_000;

#[derive(Debug)]
pub(super) struct Limiter {
    limits: PartitionLimits,
    buckets: Mutex<HashMap<Partition, Buckets>>,
}

impl Limiter {
    pub(super) fn new(limits: PartitionLimits) -> Self {
        Limiter {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn limits(&self) -> PartitionLimits {
        self.limits
    }

    /// The units per second of `direction`, if it is limited.
    pub(super) fn rate(&self, direction: Direction) -> Option<f64> {
        let rate = match direction {
            Direction::Read => self.limits.read_units_per_second,
            Direction::Write => self.limits.write_units_per_second,
        };
        (rate > 0.0).then_some(rate)
    }

    fn buckets(&self) -> MutexGuard<'_, HashMap<Partition, Buckets>> {
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `partition` spent more than its limit in `direction` and has
    /// not yet earned it back.
    pub(super) fn in_debt(&self, partition: &Partition, direction: Direction, now: Instant) -> bool {
        let Some(rate) = self.rate(direction) else {
            return false;
        };
        let mut buckets = self.buckets();
        let Some(buckets) = buckets.get_mut(partition) else {
            return false;
        };
        let bucket = match direction {
            Direction::Read => &mut buckets.read,
            Direction::Write => &mut buckets.write,
        };
        bucket.refill(rate, now);
        bucket.tokens < 0.0
    }

    /// Forgets a table's partitions (it was created, deleted or changed).
    pub(super) fn forget(&self, table: &str) {
        self.buckets().retain(|partition, _| partition.table != table);
    }

    /// Takes what a request consumed from its partitions' buckets.
    pub(super) fn charge(&self, consumed: &BTreeMap<Partition, Units>, now: Instant) {
        let read_rate = self.rate(Direction::Read);
        let write_rate = self.rate(Direction::Write);
        let mut buckets = self.buckets();
        for (partition, units) in consumed {
            let full = |rate: Option<f64>| Bucket {
                tokens: rate.unwrap_or(0.0),
                at: now,
            };
            let buckets = buckets.entry(partition.clone()).or_insert_with(|| Buckets {
                read: full(read_rate),
                write: full(write_rate),
            });
            if let Some(rate) = read_rate {
                buckets.read.refill(rate, now);
                buckets.read.tokens -= units.read;
            }
            if let Some(rate) = write_rate {
                buckets.write.refill(rate, now);
                buckets.write.tokens -= units.write;
            }
        }
        if buckets.len() > REMEMBERED_PARTITIONS {
            buckets.retain(|_, kept| {
                let mut full = true;
                for (bucket, rate) in [(&mut kept.read, read_rate), (&mut kept.write, write_rate)] {
                    if let Some(rate) = rate {
                        bucket.refill(rate, now);
                        full &= bucket.tokens >= rate;
                    }
                }
                !full
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn writes(units: f64) -> Units {
        Units {
            write: units,
            ..Units::default()
        }
    }

    /// Sends `count` one-unit writes to one partition, evenly over `span`,
    /// each refused while the partition is in debt; how many got through.
    fn admitted(limiter: &Limiter, partition: &Partition, count: u32, span: Duration, start: Instant) -> u32 {
        let mut admitted = 0;
        for sent in 0..count {
            let now = start + span * sent / count;
            if !limiter.in_debt(partition, Direction::Write, now) {
                limiter.charge(&BTreeMap::from([(partition.clone(), writes(1.0))]), now);
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn a_hot_key_gets_a_second_of_its_limit_and_the_limit_per_second() {
        let limiter = Limiter::new(PartitionLimits::default());
        let hot = Partition::new("t", None, &json!({"S": "hot"}));
        let start = Instant::now();
        // 2,500 writes within a second: the 1,000 banked, about 1,000 more
        // earned meanwhile, and the write that went into debt.
        let admitted = admitted(&limiter, &hot, 2_500, Duration::from_secs(1), start);
        assert!((1_990..=2_001).contains(&admitted), "{admitted}");
    }

    #[test]
    fn keys_are_limited_each_on_its_own_and_reads_apart_from_writes() {
        let limiter = Limiter::new(PartitionLimits {
            write_units_per_second: 10.0,
            read_units_per_second: 30.0,
        });
        let now = Instant::now();
        let a = Partition::new("t", None, &json!({"S": "a"}));
        let b = Partition::new("t", None, &json!({"S": "b"}));
        let a_in_index = Partition::new("t", Some("by_owner"), &json!({"S": "a"}));
        limiter.charge(&BTreeMap::from([(a.clone(), writes(10.0))]), now);
        assert!(!limiter.in_debt(&a, Direction::Write, now), "at zero, not below");
        limiter.charge(&BTreeMap::from([(a.clone(), writes(5.0))]), now);
        assert!(limiter.in_debt(&a, Direction::Write, now));
        assert!(!limiter.in_debt(&a, Direction::Read, now));
        assert!(!limiter.in_debt(&b, Direction::Write, now));
        assert!(!limiter.in_debt(&a_in_index, Direction::Write, now));
        // Five units in debt at ten a second: half a second to recover.
        assert!(limiter.in_debt(&a, Direction::Write, now + Duration::from_millis(400)));
        assert!(!limiter.in_debt(&a, Direction::Write, now + Duration::from_millis(500)));
    }

    #[test]
    fn a_bucket_holds_one_second_of_its_limit() {
        let limiter = Limiter::new(PartitionLimits {
            write_units_per_second: 10.0,
            read_units_per_second: 30.0,
        });
        let start = Instant::now();
        let a = Partition::new("t", None, &json!({"S": "a"}));
        // Idle for a minute banks no more than a second.
        limiter.charge(&BTreeMap::from([(a.clone(), writes(1.0))]), start);
        let later = start + Duration::from_secs(60);
        limiter.charge(&BTreeMap::from([(a.clone(), writes(11.0))]), later);
        assert!(limiter.in_debt(&a, Direction::Write, later));
    }

    #[test]
    fn a_limit_that_is_not_positive_limits_nothing() {
        let limiter = Limiter::new(PartitionLimits {
            write_units_per_second: 0.0,
            read_units_per_second: f64::NAN,
        });
        let now = Instant::now();
        let a = Partition::new("t", None, &json!({"S": "a"}));
        let both = Units {
            read: 1e9,
            write: 1e9,
            index_write: 0.0,
        };
        limiter.charge(&BTreeMap::from([(a.clone(), both)]), now);
        assert!(!limiter.in_debt(&a, Direction::Write, now));
        assert!(!limiter.in_debt(&a, Direction::Read, now));
    }

    #[test]
    fn full_buckets_are_forgotten_once_there_are_many() {
        let limiter = Limiter::new(PartitionLimits::default());
        let start = Instant::now();
        for key in 0..=REMEMBERED_PARTITIONS {
            let partition = Partition::new("t", None, &json!({"N": key.to_string()}));
            limiter.charge(&BTreeMap::from([(partition, writes(1.0))]), start);
        }
        let hot = Partition::new("t", None, &json!({"S": "hot"}));
        limiter.charge(
            &BTreeMap::from([(hot.clone(), writes(2_000.0))]),
            start + Duration::from_secs(2),
        );
        assert_eq!(limiter.buckets().len(), 1);
        assert!(limiter.in_debt(&hot, Direction::Write, start + Duration::from_secs(2)));
    }
}
