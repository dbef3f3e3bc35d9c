//! wa-sip-bridge: WhatsApp voice calls (through Wati's calling API) to and
//! from a SIP PBX. This file only wires the pieces together; see
//! `design.md` §3 for which module may use which.
//!
//! The crate's public surface is what the binary, the demo, the tests,
//! the benches and the examples drive: [`Bridge`] and [`run`], the
//! configuration, the demo's peers (fake Wati, simulated WhatsApp, built-in
//! PBX), each leg on its own (`sip::{message, ua, sdp, …}`, `webrtc`'s
//! session, `media::relay` and its codecs), the store, the Wati client and
//! the typed ids. The call layer, HTTP routes, metrics, port pool and the
//! sockets' internals are `pub(crate)`; `unreachable_pub` keeps every other
//! item's `pub` honest, so the compiler sees dead code.
#![warn(unreachable_pub)]

pub(crate) mod call;
pub(crate) mod cdr;
pub mod config;
pub mod demo;
pub mod dtmf;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod health;
pub(crate) mod http;
pub mod ids;
pub(crate) mod lazy_timer;
pub mod media;
pub(crate) mod metrics;
pub(crate) mod ports;
pub mod recording;
pub mod sd_notify;
pub mod sip;
pub mod store;
#[cfg(test)]
mod test_util;
pub(crate) mod udp_batch;
pub mod wati;
pub mod webrtc;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::wati::webhook::{self, WebhookState};
use crate::wati::{Received, WatiClient};

