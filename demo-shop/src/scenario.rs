//! The narrated end-to-end scenario `demo-shop` runs with no arguments.

use std::io::Write;

use cqrs_core::Metadata;

use crate::domain::money::{CustomerId, Money, OrderId, Sku};
use crate::gateway::{CARD_APPROVE, CARD_DECLINE, CARD_FLAKY};
use crate::read_models::{customer_orders, daily_sales, order_summaries, product_stock};
use crate::shop::{Shop, ShopError};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn sku(text: &str) -> Result<Sku> {
    Ok(Sku::new(text)?)
}

/// Runs the scenario, narrating to `out`. Fails if the rebuilt read model differs from the
/// live one.
pub async fn run(shop: &Shop, out: &mut impl Write) -> Result<()> {
    let meta = Metadata::new_request().with_actor("scenario");
    writeln!(
        out,
        "== The demo shop, on {} storage ==",
        shop.storage().kind()
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
        if let Some(o) = order_summaries::order(shop.read_models(), *order_id).await? {
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

    let (_, first) = &placed[0];
    shop.ship_order(*first, &meta).await?;
    shop.settle().await?;
    writeln!(
        out,
        "\n-- Ada's order shipped. Stock (read model `{}`)",
        product_stock::NAME
    )?;
    let stock_before = product_stock::products(shop.read_models()).await?;
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
    for o in customer_orders::orders_of(shop.read_models(), customers[0].1).await? {
        writeln!(
            out,
            "   {} {:>8}  {}",
            o.order_id,
            o.total.to_string(),
            o.status
        )?;
    }
    writeln!(out, "\n-- Daily sales (read model `{}`)", daily_sales::NAME)?;
    for day in daily_sales::days(shop.read_models()).await? {
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
    let report = shop.rebuild(product_stock::NAME, |_| {}).await?;
    let stock_after = product_stock::products(shop.read_models()).await?;
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
    for s in shop.status().await? {
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
