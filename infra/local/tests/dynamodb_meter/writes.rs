//! What writes cost: puts, updates, deletes, transactions and batches, in the
//! table and in its indexes.

use aws_sdk_dynamodb::types::{Put, PutRequest, TransactWriteItem, WriteRequest};

use crate::{assert_writes, n, s, to_item, Fixture};

#[tokio::test]
async fn a_put_of_100_bytes_costs_one_unit_and_one_in_the_index() {
    let f = Fixture::new().await;
    f.metered
        .put_item()
        .table_name(&f.keys)
        .set_item(Some(to_item(&[
            ("id", s("a")),
            ("owner", s("ann")),
            ("at", n(1)),
            ("payload", s(&"x".repeat(70))),
        ])))
        .send()
        .await
        .unwrap();
    let usage = f.billed(&f.keys);
    assert_writes(&usage, 2.0, 1.0);
    assert_eq!(usage.requests.get("PutItem"), Some(&1));
}

#[tokio::test]
async fn a_put_of_one_and_a_half_kilobytes_costs_two_units() {
    let f = Fixture::new().await;
    // No `at`: the item is not in the index.
    f.metered
        .put_item()
        .table_name(&f.keys)
        .set_item(Some(to_item(&[
            ("id", s("a")),
            ("owner", s("ann")),
            ("payload", s(&"x".repeat(1500))),
        ])))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 2.0, 0.0);
}

#[tokio::test]
async fn a_put_that_moves_the_index_sort_key_costs_a_delete_and_a_put_in_the_index() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a")), ("owner", s("ann")), ("at", n(1))])
        .await;
    f.metered
        .put_item()
        .table_name(&f.keys)
        .set_item(Some(to_item(&[("id", s("a")), ("owner", s("ann")), ("at", n(2))])))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 1.0 + 2.0, 2.0);

    // The same item again: the index entry does not change.
    f.metered
        .put_item()
        .table_name(&f.keys)
        .set_item(Some(to_item(&[("id", s("a")), ("owner", s("ann")), ("at", n(2))])))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 1.0, 0.0);
}

#[tokio::test]
async fn an_update_writes_the_index_only_when_it_changes_a_projected_attribute() {
    let f = Fixture::new().await;
    f.seed(
        &f.notes,
        &[
            ("channel", s("c")),
            ("entry", s("1")),
            ("owner", s("ann")),
            ("at", n(1)),
            ("note", s("n")),
        ],
    )
    .await;
    let update = |expression: &str, value: &str| {
        f.metered
            .update_item()
            .table_name(&f.notes)
            .key("channel", s("c"))
            .key("entry", s("1"))
            .update_expression(expression)
            .expression_attribute_values(":v", s(value))
    };

    update("SET extra = :v", "not projected").send().await.unwrap();
    assert_writes(&f.billed(&f.notes), 1.0, 0.0);

    update("SET note = :v", "projected").send().await.unwrap();
    assert_writes(&f.billed(&f.notes), 1.0 + 1.0, 1.0);

    // Removing the index key takes the item out of the index: a delete.
    f.metered
        .update_item()
        .table_name(&f.notes)
        .key("channel", s("c"))
        .key("entry", s("1"))
        .update_expression("REMOVE #at")
        .expression_attribute_names("#at", "at")
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.notes), 1.0 + 1.0, 1.0);
}

#[tokio::test]
async fn an_update_is_billed_on_the_larger_of_the_item_before_and_after() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a")), ("payload", s(&"x".repeat(2500)))])
        .await;
    f.metered
        .update_item()
        .table_name(&f.keys)
        .key("id", s("a"))
        .update_expression("REMOVE payload")
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 3.0, 0.0);
}

#[tokio::test]
async fn a_transaction_of_two_small_puts_costs_twice_their_units() {
    let f = Fixture::new().await;
    let put = |id: &str, indexed: bool| {
        let mut item = vec![("id", s(id))];
        if indexed {
            item.extend([("owner", s("ann")), ("at", n(1))]);
        }
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&f.keys)
                    .set_item(Some(to_item(&item)))
                    .build()
                    .unwrap(),
            )
            .build()
    };

    f.metered
        .transact_write_items()
        .transact_items(put("a", false))
        .transact_items(put("b", false))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 4.0, 0.0);

    // Index writes follow the commit at the ordinary rate.
    f.metered
        .transact_write_items()
        .transact_items(put("c", true))
        .transact_items(put("d", true))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 4.0 + 2.0, 2.0);
}

#[tokio::test]
async fn a_cancelled_transaction_costs_its_prepare_writes() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("taken"))]).await;
    let result = f
        .metered
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&f.keys)
                        .set_item(Some(to_item(&[("id", s("taken")), ("owner", s("ann")), ("at", n(1))])))
                        .condition_expression("attribute_not_exists(id)")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&f.keys)
                        .set_item(Some(to_item(&[("id", s("free"))])))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await;
    assert!(result.is_err(), "the condition fails");
    assert_writes(&f.billed(&f.keys), 2.0, 0.0);
}

#[tokio::test]
async fn a_conditional_put_that_fails_still_costs_a_unit() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a")), ("owner", s("ann")), ("at", n(1))])
        .await;
    let error = f
        .metered
        .put_item()
        .table_name(&f.keys)
        .set_item(Some(to_item(&[("id", s("a")), ("owner", s("bob")), ("at", n(2))])))
        .condition_expression("attribute_not_exists(id)")
        .send()
        .await
        .unwrap_err();
    assert!(
        error
            .as_service_error()
            .is_some_and(|error| error.is_conditional_check_failed_exception()),
        "{error:?}"
    );
    assert_writes(&f.billed(&f.keys), 1.0, 0.0);
}

#[tokio::test]
async fn a_delete_costs_the_item_and_its_index_entry() {
    let f = Fixture::new().await;
    f.seed(&f.keys, &[("id", s("a")), ("owner", s("ann")), ("at", n(1))])
        .await;
    f.metered
        .delete_item()
        .table_name(&f.keys)
        .key("id", s("a"))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 1.0 + 1.0, 1.0);

    // Deleting what is not there still costs a unit.
    f.metered
        .delete_item()
        .table_name(&f.keys)
        .key("id", s("a"))
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 1.0, 0.0);
}

#[tokio::test]
async fn a_batch_write_bills_each_item_on_its_own() {
    let f = Fixture::new().await;
    let put = |id: &str, bytes: usize| {
        WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .set_item(Some(to_item(&[("id", s(id)), ("payload", s(&"x".repeat(bytes)))])))
                    .build()
                    .unwrap(),
            )
            .build()
    };
    f.metered
        .batch_write_item()
        .request_items(&f.keys, vec![put("a", 400), put("b", 3500)])
        .send()
        .await
        .unwrap();
    assert_writes(&f.billed(&f.keys), 1.0 + 4.0, 0.0);
}
