//! [`Kafka`]: Kafka (the protocol) through `rskafka`, a pure-Rust client.
//!
//! `rskafka` was chosen because it builds with no C toolchain or librdkafka, which keeps the
//! workspace's build lean; it speaks the protocol to any Kafka-compatible broker (Apache
//! Kafka, Redpanda, tansu). It has no consumer groups, which suits the design: a consumer
//! keeps its offsets in its inbox, in the same transaction as its effects.
//!
//! - The relay produces to one topic (`events` by default, created with 3 partitions when
//!   missing) with key = stream id, so each stream stays in one partition and in order, and
//!   waits for every partition's acknowledgement from all in-sync replicas (`acks=-1`).
//!   Headers carry `ce_id`, `ce_type` and `content-type`.
//! - A consumer fetches every partition from the offsets in its inbox; committing the next
//!   offset with the effects is its acknowledgement. Kafka keeps copies the relay sends
//!   again; the inbox drops them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rskafka::client::error::ProtocolError;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use rskafka::BackoffConfig;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::broker::{check_name, Broker, Delivery, Publisher, Subscription};
use crate::cloud_event::{CloudEvent, CONTENT_TYPE};
use crate::error::{Error, Result};

const KIND: &str = "kafka";

/// How long a fetch waits at the broker for records to arrive. A broker answers as soon as
/// one record is there; some Kafka-compatible ones (tansu 0.6) wait the whole time, so it is
/// kept short: it bounds the delivery latency there, at 50 idle fetches per second per
/// partition.
const FETCH_WAIT_MS: i32 = 20;

/// A Kafka-compatible broker: bootstrap address, topic and its partition count.
#[derive(Clone, Debug)]
pub struct Kafka {
    bootstrap: String,
    topic: String,
    partitions: i32,
}

impl Kafka {
    /// The broker at `bootstrap` (`host:port`, a `kafka://` prefix is accepted), topic
    /// `events` with 3 partitions.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        let bootstrap: String = bootstrap.into();
        Self {
            bootstrap: bootstrap
                .strip_prefix("kafka://")
                .unwrap_or(&bootstrap)
                .to_owned(),
            topic: "events".to_owned(),
            partitions: 3,
        }
    }

    /// Uses topic `topic` with `partitions` partitions (when it creates it) instead.
    pub fn with_topic(mut self, topic: impl Into<String>, partitions: i32) -> Self {
        self.topic = topic.into();
        self.partitions = partitions.max(1);
        self
    }

    async fn client(&self) -> Result<Client> {
        ClientBuilder::new(vec![self.bootstrap.clone()])
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(Duration::from_secs(10)),
            })
            .build()
            .await
            .map_err(|e| Error::unreachable(KIND, e))
    }

    /// The topic's partitions, the topic created first if missing.
    async fn partition_clients(&self) -> Result<Vec<Arc<PartitionClient>>> {
        let client = self.client().await?;
        let topics = client
            .list_topics()
            .await
            .map_err(|e| Error::unreachable(KIND, e))?;
        let partitions = match topics.iter().find(|t| t.name == self.topic) {
            Some(topic) => topic.partitions.len(),
            None => {
                let created = client
                    .controller_client()
                    .map_err(|e| Error::unreachable(KIND, e))?
                    .create_topic(&self.topic, self.partitions, 1, 5_000)
                    .await;
                if let Err(e) = created {
                    // Another process may have created it meanwhile.
                    tracing::debug!(topic = %self.topic, error = %e, "creating the topic");
                }
                usize::try_from(self.partitions).unwrap_or(1)
            }
        };
        let mut clients = Vec::with_capacity(partitions);
        for partition in 0..partitions {
            let partition = i32::try_from(partition)
                .map_err(|_| Error::Config("too many partitions".into()))?;
            let client = client
                .partition_client(&self.topic, partition, UnknownTopicHandling::Retry)
                .await
                .map_err(|e| Error::unreachable(KIND, e))?;
            clients.push(Arc::new(client));
        }
        Ok(clients)
    }

    /// Deletes the topic (tests and tools).
    pub async fn delete_topic(&self) -> Result<()> {
        self.client()
            .await?
            .controller_client()
            .map_err(|e| Error::unreachable(KIND, e))?
            .delete_topic(&self.topic, 5_000)
            .await
            .map_err(|e| Error::unreachable(KIND, e))
    }

    /// Each partition's high watermark (the offset the next record gets).
    pub async fn high_watermarks(&self) -> Result<Vec<u64>> {
        let mut marks = Vec::new();
        for client in self.partition_clients().await? {
            // As a fetch reports it (some Kafka-compatible brokers answer a ListOffsets
            // for the latest offset with a stale value).
            let earliest = client
                .get_offset(OffsetAt::Earliest)
                .await
                .map_err(|e| Error::unreachable(KIND, e))?;
            let (_, mark) = client
                .fetch_records(earliest, 1..2, 0)
                .await
                .map_err(|e| Error::unreachable(KIND, e))?;
            marks.push(u64::try_from(mark).unwrap_or(0));
        }
        Ok(marks)
    }

    fn source(&self, partition: i32) -> String {
        format!("kafka:{}:{partition}", self.topic)
    }
}

