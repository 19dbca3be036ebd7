//! The collector: one MQTT 5 connection, many subscriptions, and acknowledgements that
//! mean durable.
//!
//! ```text
//!  broker ─► eventloop task ─► channel ─► collector task: route ─► decode ─► batch
//!                 ▲                            │                            │
//!                 └── PUBACK (in order) ◄──────┴── receipt (WAL fsync) ◄── submit
//! ```
//!
//! Messages arrive with QoS 1 and manual acknowledgements. The collector decodes each
//! into rows, gathers the rows of many messages into one batch (up to `batch_rows`, or
//! `batch_linger` after the first), and submits the batch to the store. Only when the
//! store reports the batch fsynced in the WAL are the batch's messages acknowledged, in
//! the order they arrived. A crash before that point leaves them unacknowledged: the
//! broker, which keeps the session, redelivers them, and last-write-wins deduplication
//! keeps one copy of each reading. The broker's flow control (Receive Maximum =
//! `max_inflight`) bounds what is in flight.
//!
//! A payload that cannot be decoded, or parts of it, becomes a row of `_rejected` in the
//! same batch, so it is acknowledged and kept, never redelivered forever, never dropped.
//! Rows the device gate refuses (a device the registry rejects) go the same way.
//!
//! The eventloop runs in a task of its own that does nothing but poll it, so that keep-
//! alives and acknowledgements flow while the collector waits for the store.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use devices::tables::{REJECTED, SOURCE};
use devices::{DecodeContext, Reading};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, RetainForwardRule};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use storage::{FieldValue, ParsedLine, PreparedWrite, Row, Store, TableWrite, WriteBatch};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{BrokerUrl, MqttConfig, PayloadDecoder, Route, TlsConfig};
use super::metrics::{MessageLabels, MqttMetrics, SubscriptionLabels};
use crate::canonical::{apply_canonical, field_value};
use crate::checks::{check_field_keys, sort_tags};
use crate::clock::{now_ns, sleep_until};
use crate::gate::DeviceGate;
use crate::parse_line_protocol;

/// Largest MQTT packet gridlake accepts (MQTT 5 Maximum Packet Size). rumqttc's default
/// is 10 KiB, which a batched payload easily exceeds; a packet over the limit would
/// drop the connection, and the broker would redeliver it forever.
const MAX_PACKET_SIZE: u32 = 16 * 1024 * 1024;

/// How much of a rejected payload `_rejected` keeps.
const MAX_REJECTED_PAYLOAD: usize = 64 * 1024;

/// How long a batch waits before it is offered to a full store queue again.
const BUSY_RETRY: Duration = Duration::from_millis(10);

/// How long acknowledgements wait before they are offered to a full request channel
/// again.
const ACK_RETRY: Duration = Duration::from_millis(1);

/// How long shutdown waits for the last batches to become durable and be acknowledged.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The configuration is not usable; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MqttConfigError(pub String);

/// A running collector. Dropping it leaves the tasks running; call
/// [`MqttCollector::shutdown`] to stop it cleanly.
#[derive(Debug)]
pub struct MqttCollector {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MqttCollector {
    /// Checks `config`, connects (in the background: an unreachable broker is retried
    /// with backoff, it does not fail the start) and starts collecting into `store`.
    /// Rows pass `gate` (the device registry), when given, before they are validated;
    /// the collector writes for any site, so it is not confined to one. Must be called
    /// within a Tokio runtime.
    pub fn start(
        config: &MqttConfig,
        store: Store,
        metrics: MqttMetrics,
        gate: Option<Arc<dyn DeviceGate>>,
    ) -> Result<Self, MqttConfigError> {
        let (routes, options) = prepare(config)?;
        // Acknowledgements go through rumqttc's request channel. The broker should send
        // at most `max_inflight` unacknowledged messages, but Mosquitto 2.0 does not
        // hold to a client's Receive Maximum (the tests saw it exceed it), so a full
        // channel is possible: acknowledgements then wait in the collector's own queue
        // and are retried, never dropped.
        let capacity = 2 * usize::from(config.max_inflight) + routes.len() + 16;
        let (client, eventloop) = AsyncClient::new(options, capacity);
        // The collector never blocks, so it drains this channel promptly; when it falls
        // behind, the full channel stops the eventloop task from reading the socket,
        // which is TCP's backpressure on the broker.
        let (events_tx, events_rx) = mpsc::channel(capacity.max(1024));
        let (stop_tx, stop_rx) = watch::channel(false);
        let driver = tokio::spawn(drive(
            eventloop,
            events_tx,
            Backoff::new(config.reconnect_min, config.reconnect_max),
            metrics.clone(),
        ));
        tracing::info!(
            broker = %config.broker,
            subscriptions = routes.len(),
            "MQTT collector starting"
        );
        let collector = Collector::new(config, client, store, gate, routes, metrics);
        let task = tokio::spawn(collector.run(events_rx, stop_rx, driver));
        Ok(Self {
            stop: stop_tx,
            task,
        })
    }

