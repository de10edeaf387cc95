//! Request units: what an item's size costs to write or read, and what one
//! request consumed per table.

use std::collections::BTreeMap;

use crate::item_size::item_size;

use super::limits::Partition;
use super::Item;

const WRITE_UNIT_BYTES: usize = 1024;
const READ_UNIT_BYTES: usize = 4096;
/// What an index entry costs beyond its attributes.
pub(super) const INDEX_ENTRY_OVERHEAD: usize = 100;

/// Units consumed by one request, per table and per partition.
#[derive(Debug, Default)]
pub(super) struct Charges {
    pub(super) tables: BTreeMap<String, Units>,
    /// The same units by partition, for the partition limits: those of the
    /// items whose partition the plan knows. An item's index writes count
    /// against its own partition, although on AWS a global index has
    /// partitions of its own: an approximation that holds a hot table key
    /// to its limit and lets a hot index key go unnoticed.
    pub(super) partitions: BTreeMap<Partition, Units>,
}

#[derive(Debug, Default)]
pub(super) struct Units {
    pub(super) read: f64,
    pub(super) write: f64,
    pub(super) index_write: f64,
}

impl Charges {
    pub(super) fn read(&mut self, table: &str, partition: Option<&Partition>, units: f64) {
        let consumed = Units {
            read: units,
            ..Units::default()
        };
        self.add(table, partition, consumed);
    }

    pub(super) fn write(&mut self, table: &str, partition: Option<&Partition>, table_units: u64, index_units: u64) {
        let consumed = Units {
            write: (table_units + index_units) as f64,
            index_write: index_units as f64,
            ..Units::default()
        };
        self.add(table, partition, consumed);
    }

    fn add(&mut self, table: &str, partition: Option<&Partition>, consumed: Units) {
        self.tables.entry(table.to_owned()).or_default().add(&consumed);
        if let Some(partition) = partition {
            self.partitions.entry(partition.clone()).or_default().add(&consumed);
        }
    }
}

impl Units {
    fn add(&mut self, other: &Units) {
        self.read += other.read;
        self.write += other.write;
        self.index_write += other.index_write;
    }
}

pub(super) fn write_units(bytes: usize) -> u64 {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as u64
}

/// 4 KB blocks, at least one.
pub(super) fn read_blocks(bytes: usize) -> u64 {
    bytes.div_ceil(READ_UNIT_BYTES).max(1) as u64
}

pub(super) fn read_rate(consistent: bool) -> f64 {
    if consistent {
        1.0
    } else {
        0.5
    }
}

pub(super) fn size_of(item: Option<&Item>) -> usize {
    item.map_or(0, item_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_up_and_never_fall_below_one() {
        assert_eq!(write_units(0), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
        assert_eq!(read_blocks(0), 1);
        assert_eq!(read_blocks(4096), 1);
        assert_eq!(read_blocks(10 * 1024), 3);
    }
}
