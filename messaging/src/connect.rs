//! [`broker_from_url`]: picks the broker by its URL's scheme.

use std::sync::Arc;

use crate::broker::{check_name, Broker};
use crate::channel::ChannelBroker;
use crate::error::{Error, Result};

/// The broker a URL names, with its exchange, stream and subject prefix, or topic named
/// `namespace` (e.g. `events`):
///
/// | URL | broker |
/// | --- | --- |
/// | `amqp://guest:guest@127.0.0.1:5672/%2f` | RabbitMQ (feature `rabbitmq`) |
/// | `nats://127.0.0.1:4222` | NATS JetStream (feature `nats`) |
/// | `kafka://127.0.0.1:9092` | Kafka (feature `kafka`) |
/// | `memory:` | a new in-process [`ChannelBroker`] |
///
/// ```
/// let broker = messaging::broker_from_url("memory:", "events").unwrap();
/// assert_eq!(broker.kind(), "channel");
/// assert!(messaging::broker_from_url("smtp://x", "events").is_err());
/// ```
pub fn broker_from_url(url: &str, namespace: &str) -> Result<Arc<dyn Broker>> {
    check_name(namespace)?;
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    match scheme {
        #[cfg(feature = "rabbitmq")]
        "amqp" | "amqps" => Ok(Arc::new(
            crate::rabbitmq::RabbitMq::new(url).with_exchange(namespace),
        )),
        #[cfg(feature = "nats")]
        "nats" => Ok(Arc::new(
            crate::nats::Nats::new(url).with_stream(namespace, namespace),
        )),
        #[cfg(feature = "kafka")]
        "kafka" => Ok(Arc::new(
            crate::kafka::Kafka::new(url).with_topic(namespace, 3),
        )),
        "memory" => Ok(Arc::new(ChannelBroker::new())),
        _ => Err(Error::Config(format!(
            "{url:?} names no broker this build knows: use amqp://, nats://, kafka:// or memory:"
        ))),
    }
}

/// Whether something accepts connections at the host and port of a broker URL (within a
/// second): a quick check for tools and tests before they connect.
pub fn is_reachable(url: &str) -> bool {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_ok()
        })
}
