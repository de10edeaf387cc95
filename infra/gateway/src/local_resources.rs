//! What creating the template's tables and queues on a local server has in
//! common: each resource in template order, under its local name, created
//! unless it exists, and what was done with it. The services' calls stay in
//! `tables` and `queues`.

use std::future::Future;

use crate::GatewayError;

/// What [`crate::tables::create_tables`] did with one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOutcome {
    pub logical_id: String,
    pub name: String,
    /// `false` when the table already existed and was left alone.
    pub created: bool,
}

/// What [`crate::queues::create_queues`] did with one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOutcome {
    pub logical_id: String,
    pub name: String,
    /// The URL the server answers for it (moto's names its own account).
    pub url: String,
    /// `false` when the queue already existed and was left alone.
    pub created: bool,
}

/// Runs `create` on each of `resources` with its local name, in order, and
/// answers what it did with each; the first error stops the run.
pub(crate) async fn create_each<'a, R, O, Fut>(
    resources: &'a [R],
    local_name: impl Fn(&'a R) -> Result<String, GatewayError>,
    mut create: impl FnMut(&'a R, String) -> Fut,
) -> Result<Vec<O>, GatewayError>
where
    Fut: Future<Output = Result<O, GatewayError>>,
{
    let mut outcomes = Vec::new();
    for resource in resources {
        let name = local_name(resource)?;
        outcomes.push(create(resource, name).await?);
    }
    Ok(outcomes)
}