    /// Stops receiving, writes what was received, acknowledges what became durable and
    /// disconnects. Messages that could not be made durable in time stay
    /// unacknowledged; the broker redelivers them to the next session.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "MQTT collector task failed");
        }
    }
}

/// What the eventloop task reports.
#[derive(Debug)]
enum Net {
    Connected { session_present: bool },
    Lost(String),
    Publish(Publish),
}

/// Exponential reconnect delay with jitter.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay before the next attempt: the current step scaled by a factor in
    /// [0.5, 1.0), so that nodes restarted together do not reconnect in lock-step. The
    /// factor comes from the clock's nanoseconds: good enough for spreading, and no
    /// random-number crate for one number.
    fn delay(&mut self) -> Duration {
        let nanos = now_ns().rem_euclid(1_000_000);
        let factor = 0.5 + nanos as f64 / 2_000_000.0;
        let delay = self.next.mul_f64(factor);
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// Polls the eventloop for as long as the collector lives, reconnecting with backoff.
async fn drive(
    mut eventloop: EventLoop,
    events: mpsc::Sender<Net>,
    mut backoff: Backoff,
    metrics: MqttMetrics,
) {
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => Net::Publish(publish),
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                metrics.connected.set(1);
                metrics.connections.inc();
                Net::Connected {
                    session_present: ack.session_present,
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let mut granted = true;
                for code in &ack.return_codes {
                    if !matches!(
                        code,
                        rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                    ) {
                        granted = false;
                        tracing::error!(
                            reason = ?code,
                            "the broker refused a subscription; its messages will not arrive"
                        );
                    }
                }
                metrics.subscribed.set(i64::from(granted));
                continue;
            }
            Ok(Event::Incoming(Packet::Disconnect(disconnect))) => {
                tracing::warn!(reason = ?disconnect.reason_code, "the broker closed the connection");
                continue;
            }
            // Our own DISCONNECT at shutdown: nothing more will come.
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                metrics.connected.set(0);
                metrics.subscribed.set(0);
                metrics.connection_attempts_failed.inc();
                if events.send(Net::Lost(e.to_string())).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff.delay()).await;
                continue;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// One received message on its way to the store.
#[derive(Debug)]
struct Message {
    publish: Publish,
    /// The connection it arrived on; acknowledgements for older connections are not sent.
    generation: u64,
    topic: String,
    route: Option<usize>,
    received_at: i64,
    /// Rows it produced (before validation).
    rows: usize,
    /// What went wrong with it, for `_rejected`.
    errors: Vec<String>,
}

/// Messages received since the last flush and their rows.
#[derive(Debug, Default)]
struct Pending {
    lines: Vec<ParsedLine>,
    messages: Vec<Message>,
    deadline: Option<Instant>,
}

/// A batch ready for the store and the messages it acknowledges.
#[derive(Debug)]
struct Ready {
    batch: PreparedWrite,
    acks: Vec<(Publish, u64)>,
}

/// A batch the store has, waiting for durability.
#[derive(Debug)]
struct Inflight {
    /// `None` for a batch with no rows (all messages empty): nothing to wait for, but
    /// its acknowledgements still queue behind earlier ones.
    receipt: Option<JoinHandle<storage::Result<()>>>,
    acks: Vec<(Publish, u64)>,
}

#[derive(Debug)]
struct Collector {
    client: AsyncClient,
    store: Store,
    gate: Option<Arc<dyn DeviceGate>>,
    routes: Vec<Route>,
    metrics: MqttMetrics,
    batch_rows: usize,
    linger: Duration,
    pending: Pending,
    ready: VecDeque<Ready>,
    /// Durable messages whose acknowledgement rumqttc's request channel had no room
    /// for yet, oldest first.
    acks: VecDeque<(Publish, u64)>,
    generation: u64,
    last_received: i64,
}

impl Collector {
    fn new(
        config: &MqttConfig,
        client: AsyncClient,
        store: Store,
        gate: Option<Arc<dyn DeviceGate>>,
        routes: Vec<Route>,
        metrics: MqttMetrics,
    ) -> Self {
        Self {
            client,
            store,
            gate,
            routes,
            metrics,
            batch_rows: config.batch_rows.max(1),
            linger: config.batch_linger,
            pending: Pending::default(),
            ready: VecDeque::new(),
            acks: VecDeque::new(),
            generation: 0,
            last_received: 0,
        }
    }

    async fn run(
        mut self,
        mut events: mpsc::Receiver<Net>,
        mut stop: watch::Receiver<bool>,
        driver: JoinHandle<()>,
    ) {
        let mut inflight: VecDeque<Inflight> = VecDeque::new();
        let mut retry_at: Option<Instant> = None;
        loop {
            let deadline = self.pending.deadline;
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                done = wait_front(&mut inflight) => {
                    let front = inflight.pop_front().expect("wait_front completes only with a front");
                    self.complete(done, front.acks);
                }
                event = events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => break,
                },
                () = sleep_until(deadline) => self.flush(),
                () = sleep_until(retry_at) => {}
            }
            retry_at = self.submit_ready(&mut inflight);
            if !self.send_acks() {
                let soon = Instant::now() + ACK_RETRY;
                retry_at = Some(retry_at.map_or(soon, |at| at.min(soon)));
            }
        }

        // Shutdown: what was received is written and, once durable, acknowledged.
        self.flush();
        let give_up = Instant::now() + SHUTDOWN_GRACE;
        while !self.ready.is_empty() && Instant::now() < give_up {
            if self.submit_ready(&mut inflight).is_some() {
                tokio::time::sleep(BUSY_RETRY).await;
            }
        }
        while let Some(front) = inflight.pop_front() {
            let done = match front.receipt {
                None => Ok(Ok(())),
                Some(receipt) => match tokio::time::timeout_at(give_up, receipt).await {
                    Ok(done) => done,
                    Err(_) => {
                        tracing::warn!(
                            "shutdown: a batch did not become durable in time; its messages stay unacknowledged"
                        );
                        break;
                    }
                },
            };
            self.complete(done, front.acks);
        }
        let give_up_acks = Instant::now() + Duration::from_secs(2);
        while !self.send_acks() && Instant::now() < give_up_acks {
            tokio::time::sleep(ACK_RETRY).await;
        }
        let unacked: usize = self.ready.iter().map(|r| r.acks.len()).sum();
        if unacked > 0 {
            tracing::warn!(
                messages = unacked,
                "shutdown: messages not written; the broker redelivers them"
            );
        }
        if let Err(e) = self.client.try_disconnect() {
            tracing::debug!(error = %e, "MQTT disconnect request not sent");
        }
        if tokio::time::timeout(Duration::from_secs(5), driver)
            .await
            .is_err()
        {
            tracing::warn!("MQTT connection did not close in time");
        }
        self.metrics.connected.set(0);
        tracing::info!("MQTT collector stopped");
    }

    fn on_event(&mut self, event: Net) {
        match event {
            Net::Connected { session_present } => {
                self.generation += 1;
                tracing::info!(session_present, "connected to the MQTT broker");
                // Subscribing again is harmless when the session kept the subscriptions
                // (retained messages are only sent for new ones), and necessary when
                // the broker lost the session or the configuration gained a filter.
                let filters: Vec<Filter> = self
                    .routes
                    .iter()
                    .map(|r| {
                        let qos = if r.qos == 0 {
                            QoS::AtMostOnce
                        } else {
                            QoS::AtLeastOnce
                        };
                        let mut filter = Filter::new(r.filter.subscribe.clone(), qos);
                        filter.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
                        filter
                    })
                    .collect();
                if let Err(e) = self.client.try_subscribe_many(filters) {
                    tracing::error!(error = %e, "could not send SUBSCRIBE");
                }
            }
            Net::Lost(reason) => {
                tracing::warn!(error = %reason, "MQTT connection lost or refused; reconnecting with backoff");
            }
            Net::Publish(publish) => {
                self.receive(publish);
                if self.pending.lines.len() >= self.batch_rows {
                    self.flush();
                }
            }
        }
    }

    /// A unique receive time per message: the clock, nudged forward when two messages
    /// share a nanosecond, so that `_rejected` rows never overwrite each other.
    fn next_received_at(&mut self) -> i64 {
        self.last_received = now_ns().max(self.last_received + 1);
        self.last_received
    }

    /// Decodes one message into the pending batch.
    fn receive(&mut self, publish: Publish) {
        let received_at = self.next_received_at();
        if publish.qos != QoS::AtMostOnce {
            self.metrics.unacked.inc();
        }
        let number = self.pending.messages.len() + 1;
        let mut message = Message {
            topic: String::from_utf8_lossy(&publish.topic).into_owned(),
            publish,
            generation: self.generation,
            route: None,
            received_at,
            rows: 0,
            errors: Vec::new(),
        };
        let before = self.pending.lines.len();
        match self.routes.iter().position(|r| r.filter.matches(&message.topic)) {
            None => message.errors.push(
                "no configured subscription matches this topic (a subscription left in the broker's session by an earlier configuration? start once with mqtt.session_expiry = \"0s\" to clear it)"
                    .to_string(),
            ),
            Some(index) => {
                message.route = Some(index);
                decode(
                    &mut self.routes[index],
                    &message.topic,
                    &message.publish.payload,
                    received_at,
                    number,
                    &mut self.pending.lines,
                    &mut message.errors,
                );
            }
        }
        message.rows = self.pending.lines.len() - before;
        self.pending.messages.push(message);
        if self.pending.deadline.is_none() {
            self.pending.deadline = Some(Instant::now() + self.linger);
        }
    }

    /// Passes the pending rows through the device gate, validates them, tells the gate
    /// which will be stored, adds `_rejected` rows for what either refused, and queues
    /// the batch for the store.
    fn flush(&mut self) {
        let Pending {
            mut lines,
            mut messages,
            ..
        } = std::mem::take(&mut self.pending);
        if messages.is_empty() {
            return;
        }
        let mut errors = Vec::new();
        if let Some(gate) = &self.gate {
            gate.check(&mut lines, &mut errors, None);
        }
        let (mut batch, invalid) = self.store.validate(lines);
        // Only rows the store takes register their device and count as signs of life.
        // (A batch the store then fails to take is redelivered by the broker.)
        if let Some(gate) = &self.gate {
            gate.note_stored(&batch, None);
        }
        errors.extend(invalid);
        let mut failed_rows = vec![0usize; messages.len()];
        for e in errors {
            if let Some(i) = e.line.checked_sub(1).filter(|&i| i < messages.len()) {
                failed_rows[i] += 1;
                messages[i].errors.push(e.reason);
            }
        }

        let rejected: Vec<ParsedLine> = messages
            .iter()
            .filter(|m| !m.errors.is_empty())
            .map(|m| self.rejected_row(m))
            .collect();
        if !rejected.is_empty() {
            let (extra, errors) = self.store.validate(rejected);
            for e in errors {
                tracing::error!(reason = %e.reason, "a rejected payload could not be recorded in _rejected");
            }
            merge(&mut batch, extra);
        }

        // Counted per (subscription, outcome) here and added to the metrics once per
        // batch: a label lookup per message would cost a string copy and a lock each.
        let mut messages_by: HashMap<(Option<usize>, &'static str), u64> = HashMap::new();
        let mut readings_by: HashMap<Option<usize>, u64> = HashMap::new();
        let mut acks = Vec::with_capacity(messages.len());
        for (message, failed) in messages.into_iter().zip(failed_rows) {
            let stored = message.rows - failed;
            let outcome = match (message.errors.is_empty(), stored) {
                (true, 0) => "empty",
                (true, _) => "stored",
                (false, 0) => "rejected",
                (false, _) => "partial",
            };
            *messages_by.entry((message.route, outcome)).or_default() += 1;
            if stored > 0 {
                *readings_by.entry(message.route).or_default() += stored as u64;
            }
            if message.publish.qos != QoS::AtMostOnce {
                acks.push((message.publish, message.generation));
            }
        }
        let name = |route: Option<usize>| {
            route.map_or_else(|| "-".to_string(), |i| self.routes[i].name.clone())
        };
        for ((route, outcome), count) in messages_by {
            self.metrics
                .messages
                .get_or_create(&MessageLabels {
                    subscription: name(route),
                    outcome,
                })
                .inc_by(count);
        }
        for (route, count) in readings_by {
            self.metrics
                .readings
                .get_or_create(&SubscriptionLabels {
                    subscription: name(route),
                })
                .inc_by(count);
        }
        // Encoding the WAL record and building the columns happen here, on the
        // collector's task, so the store's single writer thread only writes.
        match self.store.prepare(batch) {
            Ok(batch) => self.ready.push_back(Ready { batch, acks }),
            Err(e) => self.fail(&e.to_string(), acks),
        }
    }

    fn rejected_row(&self, message: &Message) -> ParsedLine {
        let source = message
            .route
            .map_or("mqtt", |i| self.routes[i].source.as_str());
        let payload = String::from_utf8_lossy(&message.publish.payload);
        let mut end = payload.len().min(MAX_REJECTED_PAYLOAD);
        while !payload.is_char_boundary(end) {
            end -= 1;
        }
        ParsedLine {
            line: 0,
            table: REJECTED.name.to_string(),
            row: Row {
                time: message.received_at,
                tags: vec![(SOURCE.to_string(), source.to_string())],
                fields: vec![
                    (
                        "topic".to_string(),
                        FieldValue::String(message.topic.clone()),
                    ),
                    (
                        "payload".to_string(),
                        FieldValue::String(payload[..end].to_string()),
                    ),
                    (
                        "error".to_string(),
                        FieldValue::String(message.errors.join("; ")),
                    ),
                ],
            },
        }
    }

    /// Hands ready batches to the store in order. Returns when to try again if the
    /// store's queue is full.
    fn submit_ready(&mut self, inflight: &mut VecDeque<Inflight>) -> Option<Instant> {
        while let Some(ready) = self.ready.pop_front() {
            if ready.batch.is_empty() {
                inflight.push_back(Inflight {
                    receipt: None,
                    acks: ready.acks,
                });
                continue;
            }
            match self.store.try_submit(ready.batch, true) {
                Ok(receipt) => inflight.push_back(Inflight {
                    receipt: Some(tokio::spawn(receipt.wait())),
                    acks: ready.acks,
                }),
                Err((storage::Error::Busy, batch)) => {
                    self.metrics.store_busy.inc();
                    self.ready.push_front(Ready {
                        batch,
                        acks: ready.acks,
                    });
                    return Some(Instant::now() + BUSY_RETRY);
                }
                Err((e, _)) => {
                    self.fail(&e.to_string(), ready.acks);
                }
            }
        }
        // Batches without rows need no receipt: acknowledge them as soon as everything
        // before them is acknowledged.
        while inflight.front().is_some_and(|f| f.receipt.is_none()) {
            let front = inflight.pop_front().expect("front exists");
            self.complete(Ok(Ok(())), front.acks);
        }
        None
    }

    fn complete(
        &mut self,
        done: Result<storage::Result<()>, tokio::task::JoinError>,
        acks: Vec<(Publish, u64)>,
    ) {
        match done {
            Ok(Ok(())) => {
                self.metrics.unacked.dec_by(acks.len() as i64);
                self.acks.extend(acks);
            }
            Ok(Err(e)) => self.fail(&e.to_string(), acks),
            Err(e) => self.fail(&e.to_string(), acks),
        }
    }

    /// Sends queued acknowledgements, in order, while rumqttc's request channel has
    /// room. Returns false when some are left for later.
    fn send_acks(&mut self) -> bool {
        while let Some((publish, generation)) = self.acks.front() {
            // A message from an earlier connection is redelivered by the broker anyway
            // (and deduplicated); an acknowledgement on the new connection could name a
            // different message with the same packet id.
            if *generation == self.generation && self.client.try_ack(publish).is_err() {
                return false;
            }
            self.acks.pop_front();
        }
        true
    }

    fn fail(&mut self, reason: &str, acks: Vec<(Publish, u64)>) {
        self.metrics.store_failures.inc();
        self.metrics.unacked.dec_by(acks.len() as i64);
        tracing::error!(
            error = %reason,
            messages = acks.len(),
            "the store did not make a batch durable; its messages stay unacknowledged and the broker redelivers them"
        );
    }
}

