//! A TCP proxy in front of the test server, for the faults a network makes.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a connection whose replies are being lost stays open after the first reply it
/// swallowed: long enough for the client to be left waiting, as after a real loss.
const LOSS_DELAY: Duration = Duration::from_millis(200);

/// A TCP proxy on a free local port in front of the server of a URL, whose connections can
/// be cut or made to lose the server's replies. It needs a server reached over TCP, as the
/// tests' default URL is.
///
/// ```no_run
/// # async fn run() {
/// use eventstore_postgres::testing::{Proxy, TestDatabase};
///
/// let db = TestDatabase::create(4).await;
/// let proxy = Proxy::start(&db.url).await;
/// let pool = proxy.pool(&db.url, 4).await;
/// proxy.cut(); // every connection open through it is closed; new ones go through
/// # }
/// ```
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    cuts: watch::Sender<u64>,
    losses: watch::Sender<u64>,
    held: watch::Sender<bool>,
}

impl Proxy {
    /// A proxy to the server of `url`.
    ///
    /// # Panics
    /// When `url` is not a PostgreSQL URL or no local port can be bound: test set-up.
    pub async fn start(url: &str) -> Self {
        let upstream: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
        let upstream = format!("{}:{}", upstream.get_host(), upstream.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (cuts, cut) = watch::channel(0);
        let (losses, loss) = watch::channel(0);
        let (held, hold) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (mut cut, mut loss, hold) = (cut.clone(), loss.clone(), hold.clone());
                cut.mark_unchanged();
                loss.mark_unchanged();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    // Both sockets are dropped, and so closed, when either ends.
                    tokio::select! {
                        _ = relay(client, server, loss, hold) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            cuts,
            losses,
            held,
        }
    }

    /// The options of `url` with the proxy in place of the server.
    pub fn options(&self, url: &str) -> PgConnectOptions {
        let options: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
        options.host("127.0.0.1").port(self.port)
    }

    /// A pool of up to `max_connections` to the database of `url`, through the proxy.
    ///
    /// # Panics
    /// When it cannot connect: test set-up.
    pub async fn pool(&self, url: &str, max_connections: u32) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(self.options(url))
            .await
            .expect("connect through the proxy")
    }

    /// Closes every connection open through the proxy, as a network cut does: each client
    /// sees its socket closed, with no error from the server. New connections go through.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// From now on, every connection open through the proxy loses what the server sends:
    /// the client's requests still reach the server, which runs them (and commits them),
    /// but the replies are dropped, and the connection is closed shortly after the first
    /// lost one. New connections go through.
    pub fn lose_replies(&self) {
        self.losses.send_modify(|n| *n += 1);
    }

    /// Stops passing what clients send to the server, on every connection, until
    /// [`Proxy::release_requests`]: a client sending more than the sockets' buffers hold
    /// is left waiting half-way through, as on a congested network.
    pub fn hold_requests(&self) {
        self.held.send_replace(true);
    }

    /// Passes what clients send again, what was held first.
    pub fn release_requests(&self) {
        self.held.send_replace(false);
    }
}

/// Carries bytes both ways until either side closes, or until replies are being lost and
/// [`LOSS_DELAY`] has passed since the first; requests wait while they are held.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    mut loss: watch::Receiver<u64>,
    mut hold: watch::Receiver<bool>,
) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let requests = async move {
        let mut buffer = vec![0; 16 * 1024];
        loop {
            if hold.wait_for(|held| !held).await.is_err() {
                return;
            }
            match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if hold.wait_for(|held| !held).await.is_err()
                        || to_server.write_all(&buffer[..n]).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let replies = async move {
        let mut buffer = vec![0; 16 * 1024];
        let mut losing = false;
        loop {
            tokio::select! {
                // A loss announced before a reply arrived applies to it.
                biased;
                changed = loss.changed(), if !losing => losing = changed.is_ok(),
                read = from_server.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) if losing => {
                        tokio::time::sleep(LOSS_DELAY).await;
                        return;
                    }
                    Ok(n) => {
                        if to_client.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                },
            }
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = replies => {}
    }
}