/// Why the bridge could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("configuration:\n{0}")]
    Config(#[from] config::ConfigError),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("HTTP server: {0}")]
    HttpServer(std::io::Error),
    #[error("SIP: {0}")]
    Sip(#[from] call::sip_task::SipStartError),
    #[error("HTTPS: {0}")]
    Https(#[from] sip::tls::TlsError),
    #[error(transparent)]
    Recording(#[from] recording::RecordingError),
}

/// How many accepted webhooks may wait for the call layer before intake slows down.
const EVENT_QUEUE: usize = 4096;

/// A running bridge: its parts, for the binary and for tests.
pub struct Bridge {
    /// Where the HTTP server (webhooks, health, metrics) actually listens.
    pub http_addr: SocketAddr,
    pub store: Store,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub wati: WatiClient,
    /// Where SIP (UDP and TCP) actually listens.
    pub sip_addr: SocketAddr,
    /// Where SIP over TLS listens (`sip.tls_listen`), when it does.
    pub sip_tls_addr: Option<SocketAddr>,
    /// The TLS certificates (SIP, HTTPS), reloaded on SIGHUP.
    tls_certs: Vec<Arc<sip::tls::ServerCert>>,
    /// The live calls.
    pub registry: Arc<call::registry::Registry>,
    settings: Settings,
    sip: JoinHandle<()>,
    /// Handed to the call layer by [`Bridge::start`].
    calls: Option<(
        call::CallCtx,
        mpsc::Receiver<call::outbound::IncomingInvite>,
    )>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    sink: Option<JoinHandle<()>>,
    /// The call-record pusher (`cdr.webhook_url`) and its stop signal.
    cdr: Option<(tokio::sync::watch::Sender<bool>, JoinHandle<()>)>,
}

impl Bridge {
    /// Starts every part; accepted webhooks go to the call layer.
    pub async fn start(settings: Settings) -> Result<Bridge, Error> {
        // Webhooks logged before this instant are the last run's.
        let started_ms = store::now_ms();
        let (mut bridge, events) = Self::start_with_events(settings).await?;
        if let Some((ctx, invites)) = bridge.calls.take() {
            // Before any new call is recorded: what the last run left.
            call::recovery::at_start(&ctx, started_ms).await;
            bridge.sink = Some(tokio::spawn(call::run_calls(events, invites, ctx)));
        }
        Ok(bridge)
    }

    /// Starts every part and hands accepted webhooks to the caller instead of the call layer.
    pub async fn start_with_events(
        settings: Settings,
    ) -> Result<(Bridge, mpsc::Receiver<Received>), Error> {
        // Off the runtime's threads, while the rest starts.
        let prepared =
            tokio::task::spawn_blocking(|| webrtc::leg::prepare(std::time::Instant::now()));
        let health = Arc::new(Health::default());
        let metrics = Arc::new(Metrics::new());
        let store = Store::open(&settings.storage, health.clone())?;
        let cdr = settings.cdr.clone().map(|c| {
            store.enable_cdr_outbox();
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(cdr::run(store.clone(), c, metrics.clone(), stopped));
            (stop, task)
        });
        let wati = WatiClient::new(&settings.wati, health.clone(), metrics.clone())?;
        let recorder = match &settings.recording {
            Some(r) => Some(recording::Recorder::start(
                r,
                settings.calls.max_concurrent,
            )?),
            None => None,
        };
        let trunk = call::sip_task::resolve_trunk(&settings).await;
        let bound = call::sip_task::bind(&settings, trunk.iter().map(|a| a.ip()).collect()).await?;
        let (sip_socket, sip_addr) = (bound.socket, bound.addr);
        let (sip_tls_addr, tls_cert) = bound.tls.unzip();
        let (sip_handle, sip_commands) = call::sip_task::channel();
        let trunk = Arc::new(call::trunk::Trunk::new(
            settings.trunk.host.clone(),
            settings.trunk.port_or_default(),
            &trunk,
        ));
        let registry = Arc::new(call::registry::Registry::default());
        let (invites_tx, invites_rx) = mpsc::channel(256);
        let call_ctx = call::CallCtx {
            registry: registry.clone(),
            settings: settings.clone(),
            store: store.clone(),
            wati: wati.clone(),
            metrics: metrics.clone(),
            sip: sip_handle,
            webrtc_ports: Arc::new(std::sync::Mutex::new(ports::PortPool::new(
                settings.webrtc.ports.clone(),
                1,
                ports::DEFAULT_QUARANTINE,
            ))),
            rtp_ports: Arc::new(std::sync::Mutex::new(ports::PortPool::new(
                settings.media.rtp_ports.clone(),
                2,
                ports::DEFAULT_QUARANTINE,
            ))),
            trunk: trunk.clone(),
            recorder,
        };
        let sip = tokio::spawn(call::sip_task::run(
            sip_socket,
            sip_commands,
            settings.clone(),
            trunk,
            health.clone(),
            metrics.clone(),
            invites_tx,
        ));
        tracing::info!(%sip_addr, "SIP listening (UDP and TCP)");
        if settings.media.srtp != media::sdes::SrtpPolicy::Off {
            tracing::info!(policy = ?settings.media.srtp, library = media::srtp::BACKEND, "SRTP toward the PBX");
        }
        if settings.media.srtp != media::sdes::SrtpPolicy::Off
            && settings.trunk.transport != config::TrunkTransport::Tls
        {
            // RFC 4568 §8.3: SDES keys travel in the SDP, readable on the path.
            tracing::warn!("media.srtp is on but trunk.uri is not TLS: the SRTP keys cross the network in the clear in the SDP");
        }
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);

        let app = webhook::routes(WebhookState {
            webhook_key: settings.wati.webhook_key.as_str().into(),
            store: store.clone(),
            events: tx,
            metrics: metrics.clone(),
        })
        .merge(http::routes(http::OpsState {
            health: health.clone(),
            metrics: metrics.clone(),
            store: store.clone(),
            registry: registry.clone(),
            admin_token: settings.http.admin_token.as_deref().map(Arc::from),
        }));
        // Before webhooks can arrive: the first call does not wait for it.
        if let Err(e) = prepared.await.map_err(|e| e.to_string()).and_then(|r| r) {
            tracing::warn!(error = %e, "DTLS certificate not ready at start");
        }
        let listener = tokio::net::TcpListener::bind(settings.http.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: settings.http.listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(Error::HttpServer)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let mut tls_certs: Vec<_> = tls_cert.into_iter().collect();
        let server = match &settings.http.tls {
            None => {
                tracing::info!(%http_addr, "HTTP server listening (webhooks, /healthz, /readyz, /metrics)");
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                })
            }
            Some((cert, key)) => {
                let (config, reloadable) = sip::tls::server(cert, key)?;
                let mut config = (*config).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                tls_certs.push(reloadable);
                tracing::info!(%http_addr, "HTTPS server listening (webhooks, /healthz, /readyz, /metrics)");
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                tokio::spawn(http::serve_https(listener, acceptor, app, stopped))
            }
        };
        Ok((
            Bridge {
                http_addr,
                store,
                health,
                metrics,
                wati,
                sip_addr,
                sip_tls_addr,
                tls_certs,
                registry,
                settings,
                sip,
                calls: Some((call_ctx, invites_rx)),
                stop,
                server,
                sink: None,
                cdr,
            },
            rx,
        ))
    }

    /// SIGTERM: new calls are refused (503 to INVITEs, inbound webhooks
    /// terminated at Wati); live calls may finish for up to `calls.drain_s`;
    /// then the rest are ended on both sides. Webhooks and SIP keep working
    /// meanwhile so that calls end properly.
    pub async fn drain(&self) {
        let live = self.registry.start_draining().len();
        if live == 0 {
            return;
        }
        tracing::info!(
            calls = live,
            drain_s = self.settings.calls.drain.as_secs(),
            "draining: no new calls; waiting for live calls to end"
        );
        let deadline = tokio::time::Instant::now() + self.settings.calls.drain;
        while !self.registry.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let left = self.registry.start_draining();
        if !left.is_empty() {
            tracing::warn!(
                calls = left.len(),
                "calls.drain_s passed: ending the remaining calls"
            );
        }
        for tx in left {
            let _ = tx
                .send(call::registry::CallCommand::Hangup(Box::new(
                    call::EndCause::Shutdown,
                )))
                .await;
        }
        // Each ends with a terminate at Wati (bounded by wati.timeout_ms) and a BYE.
        let deadline = tokio::time::Instant::now()
            + self.settings.wati.timeout
            + std::time::Duration::from_secs(2);
        while !self.registry.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Let the last BYEs leave the SIP socket.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    /// Stops taking requests and waits for the server and the call layer to finish.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.sip.abort();
        let _ = self.stop.send(());
        let served = match self.server.await {
            Ok(r) => r.map_err(Error::HttpServer),
            Err(e) => Err(Error::HttpServer(std::io::Error::other(e))),
        };
        // The server held the only event sender; the sink ends once it drained the queue.
        if let Some(sink) = self.sink {
            let _ = sink.await;
        }
        // The pusher stops between records; one in flight may take its
        // timeout. What it did not deliver stays queued for the next start.
        if let Some((stop, task)) = self.cdr {
            let _ = stop.send(true);
            let abort = task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        served
    }
}

impl Bridge {
    /// Reads the SIP TLS certificate and key files again (SIGHUP): new
    /// handshakes use them, connections already up keep theirs. On error
    /// the certificate in use stays.
    pub fn reload_tls(&self) -> Result<(), sip::tls::TlsError> {
        for c in &self.tls_certs {
            c.reload()?;
        }
        Ok(())
    }
}

/// Runs the bridge until SIGTERM or Ctrl-C; SIGHUP reloads what can be
/// reloaded safely (the TLS certificates: SIP's and HTTPS's). Under
/// systemd (`Type=notify`) it reports readiness once listening, the reload,
/// the stop, and keeps the watchdog fed when the unit sets one.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let bridge = Bridge::start(settings).await?;
    // Before READY=1: SIGHUP's default action would end the process.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let notifier = std::sync::Arc::new(sd_notify::Notifier::from_env());
    if let Some(n) = notifier.as_ref() {
        n.notify("READY=1\nSTATUS=listening");
    }
    let watchdog = match (notifier.as_ref().is_some(), sd_notify::watchdog_interval()) {
        (true, Some(every)) => {
            let n = notifier.clone();
            Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if let Some(n) = n.as_ref() {
                        n.notify("WATCHDOG=1");
                    }
                }
            }))
        }
        _ => None,
    };
    let certs = bridge.tls_certs.clone();
    let hup_notifier = notifier.clone();
    let reloader = tokio::spawn(async move {
        let Ok(mut hup) = hup else {
            return;
        };
        while hup.recv().await.is_some() {
            if let Some(n) = hup_notifier.as_ref() {
                n.notify("RELOADING=1");
            }
            if certs.is_empty() {
                tracing::info!("SIGHUP: nothing to reload (no TLS certificate in use)");
            }
            for cert in &certs {
                match cert.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => {
                        tracing::warn!(error = %e, "SIGHUP: TLS certificate not reloaded; the old one stays")
                    }
                }
            }
            if let Some(n) = hup_notifier.as_ref() {
                n.notify("READY=1");
            }
        }
    });
    wait_for_signal().await;
    reloader.abort();
    tracing::info!("shutting down");
    if let Some(n) = notifier.as_ref() {
        n.notify("STOPPING=1");
    }
    bridge.drain().await;
    let result = bridge.shutdown().await;
    if let Some(w) = watchdog {
        w.abort();
    }
    result
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
