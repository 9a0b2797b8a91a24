//! Task events to containerd: an ordered queue drained by one task that forwards each event
//! over ttrpc to `TTRPC_ADDRESS`, retrying while containerd is away. Publishing never blocks a
//! request, and events leave in the order they were published (invariant 6).

use crate::protos::forward::{Envelope, ForwardRequest};
use crate::protos::forward_ttrpc::EventsClient;
use protobuf::well_known_types::any::Any;
use protobuf::{MessageField, MessageFull};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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

const ATTEMPTS: u32 = 12;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

enum Item {
    Event(Envelope),
    /// Answered once everything queued before it has been sent (or given up on).
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::UnboundedSender<Item>,
    namespace: String,
}

/// The type URL containerd's typeurl registry knows: the message's full name, no prefix.
pub fn pack<M: MessageFull>(msg: &M) -> Any {
    let mut any = Any::new();
    any.type_url = M::descriptor().full_name().to_string();
    // Serializing a message we built ourselves cannot fail short of memory exhaustion.
    any.value = msg.write_to_bytes().unwrap_or_default();
    any
}

impl Publisher {
    /// Starts the forwarding task. With no address (no containerd to tell), events are dropped.
    pub fn start(address: Option<String>, namespace: &str) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(forward_loop(address, namespace.to_string(), rx));
        Publisher {
            queue: tx,
            namespace: namespace.to_string(),
        }
    }

    pub fn publish<M: MessageFull>(&self, topic: &str, event: &M) {
        let mut envelope = Envelope::new();
        envelope.timestamp = MessageField::some(crate::time::now());
        envelope.namespace = self.namespace.clone();
        envelope.topic = topic.to_string();
        envelope.event = MessageField::some(pack(event));
        if self.queue.send(Item::Event(envelope)).is_err() {
            log::warn!("event {topic} dropped: publisher stopped");
        }
    }

    /// Waits, at most `limit`, until every event published so far has left.
    pub async fn flush(&self, limit: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.queue.send(Item::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }
}

async fn forward_loop(
    address: Option<String>,
    namespace: String,
    mut rx: mpsc::UnboundedReceiver<Item>,
) {
    let mut client: Option<EventsClient> = None;
    while let Some(item) = rx.recv().await {
        let envelope = match item {
            Item::Event(e) => e,
            Item::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let Some(address) = address.as_deref() else {
            continue;
        };
        let mut request = ForwardRequest::new();
        request.envelope = MessageField::some(envelope);
        for attempt in 0..ATTEMPTS {
            match send(&mut client, address, &namespace, &request).await {
                Ok(()) => break,
                Err(e) => {
                    client = None;
                    let topic = &request.envelope.topic;
                    if attempt + 1 == ATTEMPTS {
                        log::error!("giving up on event {topic}: {e}");
                        break;
                    }
                    log::warn!("event {topic} not delivered (attempt {}): {e}", attempt + 1);
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 << attempt.min(4))
}

async fn send(
    client: &mut Option<EventsClient>,
    address: &str,
    namespace: &str,
    request: &ForwardRequest,
) -> Result<(), String> {
    if client.is_none() {
        let addr = if address.starts_with("unix://") {
            address.to_string()
        } else {
            format!("unix://{address}")
        };
        let c = ttrpc::r#async::Client::connect(&addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        *client = Some(EventsClient::new(c));
    }
    let Some(c) = client.as_ref() else {
        return Err("no client".into());
    };
    let mut ctx = ttrpc::context::with_timeout(REQUEST_TIMEOUT.as_nanos() as i64);
    ctx.add(
        "containerd-namespace-ttrpc".to_string(),
        namespace.to_string(),
    );
    c.forward(ctx, request)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
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
    fn retries_back_off_but_stay_bounded() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(30), Duration::from_millis(1600));
    }
}
