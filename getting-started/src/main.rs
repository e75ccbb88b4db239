//! Serves the service on 127.0.0.1:3000, on PostgreSQL when `DATABASE_URL` is set, in memory
//! otherwise. Ctrl-C stops the HTTP server, then the read model's workers.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (routes, host) =
        getting_started::open(std::env::var("DATABASE_URL").ok().as_deref()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let workers = tokio::spawn(async move {
        host.run(async {
            stopped.await.ok();
        })
        .await
    });
    axum::serve(listener, routes)
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    let _ = stop.send(());
    Ok(workers.await??)
}
