//! The size DynamoDB bills an item at, computed on the wire format
//! (`{"S": "..."}`, `{"N": "..."}`, ...), following "DynamoDB item sizes and
//! formats" in the DynamoDB Developer Guide:
//!
//! - an item is the sum over its attributes of the UTF-8 length of the name
//!   plus the size of the value;
//! - `S`: its UTF-8 bytes; `B`: its raw (decoded) bytes;
//! - `N`: about one byte per two significant digits, plus one byte (leading
//!   and trailing zeroes are not significant), at most 21 bytes;
//! - `BOOL` and `NULL`: one byte;
//! - `SS`, `NS`, `BS`: the sum of their elements' sizes;
//! - `L` and `M`: 3 bytes, plus for each element its size and one byte (and,
//!   in a map, the UTF-8 length of its key).

use serde_json::{Map, Value};

/// The largest size of a number: 38 significant digits.
const MAX_NUMBER_SIZE: usize = 21;

/// The billed size in bytes of an item in DynamoDB's JSON wire format (a map
/// from attribute name to typed value). A value of an unknown type counts 0.
pub fn item_size(item: &Map<String, Value>) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + attribute_value_size(value))
        .sum()
}

/// The billed size in bytes of one typed value, without its attribute name.
pub fn attribute_value_size(value: &Value) -> usize {
    let Some(typed) = value.as_object() else {
        return 0;
    };
    typed.iter().map(|(kind, value)| typed_size(kind, value)).sum()
}

fn typed_size(kind: &str, value: &Value) -> usize {
    match kind {
        "S" => value.as_str().map_or(0, str::len),
        "N" => value.as_str().map_or(0, number_size),
        "B" => value.as_str().map_or(0, binary_size),
        "BOOL" | "NULL" => 1,
        "SS" => elements(value).filter_map(Value::as_str).map(str::len).sum(),
        "NS" => elements(value).filter_map(Value::as_str).map(number_size).sum(),
        "BS" => elements(value).filter_map(Value::as_str).map(binary_size).sum(),
        "L" => {
            3 + elements(value)
                .map(|element| attribute_value_size(element) + 1)
                .sum::<usize>()
        }
        "M" => {
            3 + value.as_object().map_or(0, |map| {
                map.iter()
                    .map(|(key, element)| key.len() + attribute_value_size(element) + 1)
                    .sum()
            })
        }
        _ => 0,
    }
}

fn elements(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// One byte per two significant digits, rounded up, plus one byte.
fn number_size(number: &str) -> usize {
    let mantissa = number.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    (significant.div_ceil(2) + 1).min(MAX_NUMBER_SIZE)
}

/// The length of base64 text once decoded.
fn binary_size(encoded: &str) -> usize {
    let symbols = encoded
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace() && *byte != b'=')
        .count();
    symbols * 3 / 4
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn size(item: Value) -> usize {
        item_size(item.as_object().unwrap())
    }

    #[test]
    fn a_string_is_its_name_and_its_utf8_bytes() {
        assert_eq!(size(json!({"id": {"S": "abc"}})), 2 + 3);
        // "é" is two bytes, "€" three.
        assert_eq!(size(json!({"né": {"S": "€"}})), 3 + 3);
        assert_eq!(size(json!({"empty": {"S": ""}})), 5);
    }

    #[test]
    fn a_number_is_one_byte_per_two_significant_digits_plus_one() {
        assert_eq!(size(json!({"n": {"N": "7"}})), 1 + 2);
        assert_eq!(size(json!({"n": {"N": "12"}})), 1 + 2);
        assert_eq!(size(json!({"n": {"N": "123"}})), 1 + 3);
        assert_eq!(size(json!({"n": {"N": "-12.5"}})), 1 + 3);
        // Leading and trailing zeroes are trimmed.
        assert_eq!(size(json!({"n": {"N": "1000000"}})), 1 + 2);
        assert_eq!(size(json!({"n": {"N": "0.000012"}})), 1 + 2);
        assert_eq!(size(json!({"n": {"N": "0"}})), 1 + 1);
        assert_eq!(size(json!({"n": {"N": "1.5E+10"}})), 1 + 2);
        // 38 significant digits at most: 21 bytes at most.
        assert_eq!(size(json!({"n": {"N": "9".repeat(38)}})), 1 + 20);
        assert_eq!(size(json!({"n": {"N": "9".repeat(60)}})), 1 + 21);
    }

    #[test]
    fn a_binary_is_its_decoded_length() {
        // "aGVsbG8=" is "hello".
        assert_eq!(size(json!({"b": {"B": "aGVsbG8="}})), 1 + 5);
        assert_eq!(size(json!({"b": {"B": "AAEC"}})), 1 + 3);
        assert_eq!(size(json!({"b": {"B": ""}})), 1);
    }

    #[test]
    fn booleans_and_nulls_are_one_byte() {
        assert_eq!(size(json!({"ok": {"BOOL": true}})), 2 + 1);
        assert_eq!(size(json!({"gone": {"NULL": true}})), 4 + 1);
    }

    #[test]
    fn sets_are_the_sum_of_their_elements() {
        assert_eq!(size(json!({"s": {"SS": ["ab", "cde"]}})), 1 + 5);
        assert_eq!(size(json!({"s": {"NS": ["1", "123"]}})), 1 + 2 + 3);
        assert_eq!(size(json!({"s": {"BS": ["aGVsbG8=", "AAEC"]}})), 1 + 5 + 3);
    }

    #[test]
    fn lists_and_maps_cost_three_bytes_and_one_per_element() {
        assert_eq!(size(json!({"l": {"L": []}})), 1 + 3);
        assert_eq!(size(json!({"m": {"M": {}}})), 1 + 3);
        // 3 + ("ab" 2 + 1) + (true 1 + 1)
        assert_eq!(size(json!({"l": {"L": [{"S": "ab"}, {"BOOL": true}]}})), 1 + 3 + 3 + 2);
        // 3 + ("k" 1 + "v" 1 + 1) + ("n" 1 + 12 → 2, + 1)
        assert_eq!(
            size(json!({"m": {"M": {"k": {"S": "v"}, "n": {"N": "12"}}}})),
            1 + 3 + 3 + 4
        );
        // Nested: the inner map is 3 + ("x" 1 + "y" 1 + 1) = 6, plus its key and one byte.
        assert_eq!(
            size(json!({"m": {"M": {"in": {"M": {"x": {"S": "y"}}}}}})),
            1 + 3 + 2 + 6 + 1
        );
    }

    #[test]
    fn an_item_sums_its_attributes() {
        let item = json!({
            "connection_id": {"S": "abc123"},
            "expires_at": {"N": "1700000000"},
            "open": {"BOOL": true},
        });
        // 1700000000 has two significant digits: 2 bytes.
        assert_eq!(size(item), (13 + 6) + (10 + 2) + (4 + 1));
        assert_eq!(size(json!({})), 0);
    }

    #[test]
    fn an_unknown_type_counts_nothing() {
        assert_eq!(size(json!({"x": {"Q": "?"}})), 1);
        assert_eq!(size(json!({"x": "not typed"})), 1);
    }
}
