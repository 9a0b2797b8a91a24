//! Task events to containerd: an ordered queue drained by one task that forwards each event
//! over ttrpc to `TTRPC_ADDRESS`. Publishing never blocks a request, and events leave in the
//! order they were published (invariant 6). While containerd is away (restarting, hung) an
//! event is retried with capped backoff for as long as it takes; only containerd refusing it
//! drops it. The queue is bounded by count, so a containerd gone for good cannot make the shim
//! grow without end.

use crate::conn::Conn;
use crate::protos::forward::{Envelope, ForwardRequest};
use crate::protos::forward_ttrpc::EventsClient;
use crate::protos::FullName;
use protobuf::well_known_types::any::Any;
use protobuf::MessageField;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

pub const TASK_CREATE: &str = "/tasks/create";
pub const TASK_START: &str = "/tasks/start";
pub const TASK_EXIT: &str = "/tasks/exit";
pub const TASK_EXEC_ADDED: &str = "/tasks/exec-added";
pub const TASK_EXEC_STARTED: &str = "/tasks/exec-started";
pub const TASK_DELETE: &str = "/tasks/delete";
pub const TASK_PAUSED: &str = "/tasks/paused";
pub const TASK_RESUMED: &str = "/tasks/resumed";
pub const TASK_CHECKPOINTED: &str = "/tasks/checkpointed";
pub const TASK_OOM: &str = "/tasks/oom";

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two tries of one event.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Events waiting at most: a few hundred bytes each, so about a megabyte. Past it new events
/// are dropped (and logged); the ones queued keep their order.
const QUEUE_LIMIT: usize = 4096;

enum Item {
    Event(Envelope),
    /// Answered once everything queued before it has been sent (or given up on).
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::UnboundedSender<Item>,
    namespace: String,
    /// Events published and not yet delivered or given up on.
    waiting: Arc<AtomicUsize>,
    /// Events dropped since the queue last had room, for one log line per overflow.
    dropped: Arc<AtomicUsize>,
    hurry: Arc<Hurry>,
}

/// Set once the shim is shutting down: an event waiting for containerd is then tried again
/// at once and every 100 ms, not after a backoff of up to 5 s that would outlast the flush.
/// containerd 1.7 and later shut down, as they start, each shim whose task ended while they
/// were down; the exit that shim kept for containerd must still get through.
#[derive(Default)]
struct Hurry {
    set: AtomicBool,
    woken: Notify,
}

/// Packed under the type URL containerd's typeurl registry knows: the message's full name,
/// no prefix.
pub fn pack<M: FullName>(msg: &M) -> Any {
    let mut any = Any::new();
    any.type_url = M::FULL_NAME.to_string();
    // Serializing a message we built ourselves cannot fail short of memory exhaustion.
    any.value = msg.write_to_bytes().unwrap_or_default();
    any
}

impl Publisher {
    /// Starts the forwarding task. With no address (no containerd to tell), events are dropped.
    pub fn start(address: Option<String>, namespace: &str) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let hurry = Arc::new(Hurry::default());
        let forwarder = Forwarder {
            address,
            namespace: namespace.to_string(),
            waiting: waiting.clone(),
            dropped: dropped.clone(),
            hurry: hurry.clone(),
        };
        tokio::spawn(forwarder.run(rx));
        Publisher {
            queue: tx,
            namespace: namespace.to_string(),
            waiting,
            dropped,
            hurry,
        }
    }

    pub fn publish<M: FullName>(&self, topic: &str, event: &M) {
        let mut envelope = Envelope::new();
        envelope.timestamp = MessageField::some(crate::time::now());
        envelope.namespace = self.namespace.clone();
        envelope.topic = topic.to_string();
        envelope.event = MessageField::some(pack(event));
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= QUEUE_LIMIT {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if self.dropped.fetch_add(1, Ordering::SeqCst) == 0 {
                log::error!(
                    "event queue full ({QUEUE_LIMIT} waiting for containerd): dropping {topic} \
                     and every new event until it drains"
                );
            }
            return;
        }
        if self.queue.send(Item::Event(envelope)).is_err() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            log::warn!("event {topic} dropped: publisher stopped");
        }
    }

    /// Waits, at most `limit`, until every event published so far has left; events still
    /// waiting for containerd are tried again at once, then every 100 ms.
    pub async fn flush(&self, limit: Duration) {
        self.hurry.set.store(true, Ordering::SeqCst);
        self.hurry.woken.notify_one();
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Item::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }
}

