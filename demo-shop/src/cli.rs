//! The command line: the scenario, the service, rebuilds, status and load.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::domain::money::OrderId;
use crate::gateway::{HttpGateway, PaymentGateway, SimulatedGateway};
use crate::shop::Shop;
use crate::storage::Storage;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The demo shop: orders, inventory and payments on the CQRS toolkit.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// PostgreSQL to run on; without it, everything runs in memory.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// The payment gateway service to call (host:port of a `demo-shop gateway`); without it,
    /// a simulated gateway runs in process.
    #[arg(long, env = "GATEWAY_ADDR", global = true)]
    pub gateway: Option<SocketAddr>,

    /// Seconds an order may wait for its payment to settle before the checkout cancels it.
    #[arg(long, env = "PAYMENT_TIMEOUT_SECS", global = true,
          default_value_t = crate::shop::PAYMENT_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub payment_timeout_secs: u64,

    /// The broker the services talk through (`amqp://…` RabbitMQ, `nats://…` NATS
    /// JetStream, `kafka://…` Kafka): `serve` publishes the shop's order events to it and
    /// ships the orders the warehouse dispatches; `warehouse` needs it. Without it, `serve`
    /// runs the shop alone.
    #[arg(long, env = "BROKER_URL", global = true, hide_env_values = true)]
    pub broker: Option<String>,

    /// The exchange (RabbitMQ), stream and subject prefix (NATS) or topic (Kafka) the
    /// services share: one per environment.
    #[arg(long, env = "BROKER_NAMESPACE", global = true, default_value = crate::integration::NAMESPACE)]
    pub broker_namespace: String,

    /// What to do; with none, runs the narrated scenario and exits.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Creates or updates the shop's tables in `DATABASE_URL` (the event store, the read
    /// models, the checkout, the inbox). `serve` and `warehouse` do it at start; the commands
    /// that only read or operate (`status`, `rebuild`, …) never do: they refuse a database
    /// that was not migrated.
    Migrate,
    /// Runs the HTTP API and the projection workers until Ctrl-C (migrating the database
    /// first).
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: SocketAddr,
        /// Where to serve the operators' routes (the web console and `/metrics`) instead of
        /// on `--addr`: a port only operators and the metrics scraper reach. Without it,
        /// `--addr` serves them too.
        #[arg(long, env = "ADMIN_ADDR")]
        admin_addr: Option<SocketAddr>,
    },
    /// Rebuilds one read model by replaying the log, with a progress bar.
    Rebuild {
        /// The projection: order_summaries, product_stock, customer_orders or daily_sales.
        projection: String,
    },
    /// Pauses a projection's worker, wherever it runs: the batch in flight ends first, then
    /// the worker keeps its lease and applies nothing more until `resume` (a rebuild goes on).
    /// Its read model still answers queries, falling behind. Workers of releases before
    /// pausing existed do not see the pause.
    Pause {
        /// The projection: order_summaries, product_stock, customer_orders or daily_sales.
        projection: String,
    },
    /// Lets a paused projection's worker go on from where it stopped.
    Resume {
        /// The projection.
        projection: String,
    },
    /// Empties a read model at once and has the running worker replay the log into it from
    /// the start; queries see it fill up again (`rebuild` keeps the old one serving
    /// meanwhile). Its dead letters are closed; the replay parks again those that still
    /// fail (an event skipped before is met again, and must be skipped again).
    Reset {
        /// The projection: order_summaries, product_stock, customer_orders or daily_sales.
        projection: String,
    },
    /// Prints every projection with its checkpoint and lag.
    Status,
    /// Prints a stream's events, oldest first: position, version, time, type, trace and
    /// correlation ids, payload. An order's stream is `order-{id}`, a product's
    /// `inventory-{sku}`, a payment's `payment-{order id}`.
    Stream {
        /// The stream id.
        stream: String,
        /// From this version on.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
    /// Prints the log's events as they are stored, until Ctrl-C (like `tail -f`).
    Follow {
        /// Where to start: `head` (new events only), `start` (the whole log) or a position
        /// `commit/sequence`.
        #[arg(long, default_value = "head")]
        from: String,
        /// Only the events of these categories (`order`, `inventory`, `payment`; repeat the
        /// option for several).
        #[arg(long = "category")]
        categories: Vec<String>,
        /// Stops after this many events.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Lists the events a projection could not apply, or retries or skips one.
    DeadLetters {
        /// The projection.
        projection: String,
        /// What to do; with none, lists them.
        #[command(subcommand)]
        action: Option<DeadLetterAction>,
    },
    /// Lists the messages a broker consumer (`shop`, or `warehouse` in the warehouse's
    /// database) could not apply, or asks for one to be retried (by the running consumer)
    /// or skipped.
    DeadMessages {
        /// The consumer.
        consumer: String,
        /// What to do; with none, lists them.
        #[command(subcommand)]
        action: Option<DeadMessageAction>,
    },
    /// Prints the checkout at a glance and its orders that are retrying or parked; or retries
    /// or skips the input a parked order is stuck at.
    Checkout {
        /// What to do; with none, lists.
        #[command(subcommand)]
        action: Option<CheckoutAction>,
    },
    /// Runs the warehouse, a second service with its own database (`DATABASE_URL`), until
    /// Ctrl-C: it consumes the shop's order events from the broker (`--broker`), picks and
    /// dispatches confirmed orders, and publishes its shipment events.
    Warehouse,
    /// Runs the simulated payment provider as an HTTP service until Ctrl-C.
    Gateway {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:3100")]
        addr: SocketAddr,
        /// How long it takes to answer, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// A file to keep the ledger in (JSON lines), so that it outlives a restart;
        /// without it, the ledger is kept in memory.
        #[arg(long)]
        ledger: Option<std::path::PathBuf>,
    },
    /// Places orders through the HTTP API and reports throughput and latency.
    Simulate {
        /// Orders to place.
        #[arg(long, default_value_t = 200)]
        orders: usize,
        /// Orders in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// A running `demo-shop serve` (host:port); without it, one is started in-process.
        #[arg(long)]
        target: Option<SocketAddr>,
    },
}

/// What to do with a dead letter.
#[derive(Debug, Subcommand)]
pub enum DeadLetterAction {
    /// Applies the event again: a stopped projection goes on from it; a parked one is applied
    /// by the live worker at its next batch.
    Retry {
        /// The event's id.
        event_id: uuid::Uuid,
    },
    /// Closes it without applying the event: a stopped projection goes on after it.
    Skip {
        /// The event's id.
        event_id: uuid::Uuid,
    },
}

/// What to do with a consumer's dead letter.
#[derive(Debug, Subcommand)]
pub enum DeadMessageAction {
    /// Runs the consumer's handler on it again (the running consumer does, within seconds).
    Retry {
        /// Its number, as listed.
        id: i64,
    },
    /// Closes it without applying it.
    Skip {
        /// Its number, as listed.
        id: i64,
    },
}

/// What to do with a parked order.
#[derive(Debug, Subcommand)]
pub enum CheckoutAction {
    /// Runs the input it is parked at again.
    Retry {
        /// The order.
        order_id: uuid::Uuid,
    },
    /// Drops the input it is parked at and goes on with the next.
    Skip {
        /// The order.
        order_id: uuid::Uuid,
    },
}

/// Where the shop runs and what it pays through.
struct Setup<'a> {
    database_url: Option<&'a str>,
    gateway: Option<SocketAddr>,
    payment_timeout: std::time::Duration,
}

