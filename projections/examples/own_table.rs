//! A read model in a table of its own, on PostgreSQL: typed columns, its own indexes, plain
//! SQL queries, and still exactly once and rebuildable.
//!
//! The projection writes through `Documents::postgres()`, the batch's open transaction, so
//! its rows commit with the checkpoint. Each row carries `Documents::generation()`: a
//! rebuild fills a new generation while queries read the active one (joined with
//! `projection_state`), and rows of retired generations are deleted after the switch.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run -p projections --example own_table
//! ```

use async_trait::async_trait;
use cqrs_core::{Aggregate, DomainEvent, Metadata, Repository};
use projections::{ApplyError, Documents, EventOf, EventProjection, ProjectionHost};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Cart;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum CartEvent {
    ItemAdded { sku: String, quantity: u32 },
}

impl DomainEvent for CartEvent {}

impl Aggregate for Cart {
    const TYPE: &'static str = "cart";
    type Id = str;
    type Command = (String, u32);
    type Event = CartEvent;
    type Error = std::convert::Infallible;
    type Services = ();

    fn handle(
        &self,
        _cart: &str,
        (sku, quantity): (String, u32),
        _: &(),
    ) -> Result<Vec<CartEvent>, Self::Error> {
        Ok(vec![CartEvent::ItemAdded { sku, quantity }])
    }

    fn apply(&mut self, _: &CartEvent) {}
}

/// Units of each product across all carts, in the table `product_demand`.
struct ProductDemand;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS product_demand (
    generation BIGINT NOT NULL, sku TEXT NOT NULL, units BIGINT NOT NULL,
    PRIMARY KEY (generation, sku))";

#[async_trait]
impl EventProjection for ProductDemand {
    type Aggregate = Cart;
    const NAME: &'static str = "product_demand";

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &EventOf<Cart>,
    ) -> Result<(), ApplyError> {
        let generation = docs.generation() as i64;
        let tx = docs
            .postgres()
            .ok_or_else(|| ApplyError::poison("needs PostgreSQL"))?;
        let CartEvent::ItemAdded { sku, quantity } = &event.event;
        sqlx::query(
            "INSERT INTO product_demand (generation, sku, units) VALUES ($1, $2, $3)
             ON CONFLICT (generation, sku) DO UPDATE SET units = product_demand.units + $3",
        )
        .bind(generation)
        .bind(sku)
        .bind(i64::from(*quantity))
        .execute(&mut *tx)
        .await
        .map_err(|e| ApplyError::Storage(e.into()))?;
        Ok(())
    }
}

/// What queries read: the active generation's rows.
const QUERY: &str = "SELECT d.sku, d.units FROM product_demand d
    JOIN projection_state s ON s.name = 'product_demand' AND s.active_generation = d.generation
    ORDER BY d.sku";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url =
        std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL to a PostgreSQL database")?;
    let host = ProjectionHost::open(Some(&url))
        .await?
        .with_typed(ProductDemand);
    let pool = sqlx::PgPool::connect(&url).await?;
    sqlx::query(SCHEMA).execute(&pool).await?;

    let carts = Repository::<Cart>::new(host.store().clone(), ());
    for (cart, sku, quantity) in [("c1", "MUG", 2), ("c2", "MUG", 1), ("c2", "TEE", 3)] {
        carts
            .execute(cart, (sku.to_owned(), quantity), &Metadata::new_request())
            .await?;
    }
    host.settle().await?;
    let live: Vec<(String, i64)> = sqlx::query_as(QUERY).fetch_all(&pool).await?;
    println!("live:    {live:?}");

    host.rebuild(ProductDemand::NAME, |_| {}).await?;
    sqlx::query(
        "DELETE FROM product_demand d USING projection_state s
         WHERE s.name = 'product_demand' AND d.generation < s.active_generation",
    )
    .execute(&pool)
    .await?;
    let rebuilt: Vec<(String, i64)> = sqlx::query_as(QUERY).fetch_all(&pool).await?;
    println!("rebuilt: {rebuilt:?}");
    assert_eq!(live, rebuilt);
    Ok(())
}