/// The draining side of the queue.
struct Forwarder {
    address: Option<String>,
    namespace: String,
    waiting: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
    hurry: Arc<Hurry>,
}

impl Forwarder {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Item>) {
        let mut client: Option<EventsClient> = None;
        while let Some(item) = rx.recv().await {
            let envelope = match item {
                Item::Event(e) => e,
                Item::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            if let Some(address) = self.address.as_deref() {
                let mut request = ForwardRequest::new();
                request.envelope = MessageField::some(envelope);
                self.deliver(&mut client, address, &request).await;
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            let dropped = self.dropped.swap(0, Ordering::SeqCst);
            if dropped > 0 {
                log::error!("event queue has room again: {dropped} events were dropped");
            }
        }
    }

    /// Sends one event until containerd has it, or has refused it.
    async fn deliver(
        &self,
        client: &mut Option<EventsClient>,
        address: &str,
        request: &ForwardRequest,
    ) {
        let topic = &request.envelope.topic;
        for attempt in 0u32.. {
            match send(client, address, &self.namespace, request).await {
                Ok(()) => {
                    if attempt > 0 {
                        log::info!("event {topic} delivered after {attempt} retries");
                    }
                    return;
                }
                Err(Failure::Refused(e)) => {
                    log::error!("containerd refused event {topic}: {e}");
                    return;
                }
                Err(Failure::Away(e)) => {
                    *client = None;
                    // Once per doubling, so a long outage does not flood the log.
                    if attempt.is_power_of_two() || attempt == 0 {
                        log::warn!(
                            "event {topic} waits for containerd (try {}): {e}",
                            attempt + 1
                        );
                    }
                    let wait = if self.hurry.set.load(Ordering::SeqCst) {
                        backoff(0)
                    } else {
                        backoff(attempt)
                    };
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.hurry.woken.notified() => {}
                    }
                }
            }
        }
    }
}

/// Why a send failed: containerd could not be reached or did not answer (try again), or it
/// answered that it will not take the event (trying again would not change that).
enum Failure {
    Away(String),
    Refused(String),
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(6)).min(MAX_BACKOFF)
}

async fn send(
    client: &mut Option<EventsClient>,
    address: &str,
    namespace: &str,
    request: &ForwardRequest,
) -> Result<(), Failure> {
    if client.is_none() {
        let path = address.strip_prefix("unix://").unwrap_or(address);
        let c = if path.starts_with('@') {
            // An abstract socket: ttrpc's own stream, which knows the `@` form.
            ttrpc::r#async::Client::connect(&format!("unix://{path}"))
                .await
                .map_err(|e| e.to_string())
        } else {
            Conn::connect(std::path::Path::new(path))
                .await
                .map(|conn| {
                    ttrpc::r#async::Client::new(ttrpc::r#async::transport::Socket::new(conn))
                })
                .map_err(|e| e.to_string())
        }
        .map_err(|e| Failure::Away(format!("connect {path}: {e}")))?;
        *client = Some(EventsClient::new(c));
    }
    let Some(c) = client.as_ref() else {
        return Err(Failure::Away("no client".into()));
    };
    let mut ctx = ttrpc::context::with_timeout(REQUEST_TIMEOUT.as_nanos() as i64);
    ctx.add(
        "containerd-namespace-ttrpc".to_string(),
        namespace.to_string(),
    );
    c.forward(ctx, request)
        .await
        .map(drop)
        .map_err(|e| match e {
            ttrpc::Error::RpcStatus(s) if !transient(s.code()) => {
                Failure::Refused(format!("{:?}: {}", s.code(), s.message()))
            }
            other => Failure::Away(other.to_string()),
        })
}