/// The partition of a stream: FNV-1a of its id, modulo the partition count.
fn partition_of(stream_id: &str, partitions: usize) -> usize {
    let hash = stream_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % partitions.max(1) as u64).unwrap_or(0)
}

#[async_trait]
impl Broker for Kafka {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn publisher(&self) -> Result<Arc<dyn Publisher>> {
        Ok(Arc::new(KafkaPublisher {
            partitions: self.partition_clients().await?,
        }))
    }

    async fn subscribe(
        &self,
        name: &str,
        _categories: &[String],
        cursors: &BTreeMap<String, u64>,
    ) -> Result<Box<dyn Subscription>> {
        // One topic holds every category: the consumer skips the ones it does not follow.
        check_name(name)?;
        let (sender, receiver) = mpsc::channel(4_096);
        let backlog = Arc::new(AtomicU64::new(0));
        let mut fetchers = JoinSet::new();
        let clients = self.partition_clients().await?;
        let behind: Arc<Vec<AtomicU64>> =
            Arc::new(clients.iter().map(|_| AtomicU64::new(0)).collect());
        for (index, client) in clients.into_iter().enumerate() {
            let source = self.source(client.partition());
            let earliest = earliest_offset(&client).await?;
            let start = cursors.get(&source).copied().unwrap_or(earliest);
            fetchers.spawn(fetch_partition(Fetcher {
                client,
                source,
                next: start,
                earliest,
                sender: sender.clone(),
                behind: Arc::clone(&behind),
                index,
                backlog: Arc::clone(&backlog),
            }));
        }
        Ok(Box::new(KafkaSubscription {
            receiver,
            backlog,
            _fetchers: fetchers,
        }))
    }
}

