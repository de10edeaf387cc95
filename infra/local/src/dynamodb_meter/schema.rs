//! Tables' keys and secondary indexes, from `DescribeTable`, and what an
//! item's change costs in each index.

use serde_json::{Map, Value};

use crate::item_size::item_size;

use super::limits::Partition;
use super::pricing::{write_units, INDEX_ENTRY_OVERHEAD};
use super::upstream::{shape, MeterError};
use super::Item;

#[derive(Debug)]
pub(super) struct TableSchema {
    /// The partition key first, then the sort key if any.
    pub(super) keys: Vec<String>,
    pub(super) indexes: Vec<IndexSchema>,
    /// Named in a throttling answer.
    pub(super) arn: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct IndexSchema {
    pub(super) name: String,
    pub(super) local: bool,
    /// The partition key first, then the sort key if any.
    pub(super) keys: Vec<String>,
    pub(super) projection: Projection,
    pub(super) arn: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) enum Projection {
    KeysOnly,
    Include(Vec<String>),
    All,
}

impl TableSchema {
    /// From `DescribeTable`'s `Table`.
    pub(super) fn parse(table: &Value) -> Result<Self, MeterError> {
        let keys = key_names(table).ok_or_else(|| shape("DescribeTable answered no KeySchema"))?;
        let mut indexes = Vec::new();
        for (field, local) in [("GlobalSecondaryIndexes", false), ("LocalSecondaryIndexes", true)] {
            for index in table.get(field).and_then(Value::as_array).into_iter().flatten() {
                let name = index
                    .get("IndexName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| shape("an index without a name"))?;
                let keys = key_names(index).ok_or_else(|| shape(format!("index {name} without a KeySchema")))?;
                let projection = index.get("Projection");
                let projection = match projection.and_then(|p| p.get("ProjectionType")).and_then(Value::as_str) {
                    Some("ALL") => Projection::All,
                    Some("INCLUDE") => Projection::Include(
                        projection
                            .and_then(|p| p.get("NonKeyAttributes"))
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect(),
                    ),
                    _ => Projection::KeysOnly,
                };
                indexes.push(IndexSchema {
                    name: name.to_owned(),
                    local,
                    keys,
                    projection,
                    arn: arn(index, "IndexArn"),
                });
            }
        }
        Ok(TableSchema {
            keys,
            indexes,
            arn: arn(table, "TableArn"),
        })
    }

    pub(super) fn index(&self, name: &str) -> Option<&IndexSchema> {
        self.indexes.iter().find(|index| index.name == name)
    }

    /// The partition of the item with primary key `key` in `table`.
    pub(super) fn partition_of(&self, table: &str, key: &Item) -> Option<Partition> {
        let value = key.get(self.keys.first()?)?;
        Some(Partition::new(table, None, value))
    }

    /// The primary key of `item`.
    pub(super) fn key_of(&self, item: &Item) -> Option<Item> {
        self.keys
            .iter()
            .map(|name| item.get(name).map(|value| (name.clone(), value.clone())))
            .collect()
    }

    /// Index write units for an item going from `before` to `after`.
    pub(super) fn index_write_units(&self, before: Option<&Item>, after: Option<&Item>) -> u64 {
        self.indexes
            .iter()
            .map(|index| {
                let old = before.and_then(|item| index.entry(&self.keys, item));
                let new = after.and_then(|item| index.entry(&self.keys, item));
                let units = |entry: &Item| write_units(item_size(entry) + INDEX_ENTRY_OVERHEAD);
                match (old, new) {
                    (Some(old), Some(new)) => {
                        let same_key = index.keys.iter().all(|key| same_value(old.get(key), new.get(key)));
                        if !same_key {
                            units(&old) + units(&new)
                        } else if !same_item(&old, &new) {
                            units(&new)
                        } else {
                            0
                        }
                    }
                    (None, Some(new)) => units(&new),
                    (Some(old), None) => units(&old),
                    (None, None) => 0,
                }
            })
            .sum()
    }
}

/// The key attributes, the partition key (`HASH`) first.
fn key_names(described: &Value) -> Option<Vec<String>> {
    let mut keys = described.get("KeySchema")?.as_array()?.iter().collect::<Vec<_>>();
    keys.sort_by_key(|key| key.get("KeyType").and_then(Value::as_str) != Some("HASH"));
    keys.into_iter()
        .map(|key| key.get("AttributeName").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn arn(described: &Value, field: &str) -> Option<String> {
    described.get(field).and_then(Value::as_str).map(str::to_owned)
}

impl IndexSchema {
    /// The index entry of `item`: none unless it has every key attribute of
    /// the index.
    pub(super) fn entry(&self, table_keys: &[String], item: &Item) -> Option<Item> {
        if !self.keys.iter().all(|key| item.contains_key(key)) {
            return None;
        }
        Some(match &self.projection {
            Projection::All => item.clone(),
            Projection::KeysOnly | Projection::Include(_) => item
                .iter()
                .filter(|(name, _)| self.projects(table_keys, name))
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect(),
        })
    }

    pub(super) fn projects(&self, table_keys: &[String], attribute: &str) -> bool {
        table_keys.iter().chain(&self.keys).any(|key| key == attribute)
            || match &self.projection {
                Projection::All => true,
                Projection::KeysOnly => false,
                Projection::Include(attributes) => attributes.iter().any(|name| name == attribute),
            }
    }
}

/// Whether two values are the same, sets compared without their order.
fn same_value(a: Option<&Value>, b: Option<&Value>) -> bool {
    a.map(canonical) == b.map(canonical)
}

fn same_item(a: &Item, b: &Item) -> bool {
    a.len() == b.len() && a.iter().all(|(name, value)| same_value(Some(value), b.get(name)))
}

fn canonical(value: &Value) -> Value {
    let Some(typed) = value.as_object() else {
        return value.clone();
    };
    typed
        .iter()
        .map(|(kind, inner)| {
            let inner = match (kind.as_str(), inner) {
                ("SS" | "NS" | "BS", Value::Array(elements)) => {
                    let mut elements = elements.clone();
                    elements.sort_by_key(Value::to_string);
                    Value::Array(elements)
                }
                ("L", Value::Array(elements)) => Value::Array(elements.iter().map(canonical).collect()),
                ("M", Value::Object(map)) => {
                    Value::Object(map.iter().map(|(key, value)| (key.clone(), canonical(value))).collect())
                }
                _ => inner.clone(),
            };
            (kind.clone(), inner)
        })
        .collect::<Map<String, Value>>()
        .into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn item(value: Value) -> Item {
        value.as_object().unwrap().clone()
    }

    fn schema(projection: Projection) -> TableSchema {
        TableSchema {
            keys: vec!["id".to_owned()],
            indexes: vec![IndexSchema {
                name: "by_owner".to_owned(),
                local: false,
                keys: vec!["owner".to_owned(), "at".to_owned()],
                projection,
                arn: None,
            }],
            arn: None,
        }
    }

    #[test]
    fn an_item_enters_moves_within_and_leaves_an_index() {
        let schema = schema(Projection::KeysOnly);
        let outside = item(json!({"id": {"S": "a"}, "owner": {"S": "o"}}));
        let inside = item(json!({"id": {"S": "a"}, "owner": {"S": "o"}, "at": {"N": "1"}, "x": {"S": "1"}}));
        let moved = item(json!({"id": {"S": "a"}, "owner": {"S": "o"}, "at": {"N": "2"}, "x": {"S": "1"}}));
        let touched = item(json!({"id": {"S": "a"}, "owner": {"S": "o"}, "at": {"N": "1"}, "x": {"S": "2"}}));
        assert_eq!(schema.index_write_units(None, Some(&outside)), 0);
        assert_eq!(schema.index_write_units(None, Some(&inside)), 1);
        assert_eq!(schema.index_write_units(Some(&outside), Some(&inside)), 1);
        assert_eq!(schema.index_write_units(Some(&inside), Some(&moved)), 2);
        assert_eq!(
            schema.index_write_units(Some(&inside), Some(&touched)),
            0,
            "x is not projected"
        );
        assert_eq!(schema.index_write_units(Some(&inside), None), 1);
        assert_eq!(schema.index_write_units(Some(&inside), Some(&outside)), 1);

        let including = self::schema(Projection::Include(vec!["x".to_owned()]));
        assert_eq!(
            including.index_write_units(Some(&inside), Some(&touched)),
            1,
            "x is projected"
        );
        assert_eq!(including.index_write_units(Some(&inside), Some(&inside)), 0);
    }

    #[test]
    fn an_index_entry_is_its_projection_and_100_bytes() {
        let schema = schema(Projection::All);
        let big = item(json!({"id": {"S": "a"}, "owner": {"S": "o"}, "at": {"N": "1"}, "x": {"S": "y".repeat(1000)}}));
        // 2 + 6 + 4 + 1001 + 100 bytes: two units.
        assert_eq!(schema.index_write_units(None, Some(&big)), 2);
    }

    #[test]
    fn the_partition_key_comes_first_whatever_the_order_described() {
        let schema = TableSchema::parse(&json!({
            "TableArn": "arn:aws:dynamodb:us-east-1:123456789012:table/t",
            "KeySchema": [
                {"AttributeName": "entry", "KeyType": "RANGE"},
                {"AttributeName": "channel", "KeyType": "HASH"},
            ],
        }))
        .unwrap();
        assert_eq!(schema.keys, ["channel", "entry"]);
        assert_eq!(
            schema.partition_of("t", &item(json!({"channel": {"S": "c"}, "entry": {"S": "1"}}))),
            Some(Partition::new("t", None, &json!({"S": "c"})))
        );
        assert_eq!(schema.partition_of("t", &item(json!({"entry": {"S": "1"}}))), None);
        assert_eq!(
            schema.arn.as_deref(),
            Some("arn:aws:dynamodb:us-east-1:123456789012:table/t")
        );
    }

    #[test]
    fn sets_in_another_order_are_the_same_value() {
        let a = json!({"SS": ["x", "y"]});
        let b = json!({"SS": ["y", "x"]});
        assert!(same_value(Some(&a), Some(&b)));
        assert!(!same_value(Some(&a), Some(&json!({"SS": ["x"]}))));
    }
}
