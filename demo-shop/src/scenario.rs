//! The narrated end-to-end scenario `demo-shop` runs with no arguments.

use std::io::Write;

use std::sync::Arc;

use cqrs_core::Metadata;
use messaging::{Broker, ChannelBroker};

use crate::domain::money::{CustomerId, Money, OrderId, Sku};
use crate::domain::order::OrderStatus;
use crate::gateway::{CARD_APPROVE, CARD_DECLINE, CARD_FLAKY};
use crate::read_models::{customer_orders, daily_sales, order_summaries, product_stock};
use crate::shop::{Shop, ShopError};
use crate::storage::Storage;
use crate::warehouse::{self, Warehouse};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn sku(text: &str) -> Result<Sku> {
    Ok(Sku::new(text)?)
}

/// Runs the warehouse beside `shop`, both talking through an in-process broker, until
/// every confirmed order is shipped (or 15 seconds pass); returns the warehouse.
async fn ship_through_the_warehouse(shop: &Shop) -> Result<Warehouse> {
    let broker: Arc<dyn Broker> = Arc::new(ChannelBroker::new());
    let warehouse = Warehouse::new(Storage::in_memory());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = shop.spawn_messaging(Arc::clone(&broker), stopped.clone());
    workers.extend(warehouse.spawn_workers(broker, stopped));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let outcome = loop {
        shop.settle().await?;
        let orders = order_summaries::all_orders(shop.host()).await?;
        if !orders.iter().any(|o| o.status == OrderStatus::Confirmed) {
            break Ok(());
        }
        if std::time::Instant::now() > deadline {
            break Err("the warehouse did not dispatch every confirmed order in 15 s".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    stop.send_replace(true);
    for worker in workers {
        worker.await??;
    }
    warehouse.catch_up().await?;
    outcome.map(|()| warehouse)
}

/// Runs the scenario, narrating to `out`. Fails if the rebuilt read model differs from the
/// live one.
pub async fn run(shop: &Shop, out: &mut impl Write) -> Result<()> {
    let meta = Metadata::new_request().with_actor("scenario");
    writeln!(
        out,
        "== The demo shop, on {} storage ==",
        shop.storage().kind
    )?;

    writeln!(out, "\n-- Registering products and stock")?;
    for (code, name, price, stock) in [
        ("MUG", "Enamel mug", 1_200, 10),
        ("TEE", "Logo tee", 2_500, 3),
        ("POSTER", "Launch poster", 800, 1),
    ] {
        shop.register_product(sku(code)?, name.into(), Money(price), &meta)
            .await?;
        shop.restock(sku(code)?, stock, &meta).await?;
        writeln!(
            out,
            "   {code:<7} {name:<14} {:>7}  x{stock}",
            Money(price).to_string()
        )?;
    }

    writeln!(
        out,
        "\n-- Placing orders (the checkout reserves stock, takes payment, confirms or cancels)"
    )?;
    let customers: Vec<(&str, CustomerId)> = ["ada", "bob", "cy", "dee"]
        .iter()
        .map(|n| (*n, CustomerId::new()))
        .collect();
    let orders = [
        (
            0,
            vec![("MUG", 2), ("TEE", 1)],
            CARD_APPROVE,
            "a mug pair and a tee, card approves",
        ),
        (
            1,
            vec![("POSTER", 2)],
            CARD_APPROVE,
            "two posters, only one in stock",
        ),
        (2, vec![("MUG", 1)], CARD_DECLINE, "a mug, card declines"),
        (
            3,
            vec![("TEE", 1)],
            CARD_FLAKY,
            "a tee, gateway times out once",
        ),
    ];
    let mut placed: Vec<(String, OrderId)> = Vec::new();
    for (who, lines, card, story) in orders {
        let lines = lines
            .into_iter()
            .map(|(s, q)| Ok((sku(s)?, q)))
            .collect::<Result<Vec<_>>>()?;
        let (order_id, _) = shop
            .place_order(customers[who].1, lines, card.into(), &meta)
            .await?;
        writeln!(out, "   {:<4} {story}", customers[who].0)?;
        placed.push((customers[who].0.to_owned(), order_id));
    }
    match shop
        .place_order(
            customers[0].1,
            vec![(sku("MUG")?, 0)],
            CARD_APPROVE.into(),
            &meta,
        )
        .await
    {
        Err(ShopError::Rejected(reason)) => {
            writeln!(out, "   ada  an order of zero mugs is refused: {reason}")?
        }
        other => return Err(format!("an order of zero mugs was not refused: {other:?}").into()),
    }
    shop.settle().await?;

    writeln!(
        out,
        "\n-- Order summaries (read model `{}`)",
        order_summaries::NAME
    )?;
    for (who, order_id) in &placed {
        if let Some(o) = order_summaries::order(shop.host(), *order_id).await? {
            let reason = o
                .cancel_reason
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            writeln!(
                out,
                "   {who:<4} {:>8}  {}{reason}",
                o.total.to_string(),
                o.status
            )?;
        }
    }

    writeln!(
        out,
        "\n-- The warehouse, a second service with a store of its own, hears of the orders over a \
         broker (in process here), picks and dispatches the confirmed ones; the shop ships them"
    )?;
    let warehouse = ship_through_the_warehouse(shop).await?;
    let mut shipments = warehouse::view::all(warehouse.host()).await?;
    shipments.sort_by_key(|s| placed.iter().position(|(_, id)| *id == s.order_id));
    for s in shipments {
        let who = placed
            .iter()
            .find(|(_, id)| *id == s.order_id)
            .map_or("?", |(who, _)| who.as_str());
        let order = order_summaries::order(shop.host(), s.order_id).await?;
        writeln!(
            out,
            "   {who:<4} shipment {:<10} {:<15} order {}",
            format!("{:?}", s.status).to_lowercase(),
            s.tracking.unwrap_or_default(),
            order.map(|o| o.status.to_string()).unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "\n-- Stock after shipping (read model `{}`)",
        product_stock::NAME
    )?;
    let stock_before = product_stock::products(shop.host()).await?;
    for p in &stock_before {
        writeln!(
            out,
            "   {:<7} available {:>2}  reserved {:>2}  sold {:>2}",
            p.sku.to_string(),
            p.available,
            p.reserved,
            p.sold
        )?;
    }

    writeln!(
        out,
        "\n-- Ada's history (read model `{}`)",
        customer_orders::NAME
    )?;
    for o in customer_orders::orders_of(shop.host(), customers[0].1).await? {
        writeln!(
            out,
            "   {} {:>8}  {}",
            o.order_id,
            o.total.to_string(),
            o.status
        )?;
    }
    writeln!(out, "\n-- Daily sales (read model `{}`)", daily_sales::NAME)?;
    for day in daily_sales::days(shop.host()).await? {
        writeln!(
            out,
            "   {}  {} orders  {}.{:02}",
            day.date,
            day.orders,
            day.revenue / 100,
            day.revenue % 100
        )?;
    }

    writeln!(
        out,
        "\n-- Rebuilding `{}` by replaying the log",
        product_stock::NAME
    )?;
    let report = shop.host().rebuild(product_stock::NAME, |_| {}).await?;
    let stock_after = product_stock::products(shop.host()).await?;
    let same = stock_after == stock_before;
    writeln!(
        out,
        "   replayed {} events into generation {} in {:?}: {}",
        report.applied,
        report.generation,
        report.elapsed,
        if same {
            "identical to the live read model"
        } else {
            "DIFFERENT from the live read model"
        }
    )?;

    writeln!(out, "\n-- Projections")?;
    for s in shop.host().status().await? {
        writeln!(
            out,
            "   {:<16} {:<10} checkpoint {:<14} lag {} events",
            s.name,
            format!("{:?}", s.state).to_lowercase(),
            s.checkpoint,
            s.lag_events
        )?;
    }
    if !same {
        return Err("the rebuilt read model differs from the live one".into());
    }
    writeln!(out, "\nDone.")?;
    Ok(())
}
