//! What reads cost: gets, batch and transactional gets, queries (billed on
//! what they evaluate), and requests that read nothing.

use aws_sdk_dynamodb::types::{
    BillingMode, Get, KeyType, KeysAndAttributes, LocalSecondaryIndex, Projection, ProjectionType, ScalarAttributeType,
    Select, TransactGetItem,
};

use crate::{assert_reads, assert_writes, attribute, key, n, s, to_item, Fixture};

#[tokio::test]
async fn a_get_costs_half_a_unit_eventually_consistent_and_one_strongly() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a")), ("payload", s(&"x".repeat(100)))])
        .await;
    let get = |id: &str| f.metered.get_item().table_name(&f.keys).key("id", s(id));

    get("a").send().await.unwrap();
    assert_reads(&f.billed(&f.keys), 0.5);
    get("a").consistent_read(true).send().await.unwrap();
    assert_reads(&f.billed(&f.keys), 1.0);
    // An absent item costs the same.
    get("absent").send().await.unwrap();
    assert_reads(&f.billed(&f.keys), 0.5);
    // A projection does not make the read cheaper.
    f.seed(&f.keys, &[("id", s("big")), ("payload", s(&"x".repeat(5000)))])
        .await;
    get("big").projection_expression("id").send().await.unwrap();
    assert_reads(&f.billed(&f.keys), 1.0);
}

#[tokio::test]
async fn batch_and_transactional_gets_bill_each_item() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a"))]).await;
    f.metered
        .batch_get_item()
        .request_items(
            &f.keys,
            KeysAndAttributes::builder()
                .keys(to_item(&[("id", s("a"))]))
                .keys(to_item(&[("id", s("absent"))]))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&f.keys), 0.5 + 0.5);

    let get = |id: &str| {
        TransactGetItem::builder()
            .get(Get::builder().table_name(&f.keys).key("id", s(id)).build().unwrap())
            .build()
    };
    f.metered
        .transact_get_items()
        .transact_items(get("a"))
        .transact_items(get("absent"))
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&f.keys), 2.0 + 2.0);
}

#[tokio::test]
async fn a_query_of_three_small_items_costs_half_a_unit() {
    let f = Fixture::new().await;
    for entry in ["1", "2", "3"] {
        f.seed(
            &f.notes,
            &[
                ("channel", s("c")),
                ("entry", s(entry)),
                ("owner", s("ann")),
                ("at", n(1)),
            ],
        )
        .await;
    }
    let answer = f
        .metered
        .query()
        .table_name(&f.notes)
        .key_condition_expression("channel = :c")
        .expression_attribute_values(":c", s("c"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.items().len(), 3);
    assert_reads(&f.billed(&f.notes), 0.5);

    // The same through the index.
    let answer = f
        .metered
        .query()
        .table_name(&f.notes)
        .index_name("by_owner")
        .key_condition_expression("#owner = :owner")
        .expression_attribute_names("#owner", "owner")
        .expression_attribute_values(":owner", s("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.items().len(), 3);
    assert_reads(&f.billed(&f.notes), 0.5);
}

#[tokio::test]
async fn a_query_is_billed_on_what_it_evaluates_not_what_the_filter_keeps() {
    let f = Fixture::new().await;
    for entry in 0..10 {
        f.seed(
            &f.notes,
            &[
                ("channel", s("c")),
                ("entry", s(&format!("{entry:02}"))),
                ("payload", s(&"x".repeat(1000))),
            ],
        )
        .await;
    }
    let answer = f
        .metered
        .query()
        .table_name(&f.notes)
        .key_condition_expression("channel = :c")
        .filter_expression("payload = :nothing")
        .projection_expression("entry")
        .expression_attribute_values(":c", s("c"))
        .expression_attribute_values(":nothing", s("no such payload"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.items().len(), 0);
    // About 10 KB evaluated: three 4 KB blocks, half a unit each.
    assert_reads(&f.billed(&f.notes), 1.5);

    // Strongly consistent, counting only: the same items, at the full rate.
    f.metered
        .query()
        .table_name(&f.notes)
        .key_condition_expression("channel = :c")
        .select(Select::Count)
        .consistent_read(true)
        .expression_attribute_values(":c", s("c"))
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&f.notes), 3.0);

    // A limit stops the evaluation: two items, one 4 KB block.
    f.metered
        .query()
        .table_name(&f.notes)
        .key_condition_expression("channel = :c")
        .filter_expression("payload = :nothing")
        .limit(2)
        .expression_attribute_values(":c", s("c"))
        .expression_attribute_values(":nothing", s("no such payload"))
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&f.notes), 0.5);

    // A scan evaluates every item of the table.
    f.metered
        .scan()
        .table_name(&f.notes)
        .filter_expression("payload = :nothing")
        .expression_attribute_values(":nothing", s("no such payload"))
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&f.notes), 1.5);
}

#[tokio::test]
async fn requests_that_read_and_write_nothing_are_counted_and_free() {
    let f = Fixture::new().await;
    f.metered.describe_table().table_name(&f.keys).send().await.unwrap();
    f.metered.list_tables().send().await.unwrap();
    // A refused request: the key lacks the table's key attribute.
    let refused = f
        .metered
        .get_item()
        .table_name(&f.keys)
        .key("not_the_key", s("a"))
        .send()
        .await;
    assert!(refused.is_err());

    let usage = f.meter.usage();
    assert_eq!(usage.total_requests(), 3, "{usage:?}");
    assert_eq!(usage.requests.get("ListTables"), Some(&1));
    assert_eq!((usage.total_read_units(), usage.total_write_units()), (0.0, 0.0));
    let keys = usage.table(&f.keys);
    assert_eq!(keys.requests.get("DescribeTable"), Some(&1));
    assert_eq!(keys.requests.get("GetItem"), Some(&1));
}

#[tokio::test]
async fn a_local_index_asked_for_what_it_does_not_project_reads_the_table_too() {
    let f = Fixture::new().await;
    let table = format!("local-{:016x}", fastrand::u64(..));
    f.direct
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("channel", KeyType::Hash))
        .key_schema(key("entry", KeyType::Range))
        .attribute_definitions(attribute("channel", ScalarAttributeType::S))
        .attribute_definitions(attribute("entry", ScalarAttributeType::S))
        .attribute_definitions(attribute("at", ScalarAttributeType::N))
        .local_secondary_indexes(
            LocalSecondaryIndex::builder()
                .index_name("by_at")
                .key_schema(key("channel", KeyType::Hash))
                .key_schema(key("at", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes("note")
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    f.metered
        .put_item()
        .table_name(&table)
        .set_item(Some(to_item(&[
            ("channel", s("c")),
            ("entry", s("1")),
            ("at", n(1)),
            ("note", s("n")),
            ("payload", s(&"x".repeat(2000))),
        ])))
        .send()
        .await
        .unwrap();
    // About 2 KB in the table, a small entry in the index.
    assert_writes(&f.billed(&table), 2.0 + 1.0, 1.0);

    let query = || {
        f.metered
            .query()
            .table_name(&table)
            .index_name("by_at")
            .key_condition_expression("channel = :c")
            .expression_attribute_values(":c", s("c"))
    };
    query().send().await.unwrap();
    assert_reads(&f.billed(&table), 0.5);
    // Every attribute: the index entries, then each whole item from the table.
    query()
        .select(Select::AllAttributes)
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_reads(&f.billed(&table), 1.0 + 1.0);
}