/// Waits for the oldest in-flight batch; pending forever when there is none or it needs
/// no waiting (those are drained by `submit_ready`).
async fn wait_front(
    inflight: &mut VecDeque<Inflight>,
) -> Result<storage::Result<()>, tokio::task::JoinError> {
    match inflight.front_mut().and_then(|f| f.receipt.as_mut()) {
        Some(receipt) => receipt.await,
        None => std::future::pending().await,
    }
}

/// Adds `extra`'s rows to `batch`, keeping each table once.
fn merge(batch: &mut WriteBatch, extra: WriteBatch) {
    for table in extra.tables {
        match batch.tables.iter_mut().find(|t| t.table == table.table) {
            Some(existing) => existing.rows.extend(table.rows),
            None => batch.tables.push(TableWrite {
                table: table.table,
                rows: table.rows,
            }),
        }
    }
}

/// Runs a route's decoder on one payload, appending rows (numbered `number`, the
/// message's position in the batch) and errors.
fn decode(
    route: &mut Route,
    topic: &str,
    payload: &[u8],
    received_at: i64,
    number: usize,
    lines: &mut Vec<ParsedLine>,
    errors: &mut Vec<String>,
) {
    let mut context_tags = route.tags.clone();
    if let Some(template) = &route.template {
        match template.extract(topic) {
            Ok(captured) => {
                for (key, value) in captured {
                    match context_tags.iter_mut().find(|(k, _)| *k == key) {
                        Some(slot) => slot.1 = value,
                        None => context_tags.push((key, value)),
                    }
                }
            }
            Err(e) => {
                errors.push(e);
                return;
            }
        }
    }
    match &mut route.decoder {
        PayloadDecoder::Device(decoder) => {
            let ctx = DecodeContext {
                topic,
                tags: &context_tags,
                received_at,
            };
            match decoder.decode(&ctx, payload) {
                Ok(decoded) => {
                    for reading in decoded.readings {
                        match reading_to_line(reading, &context_tags, number, &route.source) {
                            Ok(line) => lines.push(line),
                            Err(e) => errors.push(e),
                        }
                    }
                    errors.extend(decoded.problems);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        PayloadDecoder::LineProtocol(precision) => {
            let (parsed, bad) = parse_line_protocol(payload, *precision, received_at);
            errors.extend(bad.into_iter().map(|e| e.to_string()));
            for mut line in parsed {
                let physical = line.line;
                line.line = number;
                let result = add_context_tags(&mut line.row, &context_tags)
                    .and_then(|()| apply_canonical(&mut line, &route.source));
                match result {
                    Ok(()) => lines.push(line),
                    Err(e) => errors.push(format!("line {physical}: {e}")),
                }
            }
        }
    }
}

/// Puts the context tags onto a row; where both name a key, the context wins.
fn add_context_tags(row: &mut Row, context: &[(String, String)]) -> Result<(), String> {
    for (key, value) in context {
        match row.tags.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1.clone_from(value),
            None => row.tags.push((key.clone(), value.clone())),
        }
    }
    sort_tags(&mut row.tags)?;
    check_field_keys(&row.fields, &row.tags)
}

/// Turns a decoder's reading into a row for the store.
fn reading_to_line(
    reading: Reading,
    context: &[(String, String)],
    number: usize,
    source: &str,
) -> Result<ParsedLine, String> {
    let table = reading.table;
    let tags: Vec<(String, String)> = reading
        .tags
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let fields: Vec<(String, FieldValue)> = reading
        .fields
        .into_iter()
        .map(|(k, v)| (k, field_value(v)))
        .collect();
    if fields.is_empty() {
        return Err(format!("{table}: a reading without values"));
    }
    let mut row = Row {
        time: reading.time,
        tags,
        fields,
    };
    add_context_tags(&mut row, context).map_err(|e| format!("{table}: {e}"))?;
    let mut line = ParsedLine {
        line: number,
        table,
        row,
    };
    apply_canonical(&mut line, source).map_err(|e| format!("{}: {e}", line.table))?;
    Ok(line)
}

impl MqttConfig {
    /// Checks everything [`MqttCollector::start`] checks (subscriptions, decoders and
    /// their options, the broker URL, TLS files) without connecting.
    pub fn check(&self) -> Result<(), MqttConfigError> {
        prepare(self).map(|_| ())
    }
}

/// The checked routes and the connection options.
fn prepare(config: &MqttConfig) -> Result<(Vec<Route>, MqttOptions), MqttConfigError> {
    let routes = config
        .subscriptions
        .iter()
        .enumerate()
        .map(|(i, s)| s.route(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(MqttConfigError)?;
    if routes.is_empty() {
        return Err(MqttConfigError(
            "the MQTT collector needs at least one [[mqtt.subscriptions]]".to_string(),
        ));
    }
    if config.max_inflight == 0 {
        return Err(MqttConfigError(
            "mqtt.max_inflight must be at least 1".to_string(),
        ));
    }
    Ok((routes, mqtt_options(config)?))
}

/// rumqttc options from the configuration.
fn mqtt_options(config: &MqttConfig) -> Result<MqttOptions, MqttConfigError> {
    let bad = |msg: String| MqttConfigError(format!("mqtt.broker {:?}: {msg}", config.broker));
    let broker = BrokerUrl::parse(&config.broker).map_err(bad)?;
    let client_id = config.client_id.clone().unwrap_or_else(default_client_id);
    if client_id.is_empty() {
        return Err(MqttConfigError("mqtt.client_id is empty".to_string()));
    }
    let mut options = MqttOptions::new(client_id, broker.host, broker.port);
    options.set_keep_alive(config.keep_alive.max(Duration::from_secs(1)));
    options.set_manual_acks(true);
    let expiry = u32::try_from(config.session_expiry.as_secs()).unwrap_or(u32::MAX);
    options.set_clean_start(expiry == 0);
    if expiry > 0 {
        options.set_session_expiry_interval(Some(expiry));
    }
    options.set_receive_maximum(Some(config.max_inflight));
    options.set_max_packet_size(Some(MAX_PACKET_SIZE));
    let username = config.username.clone().or(broker.username);
    let password = config.password.clone().or(broker.password);
    if let Some(username) = username {
        options.set_credentials(username, password.unwrap_or_default());
    } else if password.is_some() {
        return Err(MqttConfigError(
            "mqtt.password is set but mqtt.username is not".to_string(),
        ));
    }
    if broker.tls {
        options.set_transport(Transport::tls_with_config(tls_config(&config.tls)?));
    } else if config.tls != TlsConfig::default() {
        return Err(bad(
            "[mqtt.tls] is set but the broker URL is not mqtts://".to_string()
        ));
    }
    Ok(options)
}

/// `gridlake-<hostname>`: stable across restarts of one node, different between nodes.
fn default_client_id() -> String {
    // The kernel's hostname file saves a dependency for one read; elsewhere the
    // environment or a fixed name is the fallback.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string());
    format!("gridlake-{host}")
}

fn tls_config(config: &TlsConfig) -> Result<TlsConfiguration, MqttConfigError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let err = |msg: String| MqttConfigError(format!("mqtt.tls: {msg}"));
    let read_certs =
        |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, MqttConfigError> {
            let file = std::fs::File::open(path)
                .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
            rustls_pemfile::certs(&mut std::io::BufReader::new(file))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    err(format!(
                        "{} is not a PEM certificate file: {e}",
                        path.display()
                    ))
                })
        };
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let certs = read_certs(path)?;
            if certs.is_empty() {
                return Err(err(format!("{} holds no certificate", path.display())));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| err(format!("{}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system store may hold certificates rustls cannot use; the others
                // still work.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(err(
                    "no system CA certificates found; set ca_file".to_string()
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots);
    let client = match (&config.client_cert, &config.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let file = std::fs::File::open(key)
                .map_err(|e| err(format!("cannot open {}: {e}", key.display())))?;
            let key_der: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut std::io::BufReader::new(file))
                    .map_err(|e| err(format!("{}: {e}", key.display())))?
                    .ok_or_else(|| err(format!("{} holds no private key", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| err(e.to_string()))?
        }
        _ => {
            return Err(err(
                "client_cert and client_key must be set together".to_string()
            ));
        }
    };
    Ok(TlsConfiguration::Rustls(Arc::new(client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_limit_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<Duration> = (0..6).map(|_| b.delay()).collect();
        for (d, step) in delays.iter().zip([100u64, 200, 400, 800, 800, 800]) {
            let step = Duration::from_millis(step);
            assert!(*d >= step / 2 && *d < step, "{d:?} for step {step:?}");
        }
        b.reset();
        assert!(b.delay() < Duration::from_millis(100));
    }

    #[test]
    fn broker_urls_are_checked() {
        let config = |broker: &str| MqttConfig {
            broker: broker.to_string(),
            client_id: Some("t".into()),
            ..MqttConfig::default()
        };
        let o = mqtt_options(&config("mqtt://user:pw@broker.example:1884")).unwrap();
        assert_eq!(o.broker_address(), ("broker.example".to_string(), 1884));
        assert!(o.manual_acks());
        assert!(!o.clean_start());
        assert_eq!(o.receive_maximum(), Some(1000));
        assert_eq!(
            mqtt_options(&config("mqtt://h"))
                .unwrap()
                .broker_address()
                .1,
            1883
        );
        let err = mqtt_options(&config("http://h")).unwrap_err().to_string();
        assert!(err.contains("mqtt://"), "{err}");
        let err = mqtt_options(&config("not a url")).unwrap_err().to_string();
        assert!(err.contains("not a url"), "{err}");
        let mut c = config("mqtt://h");
        c.tls.ca_file = Some("/nonexistent.pem".into());
        let err = mqtt_options(&c).unwrap_err().to_string();
        assert!(err.contains("mqtts://"), "{err}");
        let mut c = config("mqtts://h");
        c.tls.ca_file = Some("/nonexistent.pem".into());
        let err = mqtt_options(&c).unwrap_err().to_string();
        assert!(err.contains("/nonexistent.pem"), "{err}");
    }

    #[test]
    fn readings_get_context_tags_and_provenance() {
        let reading = Reading::new("meter", 5)
            .tag("device_id", "from-payload")
            .tag("phase", "L1")
            .field("power_w", 3i64);
        let context = vec![
            ("site_id".to_string(), "s1".to_string()),
            ("device_id".to_string(), "m1".to_string()),
        ];
        let line = reading_to_line(reading, &context, 7, "mqtt/json").unwrap();
        assert_eq!(line.line, 7);
        assert_eq!(
            line.row.tags,
            vec![
                ("device_id".to_string(), "m1".to_string()),
                ("phase".to_string(), "L1".to_string()),
                ("site_id".to_string(), "s1".to_string()),
            ]
        );
        assert_eq!(
            line.row.fields[0],
            ("power_w".to_string(), FieldValue::F64(3.0))
        );
        assert!(
            line.row
                .fields
                .contains(&("source".to_string(), FieldValue::String("mqtt/json".into())))
        );
        let err = reading_to_line(Reading::new("meter", 5), &context, 1, "x").unwrap_err();
        assert!(err.contains("without values"), "{err}");
    }

    /// Refuses the rows of one device, as a registry in `reject` mode does, and records
    /// the devices of the rows it is told were stored.
    #[derive(Debug)]
    struct RefuseDevice(&'static str, std::sync::Mutex<Vec<String>>);

    impl DeviceGate for RefuseDevice {
        fn check(
            &self,
            lines: &mut Vec<ParsedLine>,
            rejected: &mut Vec<storage::LineError>,
            site: Option<i64>,
        ) {
            assert_eq!(site, None, "the collector is not confined to a site");
            lines.retain(|line| {
                let refused = crate::gate::device_id(&line.row) == Some(self.0);
                if refused {
                    rejected.push(storage::LineError::new(
                        line.line,
                        format!("device {:?} is not in the device registry", self.0),
                    ));
                }
                !refused
            });
        }

        fn note_stored(&self, batch: &WriteBatch, site: Option<i64>) {
            assert_eq!(site, None, "the collector is not confined to a site");
            let mut noted = self.1.lock().unwrap();
            for table in &batch.tables {
                for row in &table.rows {
                    if let Some(device_id) = crate::gate::device_id(row) {
                        noted.push(format!("{}/{device_id}", table.table));
                    }
                }
            }
        }
    }

    /// The text of a string column of every row of `table`.
    fn column(store: &Store, table: &str, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for batch in store.scan(table, None, storage::TimeRange::ALL).unwrap() {
            let values = batch.column_by_name(name).unwrap();
            let values = arrow::compute::cast(values, &arrow::datatypes::DataType::Utf8).unwrap();
            let values = values
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            out.extend(values.iter().map(|v| v.unwrap_or_default().to_string()));
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn rows_the_gate_refuses_go_to_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), storage::StoreConfig::default()).unwrap();
        let config: MqttConfig = toml::from_str(
            r#"
client_id = "gate-test"
[[subscriptions]]
filter = "lp/+"
decoder = "line_protocol"
topic_template = "lp/{site_id}"
"#,
        )
        .unwrap();
        let (routes, options) = prepare(&config).unwrap();
        // Never polled: the test hands messages to the collector itself.
        let (client, _eventloop) = AsyncClient::new(options, 16);
        let refuse = Arc::new(RefuseDevice("stranger", Default::default()));
        let gate: Arc<dyn DeviceGate> = refuse.clone();
        let mut collector = Collector::new(
            &config,
            client,
            store.clone(),
            Some(gate),
            routes,
            MqttMetrics::default(),
        );
        let publish = |payload: &'static str| {
            Publish::new("lp/s1", QoS::AtLeastOnce, payload.as_bytes(), None)
        };
        collector.receive(publish(
            "meter,device_id=known power_w=1 1000\nmeter,device_id=stranger power_w=2 1000\n",
        ));
        collector.receive(publish("meter,device_id=stranger power_w=3 2000\n"));
        // The gate admits `typo`, the store refuses it (a text where `plc.x` is a
        // number): its device must not be noted as stored.
        collector.receive(publish(
            "plc,device_id=plc-1 x=1 1000\nplc,device_id=typo x=\"one\" 1000\n",
        ));
        collector.flush();
        assert_eq!(
            *refuse.1.lock().unwrap(),
            ["meter/known", "plc/plc-1"],
            "only the stored rows' devices are noted"
        );
        let mut inflight = VecDeque::new();
        assert!(collector.submit_ready(&mut inflight).is_none());
        let front = inflight.pop_front().expect("a batch with rows");
        front
            .receipt
            .expect("rows to wait for")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(front.acks.len(), 3, "every message is acknowledged");

        assert_eq!(column(&store, "meter", "device_id"), ["known"]);
        assert_eq!(column(&store, "plc", "device_id"), ["plc-1"]);
        let errors = column(&store, REJECTED.name, "error");
        assert_eq!(errors.len(), 3, "one _rejected row per message: {errors:?}");
        let refused = "device \"stranger\" is not in the device registry";
        assert_eq!(
            errors.iter().filter(|e| *e == refused).count(),
            2,
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e != refused && e.contains("x")),
            "{errors:?}"
        );
        let payloads = column(&store, REJECTED.name, "payload");
        assert!(payloads[0].contains("power_w=2"), "{payloads:?}");
        assert!(payloads[1].contains("power_w=3"), "{payloads:?}");
        store.shutdown().unwrap();
    }
}