async fn shop(setup: &Setup<'_>) -> Result<Shop> {
    let storage = match setup.database_url {
        Some(url) => Storage::postgres(url).await?,
        None => Storage::in_memory(),
    };
    Ok(shop_on(setup, storage))
}

fn shop_on(setup: &Setup<'_>, storage: Storage) -> Shop {
    let gateway: Arc<dyn PaymentGateway> = match setup.gateway {
        Some(addr) => Arc::new(HttpGateway::new(addr)),
        None => Arc::new(SimulatedGateway::new()),
    };
    Shop::new(storage, gateway).with_payment_timeout(setup.payment_timeout)
}

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<()> {
    let url = &Setup {
        database_url: cli.database_url.as_deref(),
        gateway: cli.gateway,
        payment_timeout: std::time::Duration::from_secs(cli.payment_timeout_secs),
    };
    let mut out = std::io::stdout();
    match cli.command {
        None => crate::scenario::run(&shop(url).await?, &mut out).await,
        Some(Command::Migrate) => {
            let db = url
                .database_url
                .ok_or("`migrate` needs DATABASE_URL (or --database-url)")?;
            Storage::postgres(db).await?;
            println!("migrated {}", crate::storage::redacted(db));
            Ok(())
        }
        Some(Command::Serve { addr, admin_addr }) => {
            let broker = cli
                .broker
                .as_deref()
                .map(|b| broker(b, &cli.broker_namespace))
                .transpose()?;
            serve(shop(url).await?, addr, admin_addr, broker).await
        }
        Some(Command::Warehouse) => {
            let url_of_broker = cli.broker.as_deref().ok_or(
                "the warehouse talks to the shop only through a broker: set BROKER_URL (or --broker), e.g. amqp://guest:guest@127.0.0.1:5672/%2f",
            )?;
            let broker = broker(url_of_broker, &cli.broker_namespace)?;
            let storage = match url.database_url {
                Some(db) => Storage::postgres(db).await?,
                None => Storage::in_memory(),
            };
            let warehouse = crate::warehouse::Warehouse::new(storage);
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let workers = warehouse.spawn_workers(broker, stopped);
            tracing::info!(storage = warehouse.storage().kind, "warehouse running");
            stop_signal().await;
            stop.send_replace(true);
            join_workers(workers).await;
            Ok(())
        }
        Some(Command::Gateway {
            addr,
            latency_ms,
            ledger,
        }) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let latency = std::time::Duration::from_millis(latency_ms);
            let gateway = Arc::new(match ledger {
                Some(path) => SimulatedGateway::with_ledger_file(&path, latency)
                    .map_err(|e| format!("cannot open the ledger {}: {e}", path.display()))?,
                None => SimulatedGateway::with_latency(latency),
            });
            tracing::info!(%addr, "payment gateway serving");
            crate::gateway::serve_service(listener, gateway, async {
                stop_signal().await;
            })
            .await?;
            Ok(())
        }
        Some(Command::Checkout { action }) => {
            let shop = needs_database(url, "checkout").await?;
            match action {
                None => {
                    let (summary, troubled) = shop.checkout_status().await?;
                    writeln!(
                        out,
                        "checkout: {} orders, {} retrying, {} parked, {} inputs due, {} deadlines \
                         scheduled, intake at {}",
                        summary.instances,
                        summary.retrying,
                        summary.parked,
                        summary.due_inputs,
                        summary.scheduled_deadlines,
                        summary.intake_position
                    )?;
                    writeln!(
                        out,
                        "{:<36} {:<8} {:>3} {:>7} {:<25} last error",
                        "order", "state", "try", "pending", "next at"
                    )?;
                    for i in troubled {
                        writeln!(
                            out,
                            "{:<36} {:<8} {:>3} {:>7} {:<25} {}",
                            i.instance,
                            format!("{:?}", i.state).to_lowercase(),
                            i.attempts,
                            i.pending,
                            i.next_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                            i.last_error.unwrap_or_default()
                        )?;
                    }
                }
                Some(CheckoutAction::Retry { order_id }) => {
                    shop.resolve_checkout(OrderId(order_id), projections::Resolution::Retry)
                        .await?;
                    writeln!(out, "order {order_id}: its checkout goes on, trying again")?;
                }
                Some(CheckoutAction::Skip { order_id }) => {
                    shop.resolve_checkout(OrderId(order_id), projections::Resolution::Skip)
                        .await?;
                    writeln!(
                        out,
                        "order {order_id}: its checkout goes on after the skipped input"
                    )?;
                }
            }
            Ok(())
        }
        Some(Command::DeadMessages { consumer, action }) => {
            let shop = needs_database(url, "dead-messages").await?;
            let crate::storage::Inboxes::Postgres(inbox) = &shop.storage().inbox else {
                return Err("dead messages are kept in PostgreSQL".into());
            };
            use messaging::Inbox;
            let resolution = match action {
                None => {
                    writeln!(
                        out,
                        "{:>5} {:<8} {:>3} {:<36} {:<25} error",
                        "id", "status", "try", "message", "recorded at"
                    )?;
                    for d in inbox.dead_letters(&consumer).await? {
                        writeln!(
                            out,
                            "{:>5} {:<8} {:>3} {:<36} {:<25} {}",
                            d.id,
                            d.status.as_str(),
                            d.attempts,
                            d.message_id.map(|m| m.to_string()).unwrap_or_default(),
                            d.recorded_at.to_rfc3339(),
                            d.error
                        )?;
                    }
                    return Ok(());
                }
                Some(DeadMessageAction::Retry { id }) => (id, projections::Resolution::Retry),
                Some(DeadMessageAction::Skip { id }) => (id, projections::Resolution::Skip),
            };
            if !inbox.resolve(&consumer, resolution.0, resolution.1).await? {
                return Err(format!("{consumer} has no open dead letter {}", resolution.0).into());
            }
            writeln!(
                out,
                "{consumer}: dead letter {} {}",
                resolution.0,
                match resolution.1 {
                    projections::Resolution::Retry =>
                        "will be applied again by the running consumer",
                    projections::Resolution::Skip => "skipped",
                }
            )?;
            Ok(())
        }
        Some(Command::Stream { stream, from }) => {
            let shop = needs_database(url, "stream").await?;
            let stream = cqrs_core::StreamId::new(stream)?;
            let store = &shop.storage().store;
            let events =
                cqrs_core::store::read_stream_to_end(store.as_ref(), &stream, from, 1_000).await?;
            if events.is_empty() {
                return Err(
                    format!("stream {stream} holds no event from version {from} on").into(),
                );
            }
            for event in &events {
                write_event(&mut out, event)?;
            }
            Ok(())
        }
        Some(Command::Follow {
            from,
            categories,
            limit,
        }) => {
            let shop = needs_database(url, "follow").await?;
            let store = Arc::clone(&shop.storage().store);
            let after = match from.as_str() {
                "head" => store.head().await?,
                "start" => cqrs_core::Position::START,
                position => position.parse().map_err(|_| {
                    format!("--from {position:?}: use head, start or a position like 812/40")
                })?,
            };
            if let Some(bad) = categories
                .iter()
                .find(|c| cqrs_core::StreamId::category_ids(c).is_none())
            {
                return Err(format!("--category {bad:?}: a category is a stream id's part before the first '-', e.g. order").into());
            }
            let filter = cqrs_core::EventFilter::all().categories(categories);
            let mut follower = cqrs_core::follow::Follower::new(store, after, filter);
            let mut printed = 0;
            let stop = tokio::signal::ctrl_c();
            tokio::pin!(stop);
            while limit.is_none_or(|limit| printed < limit) {
                let events = tokio::select! {
                    _ = &mut stop => break,
                    events = follower.next(std::time::Duration::from_secs(1)) => events?,
                };
                for event in events
                    .iter()
                    .take(limit.map_or(usize::MAX, |l| l - printed))
                {
                    write_event(&mut out, event)?;
                    printed += 1;
                }
                out.flush()?;
            }
            Ok(())
        }
        Some(Command::Status) => {
            let shop = needs_database(url, "status").await?;
            writeln!(
                out,
                "{:<16} {:<11} {:>4} {:<20} {:<20} {:>10} {:>9}  last error",
                "projection", "state", "gen", "checkpoint", "head", "lag", "lag (s)"
            )?;
            for s in shop.host().status().await? {
                writeln!(
                    out,
                    "{:<16} {:<11} {:>4} {:<20} {:<20} {:>10} {:>9.1}  {}",
                    s.name,
                    s.state.as_str(),
                    s.generation,
                    s.checkpoint,
                    s.head,
                    s.lag_events,
                    s.lag_seconds,
                    s.last_error.unwrap_or_default()
                )?;
            }
            Ok(())
        }
        Some(Command::DeadLetters { projection, action }) => {
            let shop = needs_database(url, "dead-letters").await?;
            match action {
                None => {
                    writeln!(
                        out,
                        "{:<36} {:<8} {:>3} {:<9} {:<20} {:<24} error",
                        "event", "status", "try", "blocking", "position", "stream"
                    )?;
                    for letter in shop.host().dead_letters(&projection).await? {
                        writeln!(
                            out,
                            "{:<36} {:<8} {:>3} {:<9} {:<20} {:<24} {}",
                            letter.failure.event_id,
                            letter.status.as_str(),
                            letter.attempts,
                            if letter.blocking { "stopped" } else { "parked" },
                            letter.failure.position.to_string(),
                            letter.failure.stream_id,
                            letter.failure.error
                        )?;
                    }
                }
                Some(DeadLetterAction::Retry { event_id }) => {
                    shop.host()
                        .resolve_dead_letter(&projection, event_id, projections::Resolution::Retry)
                        .await?;
                    writeln!(out, "{projection}: event {event_id} will be applied again")?;
                }
                Some(DeadLetterAction::Skip { event_id }) => {
                    shop.host()
                        .resolve_dead_letter(&projection, event_id, projections::Resolution::Skip)
                        .await?;
                    writeln!(out, "{projection}: event {event_id} skipped")?;
                }
            }
            Ok(())
        }
        Some(Command::Pause { projection }) => {
            let shop = needs_database(url, "pause").await?;
            shop.host().pause(&projection).await?;
            writeln!(
                out,
                "paused {projection}: its worker applies nothing until `resume`"
            )?;
            Ok(())
        }
        Some(Command::Resume { projection }) => {
            let shop = needs_database(url, "resume").await?;
            shop.host().resume(&projection).await?;
            writeln!(out, "resumed {projection}")?;
            Ok(())
        }
        Some(Command::Reset { projection }) => {
            let shop = needs_database(url, "reset").await?;
            let generation = shop.host().reset(&projection).await?;
            let paused = shop
                .host()
                .status()
                .await?
                .iter()
                .any(|s| s.name == projection && s.paused_at.is_some());
            let next = if paused {
                "it is paused: `resume` it to replay the log into it"
            } else {
                "the running worker replays the log into it"
            };
            writeln!(
                out,
                "reset {projection}: generation {generation} is empty; {next}"
            )?;
            Ok(())
        }
        Some(Command::Rebuild { projection }) => {
            let shop = needs_database(url, "rebuild").await?;
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
                )?
                .progress_chars("=> "),
            );
            bar.set_message(projection.clone());
            let report = shop
                .host()
                .rebuild(&projection, |p| {
                    bar.set_length(p.total.max(p.done));
                    bar.set_position(p.done);
                })
                .await?;
            bar.finish();
            writeln!(
                out,
                "rebuilt {projection}: {} events into generation {} in {:?}",
                report.applied, report.generation, report.elapsed
            )?;
            Ok(())
        }
        Some(Command::Simulate {
            orders,
            concurrency,
            target,
        }) => {
            let load = crate::simulate::Load {
                orders,
                concurrency,
            };
            match target {
                Some(addr) => crate::simulate::run(addr, load, &mut out).await,
                None => {
                    let shop = shop(url).await?;
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let addr = listener.local_addr()?;
                    let (stop, stopped) = tokio::sync::watch::channel(false);
                    let workers = shop.spawn_workers(stopped.clone());
                    let server = tokio::spawn(crate::http::serve(
                        listener,
                        crate::http::router(Arc::new(shop)),
                        async move {
                            let mut stopped = stopped;
                            let _ = stopped.wait_for(|s| *s).await;
                        },
                    ));
                    let outcome = crate::simulate::run(addr, load, &mut out).await;
                    stop.send_replace(true);
                    let _ = server.await;
                    for worker in workers {
                        let _ = worker.await;
                    }
                    outcome
                }
            }
        }
    }
}