struct KafkaPublisher {
    partitions: Vec<Arc<PartitionClient>>,
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, events: &[CloudEvent]) -> Result<(), (usize, Error)> {
        let mut per_partition: Vec<(Vec<usize>, Vec<Record>)> =
            self.partitions.iter().map(|_| Default::default()).collect();
        for (i, event) in events.iter().enumerate() {
            let (indices, records) =
                &mut per_partition[partition_of(&event.subject, self.partitions.len())];
            indices.push(i);
            records.push(Record {
                key: Some(event.subject.as_bytes().to_vec()),
                value: Some(event.to_bytes()),
                headers: record_headers(event),
                timestamp: event.time,
            });
        }
        let mut sends = JoinSet::new();
        for (partition, (indices, records)) in per_partition.into_iter().enumerate() {
            if records.is_empty() {
                continue;
            }
            let client = Arc::clone(&self.partitions[partition]);
            let ids: Vec<uuid::Uuid> = indices.iter().map(|&i| events[i].id).collect();
            sends.spawn(async move { produce_in_order(&client, indices, ids, records).await });
        }
        let mut failure: Option<(usize, Error)> = None;
        while let Some(sent) = sends.join_next().await {
            let outcome = sent.map_err(|e| (0, Error::unreachable(KIND, e)));
            if let Err(err) = outcome.and_then(|r| r.map(|_| ())) {
                if failure.as_ref().is_none_or(|(i, _)| err.0 < *i) {
                    failure = Some(err);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// The most a produce request carries, well under the brokers' usual 1 MiB message limit.
const MAX_REQUEST_BYTES: usize = 512 * 1024;

/// Produces one partition's records in requests of at most [`MAX_REQUEST_BYTES`] (halved while
/// the broker finds one too large), one after another; on failure, the index (into the page)
/// of the first record of the request that failed. A record the broker finds too large on its
/// own is refused for good.
async fn produce_in_order(
    client: &PartitionClient,
    indices: Vec<usize>,
    ids: Vec<uuid::Uuid>,
    records: Vec<Record>,
) -> Result<(), (usize, Error)> {
    let mut start = 0;
    // Halved when the broker finds a request too large, back to the full size after.
    let mut limit = MAX_REQUEST_BYTES;
    while start < records.len() {
        let mut end = start;
        let mut size = 0;
        while end < records.len()
            && (end == start || size + records[end].approximate_size() <= limit)
        {
            size += records[end].approximate_size();
            end += 1;
        }
        let chunk = records[start..end].to_vec();
        if let Err(e) = client.produce(chunk, Compression::NoCompression).await {
            let too_large = matches!(
                &e,
                rskafka::client::error::Error::ServerError {
                    protocol_error: ProtocolError::MessageTooLarge
                        | ProtocolError::RecordListTooLarge,
                    ..
                }
            );
            if too_large && end > start + 1 {
                limit = (size / 2).max(1);
                continue;
            }
            let error = if too_large {
                Error::Refused {
                    broker: KIND,
                    message_id: ids[start],
                    reason: e.to_string(),
                }
            } else {
                Error::unreachable(KIND, e)
            };
            return Err((indices[start], error));
        }
        start = end;
        limit = MAX_REQUEST_BYTES;
    }
    Ok(())
}

struct Fetcher {
    client: Arc<PartitionClient>,
    source: String,
    next: u64,
    /// The partition's first offset still kept, as last seen.
    earliest: u64,
    sender: mpsc::Sender<Delivery>,
    behind: Arc<Vec<AtomicU64>>,
    index: usize,
    backlog: Arc<AtomicU64>,
}

/// The first offset `client`'s partition still keeps.
async fn earliest_offset(client: &PartitionClient) -> Result<u64> {
    let offset = client
        .get_offset(OffsetAt::Earliest)
        .await
        .map_err(|e| Error::unreachable(KIND, e))?;
    Ok(u64::try_from(offset).unwrap_or(0))
}

/// How far back a fetch may start before the wanted offset (see [`fetch_partition`]).
const MAX_STEP_BACK: u64 = 1 << 20;

/// How many fetches may look for the rest of a skipped batch before the gap is taken as real.
const MAX_SEARCHES: u32 = 24;

/// Fetches one partition from its start offset into the subscription's channel, in order,
/// until the subscription is dropped.
///
/// A fetch from inside a record batch must return that whole batch (the client drops the
/// records before the offset asked for). Some Kafka-compatible brokers (tansu 0.6) return the
/// next batch instead, skipping the rest of this one: a gap before the first record, or
/// nothing although the high watermark is beyond. Then the fetch starts again from further
/// back (never before the partition's first kept offset), and what was delivered already is
/// dropped, until the first record is the one wanted. A gap that remains from the first kept
/// offset is a real one (compaction, transaction markers) and is passed over; a fetch that
/// brings nothing waits before asking again.
async fn fetch_partition(mut f: Fetcher) {
    let mut failures = 0u32;
    let mut back = 0u64;
    // The offset a skipped batch is being searched for, and how many fetches it took.
    let mut searching: Option<(u64, u32)> = None;
    loop {
        if f.next < f.earliest {
            tracing::error!(source = %f.source, from = f.next, to = f.earliest, "records were deleted (retention) before this consumer read them; going on from the first one kept");
            f.next = f.earliest;
        }
        let from = f.next.saturating_sub(back).max(f.earliest);
        let offset = i64::try_from(from).unwrap_or(i64::MAX);
        match f
            .client
            .fetch_records(offset, 1..4_000_000, FETCH_WAIT_MS)
            .await
        {
            Ok((mut records, high_watermark)) => {
                failures = 0;
                let high = u64::try_from(high_watermark).unwrap_or(0);
                let returned_last = records.last().and_then(|r| u64::try_from(r.offset).ok());
                records.retain(|r| u64::try_from(r.offset).is_ok_and(|o| o >= f.next));
                let first = records.first().and_then(|r| u64::try_from(r.offset).ok());
                let skipped = first.map_or(high > f.next, |o| o > f.next);
                if skipped && searching.is_none_or(|(at, _)| at != f.next) {
                    searching = Some((f.next, 0));
                }
                if let Some((at, tries)) = searching.as_mut().filter(|_| skipped) {
                    if *at == f.next && *tries < MAX_SEARCHES {
                        *tries += 1;
                        back = match returned_last {
                            // Only records before the one wanted came (a size limit): go on
                            // right after them.
                            Some(last) if last + 1 < f.next => f.next - (last + 1),
                            _ if from > f.earliest && back < MAX_STEP_BACK => (back * 2).max(64),
                            _ => {
                                *tries = MAX_SEARCHES;
                                0
                            }
                        };
                        if *tries < MAX_SEARCHES {
                            continue;
                        }
                    }
                    // A real gap (compaction, transaction markers) or nothing more to find:
                    // go on from what is there, without searching again for this offset.
                }
                if !skipped {
                    searching = None;
                }
                back = 0;
                if records.is_empty() {
                    if skipped {
                        tokio::time::sleep(Duration::from_millis(FETCH_WAIT_MS as u64)).await;
                    }
                } else {
                    for record in records {
                        let next = u64::try_from(record.offset).unwrap_or(0) + 1;
                        let body = record.record.value.unwrap_or_default();
                        f.next = next;
                        let delivery = Delivery {
                            event: CloudEvent::from_bytes(&body),
                            tag: 0,
                            cursor: Some((f.source.clone(), next)),
                            body,
                        };
                        if f.sender.send(delivery).await.is_err() {
                            return;
                        }
                    }
                }
                f.behind[f.index].store(high.saturating_sub(f.next), Ordering::Relaxed);
                let total = f.behind.iter().map(|b| b.load(Ordering::Relaxed)).sum();
                f.backlog.store(total, Ordering::Relaxed);
            }
            Err(e) => {
                back = 0;
                failures = failures.saturating_add(1);
                tracing::warn!(source = %f.source, error = %e, "fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(20)))).await;
                // The partition's start may have moved on (retention).
                if let Ok(earliest) = earliest_offset(&f.client).await {
                    f.earliest = earliest;
                }
            }
        }
        if f.sender.is_closed() {
            return;
        }
    }
}

struct KafkaSubscription {
    receiver: mpsc::Receiver<Delivery>,
    backlog: Arc<AtomicU64>,
    _fetchers: JoinSet<()>,
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let Ok(first) = tokio::time::timeout(wait, self.receiver.recv()).await else {
            return Ok(Vec::new());
        };
        let first = first.ok_or_else(|| Error::unreachable(KIND, "the fetchers stopped"))?;
        let mut batch = vec![first];
        while batch.len() < max {
            match self.receiver.try_recv() {
                Ok(delivery) => batch.push(delivery),
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn ack(&mut self, _last: &Delivery) -> Result<()> {
        // The offsets committed with the effects are the acknowledgement.
        Ok(())
    }

    async fn backlog(&mut self) -> Result<Option<u64>> {
        Ok(Some(
            self.backlog.load(Ordering::Relaxed) + self.receiver.len() as u64,
        ))
    }
}

/// A record's headers: the event's id and type, the content type, and its trace (for tools
/// that read headers only; the body holds them all).
fn record_headers(event: &CloudEvent) -> BTreeMap<String, Vec<u8>> {
    let mut headers = BTreeMap::from([
        ("ce_id".to_owned(), event.id.to_string().into_bytes()),
        ("ce_type".to_owned(), event.event_type.as_bytes().to_vec()),
        ("content-type".to_owned(), CONTENT_TYPE.as_bytes().to_vec()),
    ]);
    if let Some(trace) = &event.traceparent {
        headers.insert(
            cqrs_core::trace::HEADER.to_owned(),
            trace.as_bytes().to_vec(),
        );
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_carries_its_trace_as_a_header() {
        let mut event = crate::cloud_event::sample("order-1");
        assert!(!record_headers(&event).contains_key("traceparent"));
        event.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let headers = record_headers(&event);
        assert_eq!(
            headers.get("traceparent").map(Vec::as_slice),
            event.traceparent.as_deref().map(str::as_bytes)
        );
        assert_eq!(
            headers.get("ce_id"),
            Some(&event.id.to_string().into_bytes())
        );
    }

    #[test]
    fn a_stream_always_goes_to_the_same_partition() {
        let p = partition_of("order-42", 3);
        assert!(p < 3);
        assert_eq!(partition_of("order-42", 3), p);
        let spread: std::collections::HashSet<usize> = (0..100)
            .map(|i| partition_of(&format!("order-{i}"), 3))
            .collect();
        assert_eq!(spread.len(), 3);
    }

    #[test]
    fn a_url_prefix_is_accepted() {
        assert_eq!(
            Kafka::new("kafka://127.0.0.1:9092").bootstrap,
            "127.0.0.1:9092"
        );
    }
}
