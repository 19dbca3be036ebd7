//! `gridlake serve`: wires the store, the query engine and the HTTP API together, and
//! takes them down in order on SIGINT or SIGTERM.

use std::future::IntoFuture;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crm::Crm;
use ingest::gate::DeviceGate;

use ingest::modbus::{ModbusCollector, ModbusMetrics};
use ingest::mqtt::{MqttCollector, MqttMetrics};
use prometheus_client::registry::Registry;
use query::QueryEngine;
use storage::Store;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::auth::AuthConfig;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::{Access, AppState, router};
use crate::registry::DeviceRegistry;

/// How long in-flight requests get to finish after a shutdown signal before the server
/// stops waiting for them. Writes waiting for their fsync finish well within this; a
/// client that keeps a slow request open must not block the store's flush forever.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully.
pub(crate) fn serve(config: Config) -> Result<()> {
    init_tracing(&config.log.filter, "log.filter")?;
    runtime()?.block_on(serve_async(config))
}

/// The multi-threaded runtime the server and the SQL command run on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gridlake-worker")
        .build()
        .map_err(Error::Runtime)
}

/// Sends logs to stderr, filtered by `RUST_LOG` when set and by `filter` otherwise.
/// `origin` names where `filter` came from, for the error message.
pub(crate) fn init_tracing(filter: &str, origin: &'static str) -> Result<()> {
    let (filter, origin) = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => (env, "RUST_LOG"),
        _ => (filter.to_owned(), origin),
    };
    let env_filter = EnvFilter::try_new(&filter).map_err(|e| Error::LogFilter {
        filter: filter.clone(),
        origin,
        reason: e.to_string(),
    })?;
    // Fails only when a subscriber is already installed (tests calling twice); the
    // existing one keeps working, which is what we want.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    Ok(())
}

async fn serve_async(config: Config) -> Result<()> {
    config.auth.check().map_err(Error::Setting)?;
    for (key, value) in [
        ("last_seen_interval", config.crm.last_seen_interval),
        (
            "registry_reload_interval",
            config.crm.registry_reload_interval,
        ),
    ] {
        if value.is_zero() {
            return Err(Error::Setting(format!("crm.{key} must be longer than 0s")));
        }
    }
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| Error::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let storage_config = config.storage.clone();
    let store = {
        let data_dir = data_dir.clone();
        // Replaying the WAL reads files: keep it off the async workers.
        tokio::task::spawn_blocking(move || Store::open(data_dir, storage_config)).await??
    };
    tracing::info!(data_dir = %data_dir.display(), stats = ?store.stats(), "store open");

    let result = match Crm::open(&config.crm, &data_dir).await {
        Ok(crm) => {
            tracing::info!(backend = ?crm.backend(), "crm side store open");
            let result = serve_store(&config, store.clone(), crm.clone()).await;
            crm.close().await;
            result
        }
        Err(e) => Err(e.into()),
    };

    // The HTTP front is closed (or never opened): no request can reach the store any
    // more, so flushing now cannot race an acknowledgement.
    let shutdown = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.shutdown()).await
    };
    match shutdown {
        Ok(Ok(())) => tracing::info!("store flushed and closed"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store shutdown failed");
            result?;
            return Err(e.into());
        }
        Err(e) => {
            result?;
            return Err(e.into());
        }
    }
    result
}