/// One event on one line: position, stream and version, time, type, trace and correlation
/// ids, payload.
fn write_event(out: &mut impl Write, event: &cqrs_core::RecordedEvent) -> std::io::Result<()> {
    let trace = event.metadata.trace();
    writeln!(
        out,
        "{:<14} {}@{} {} {} trace={} correlation={} {}",
        event.position.to_string(),
        event.stream_id,
        event.stream_version,
        event
            .recorded_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        event.event.event_type,
        trace.as_ref().map_or("-", |t| t.trace_id()),
        event
            .metadata
            .correlation_id
            .map_or_else(|| "-".to_owned(), |id| id.to_string()),
        event.event.payload
    )
}

/// The shop on an existing, migrated database, for a command that only reads or operates:
/// it changes no schema.
async fn needs_database(setup: &Setup<'_>, what: &str) -> Result<Shop> {
    match setup.database_url {
        Some(url) => Ok(shop_on(setup, Storage::postgres_migrated(url).await?)),
        None => Err(format!("`{what}` works on a shop's stored events: set DATABASE_URL (or --database-url); in memory nothing outlives the process").into()),
    }
}

/// The broker at `url`, with the services' exchange, stream or topic `namespace`.
fn broker(url: &str, namespace: &str) -> Result<Arc<dyn messaging::Broker>> {
    Ok(messaging::broker_from_url(url, namespace)?)
}