/// Codes containerd (or ttrpc on its behalf) answers while it cannot take events yet.
fn transient(code: ttrpc::Code) -> bool {
    matches!(
        code,
        ttrpc::Code::UNAVAILABLE
            | ttrpc::Code::DEADLINE_EXCEEDED
            | ttrpc::Code::RESOURCE_EXHAUSTED
            | ttrpc::Code::ABORTED
            | ttrpc::Code::CANCELLED
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protos::events::TaskStart;

    #[test]
    fn events_are_packed_with_containerds_bare_type_urls() {
        let mut start = TaskStart::new();
        start.container_id = "c".into();
        start.pid = 9;
        let any = pack(&start);
        assert_eq!(any.type_url, "containerd.events.TaskStart");
        assert_eq!(
            <TaskStart as protobuf::Message>::parse_from_bytes(&any.value).unwrap(),
            start
        );
    }

    #[test]
    fn retries_back_off_to_a_cap_and_never_overflow() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(4), Duration::from_millis(1600));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn only_an_answer_that_refuses_the_event_gives_it_up() {
        assert!(transient(ttrpc::Code::UNAVAILABLE));
        assert!(transient(ttrpc::Code::DEADLINE_EXCEEDED));
        assert!(!transient(ttrpc::Code::INVALID_ARGUMENT));
        assert!(!transient(ttrpc::Code::NOT_FOUND));
    }

    #[test]
    fn a_full_queue_drops_new_events_and_keeps_the_rest() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // An address nothing listens on: every event waits.
            let publisher = Publisher::start(Some("/nonexistent/events.sock".into()), "ns");
            let mut start = TaskStart::new();
            for _ in 0..QUEUE_LIMIT + 10 {
                publisher.publish(TASK_START, &start);
            }
            assert_eq!(publisher.waiting.load(Ordering::SeqCst), QUEUE_LIMIT);
            assert_eq!(publisher.dropped.load(Ordering::SeqCst), 10);
            start.pid = 1;
            publisher.publish(TASK_START, &start);
            assert_eq!(publisher.waiting.load(Ordering::SeqCst), QUEUE_LIMIT);
        });
    }

    /// Counts what containerd's events service would receive.
    struct Counter(Arc<AtomicUsize>);

    #[async_trait::async_trait]
    impl crate::protos::forward_ttrpc::Events for Counter {
        async fn forward(
            &self,
            _: &ttrpc::r#async::TtrpcContext,
            _: ForwardRequest,
        ) -> ttrpc::Result<protobuf::well_known_types::empty::Empty> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Default::default())
        }
    }

    #[test]
    fn a_flush_tries_a_waiting_event_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("shim-flush-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("events.sock");
        rt.block_on(async {
            let publisher = Publisher::start(Some(sock.to_string_lossy().into_owned()), "ns");
            publisher.publish(TASK_START, &TaskStart::new());
            // Tries at 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s: the next comes 3.2 s after that.
            tokio::time::sleep(Duration::from_millis(3300)).await;
            let received = Arc::new(AtomicUsize::new(0));
            let mut server = ttrpc::r#async::Server::new()
                .bind(&format!("unix://{}", sock.display()))
                .unwrap()
                .register_service(crate::protos::forward_ttrpc::create_events(Arc::new(
                    Counter(received.clone()),
                )));
            server.start().await.unwrap();
            // A second is far less than the backoff left: only a retry at once gets through.
            publisher.flush(Duration::from_secs(1)).await;
            assert_eq!(
                received.load(Ordering::SeqCst),
                1,
                "the event missed the flush"
            );
            assert_eq!(publisher.waiting.load(Ordering::SeqCst), 0);
            let _ = server.shutdown().await;
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