/// Serves HTTP over `store` until a shutdown signal and the end of in-flight requests.
async fn serve_store(config: &Config, store: Store, crm: Crm) -> Result<()> {
    let engine = QueryEngine::new(store.clone(), config.query.clone())?;
    // Rollups are refreshed in the background from now on; stopped (with a last
    // refresh) after the producers, before the store shuts down.
    let rollup_refresh = engine.rollups().start_refresh()?;
    let mut registry = Registry::default();
    store.register_metrics(&mut registry);
    engine.register_metrics(&mut registry);
    let devices = DeviceRegistry::load(crm.clone(), &config.crm).await?;
    devices.register_metrics(&mut registry);
    let registry_tasks = devices.start();
    let gate: Arc<dyn DeviceGate> = Arc::new(devices.clone());
    // A bad [modbus] section stops the start before the MQTT collector connects.
    if config.modbus.enabled {
        config.modbus.check()?;
    }
    let collector = if config.mqtt.enabled {
        let metrics = MqttMetrics::default();
        metrics.register(&mut registry);
        Some(MqttCollector::start(
            &config.mqtt,
            store.clone(),
            metrics,
            Some(gate.clone()),
        )?)
    } else {
        None
    };
    let modbus = if config.modbus.enabled {
        let metrics = ModbusMetrics::default();
        metrics.register(&mut registry);
        Some(ModbusCollector::start(
            &config.modbus,
            store.clone(),
            metrics,
            Some(gate.clone()),
        )?)
    } else {
        None
    };
    let cleanup = tokio::spawn(clean_up(crm.clone(), config.auth.clone()));
    let access = Access {
        crm,
        auth: config.auth.clone(),
        devices,
    };
    let mut state = AppState::new(store, engine, registry, config.http.max_body_size, access);
    if let Some(modbus) = &modbus {
        state = state.with_modbus(modbus.device_list());
    }
    let app = router(state);

    let addr = config.http.addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let signals = ShutdownSignals::install()?;
    if !config.auth.enabled {
        tracing::warn!(
            addr = %local,
            "AUTHENTICATION IS OFF (auth.enabled = false): anyone who can reach this \
             address can read, write and delete every reading and every user, site and \
             device. Run like this only on a machine nobody else can reach."
        );
    }
    announce_ready(&format!("gridlake listening on http://{local}"));
    tracing::info!(addr = %local, "accepting HTTP requests");

    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        let signal = signals.recv().await;
        tracing::info!(
            signal,
            "shutting down: refusing new connections, finishing in-flight requests"
        );
        let _ = signalled_tx.send(());
    };
    // The peer address feeds the per-address login limit.
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .into_future();
    let grace_expired = async move {
        // The sender lives inside the server future; if the server ends first this
        // branch is never polled again, and a dropped sender means no signal came.
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        served = server => served.map_err(Error::Serve),
        () = grace_expired => {
            tracing::warn!(
                grace = ?SHUTDOWN_GRACE,
                "in-flight requests did not finish in time; closing them"
            );
            Ok(())
        }
    };
    // The collector writes what it received and acknowledges what became durable
    // before the store closes.
    if let Some(collector) = collector {
        collector.shutdown().await;
    }
    // The same for rows already polled from Modbus devices.
    if let Some(modbus) = modbus {
        modbus.shutdown().await;
    }
    cleanup.abort();
    // The last batch of last-seen times.
    registry_tasks.shutdown().await;
    // After every producer has written its last rows, so that the last refresh rolls
    // them up; before the store shuts down, since it writes into it. Blocking: joins a
    // thread and reads and writes the store.
    if let Err(e) = tokio::task::spawn_blocking(move || rollup_refresh.shutdown()).await {
        tracing::error!(error = %e, "the rollup shutdown panicked");
    }
    served
}

/// Deletes expired sessions and login failures older than the rate-limit window, every
/// `auth.cleanup_interval`. Lookups refuse expired sessions anyway; this keeps the tables
/// small.
async fn clean_up(crm: Crm, auth: AuthConfig) {
    let mut tick = tokio::time::interval(auth.cleanup_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match crm.sessions().delete_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(sessions = n, "deleted expired sessions"),
            Err(e) => tracing::warn!(error = %e, "cannot delete expired sessions"),
        }
        if let Err(e) = crm.login_attempts().prune(auth.login_window).await {
            tracing::warn!(error = %e, "cannot delete old login failures");
        }
    }
}

/// Prints the one line on stdout that tells scripts and tests the server is ready and
/// where. Logs go to stderr, so stdout carries nothing else.
fn announce_ready(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        // Whoever started us stopped reading; the server is still useful.
        tracing::warn!(error = %e, "could not print the ready line to stdout");
    }
}

/// SIGINT and SIGTERM listeners. Installed before the ready line is printed, so that a
/// supervisor (or test) that signals right after reading it reaches our handler rather
/// than the default action, which would kill the process without flushing.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).map_err(Error::Signal)?,
                terminate: signal(SignalKind::terminate()).map_err(Error::Signal)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Completes on the first SIGINT or SIGTERM with the signal's name.
    async fn recv(mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "SIGINT",
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for Ctrl-C");
                    std::future::pending().await
                }
            }
        }
    }
}