async fn join_workers(workers: Vec<tokio::task::JoinHandle<projections::Result<()>>>) {
    for worker in workers {
        if let Ok(Err(error)) = worker.await {
            tracing::error!(%error, "a worker stopped with an error");
        }
    }
}

async fn serve(
    shop: Shop,
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    broker: Option<Arc<dyn messaging::Broker>>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let admin = match admin_addr {
        Some(admin_addr) => Some(tokio::net::TcpListener::bind(admin_addr).await?),
        None => None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = shop.spawn_workers(stopped.clone());
    if let Some(broker) = broker {
        tracing::info!(
            broker = broker.kind(),
            "talking to the warehouse through the broker"
        );
        workers.extend(shop.spawn_messaging(broker, stopped));
    }
    tracing::info!(%addr, ?admin_addr, storage = shop.storage().kind, "serving");
    let shop = Arc::new(shop);
    match admin {
        None => {
            crate::http::serve(listener, crate::http::router(shop), async {
                stop_signal().await;
            })
            .await?
        }
        Some(admin) => {
            // Both listeners stop on the same signal.
            let (stopping, _) = tokio::sync::broadcast::channel::<()>(1);
            let when_stopping = |stopping: &tokio::sync::broadcast::Sender<()>| {
                let mut stopped = stopping.subscribe();
                async move {
                    let _ = stopped.recv().await;
                }
            };
            let api = crate::http::serve(
                listener,
                crate::http::api_router(Arc::clone(&shop)),
                when_stopping(&stopping),
            );
            let operators = crate::http::serve(
                admin,
                crate::http::admin_router(shop),
                when_stopping(&stopping),
            );
            let signal = async {
                stop_signal().await;
                let _ = stopping.send(());
            };
            let (api, operators, ()) = tokio::join!(api, operators, signal);
            api?;
            operators?;
        }
    }
    stop.send_replace(true);
    join_workers(workers).await;
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM (what a service manager or a container runtime
/// sends to stop a service).
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
