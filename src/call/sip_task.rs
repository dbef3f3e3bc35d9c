//! The SIP side's task: binds `sip.listen` (UDP and TCP), answers the PBX's
//! OPTIONS, keeps the registration when `trunk.register = true` (state in
//! `/readyz` and `wsb_sip_registered`), and, until the call flows exist,
//! refuses INVITEs with 503 so the PBX fails over instead of waiting.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, UdpSocket};

use crate::config::Settings;
use crate::health::{Check, Health};
use crate::metrics::Metrics;
use crate::sip::acl::SourceAcl;
use crate::sip::endpoint::{Peer, Transport};
use crate::sip::register::RegisterConfig;
use crate::sip::runtime::SipSocket;
use crate::sip::transaction::Timers;
use crate::sip::ua::{SipUa, UaConfig, UaEvent};

#[derive(Debug, thiserror::Error)]
pub enum SipStartError {
    #[error("cannot bind SIP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the SIP sockets; returns the runtime and the bound address.
pub async fn bind(
    settings: &Settings,
    trunk_ips: Vec<IpAddr>,
) -> Result<(SipSocket, SocketAddr), SipStartError> {
    let listen = settings.sip.listen;
    let udp = UdpSocket::bind(listen)
        .await
        .map_err(|source| SipStartError::Bind {
            addr: listen,
            source,
        })?;
    let bound = udp.local_addr().map_err(|source| SipStartError::Bind {
        addr: listen,
        source,
    })?;
    let tcp = TcpListener::bind(bound)
        .await
        .map_err(|source| SipStartError::Bind {
            addr: bound,
            source,
        })?;
    // The advertised address, with the real port when the configured one was 0 (tests).
    let mut public = settings.sip.public_addr.clone();
    if public.port == 0 {
        public.port = bound.port();
    }
    let via_host = public.to_string();
    let cfg = UaConfig {
        contact_uri: format!("sip:wa-sip-bridge@{via_host}"),
        via_host,
        credentials: settings
            .trunk
            .credentials
            .as_ref()
            .map(|c| (c.username.clone(), c.password.clone())),
        inbound_credentials: settings
            .trunk
            .inbound_credentials
            .as_ref()
            .map(|c| (c.username.clone(), c.password.clone())),
        realm: settings.sip.domain.clone(),
        acl: SourceAcl::new(settings.trunk.allowed_sources.clone(), trunk_ips),
        timers: Timers::default(),
    };
    Ok((SipSocket::with_tcp(udp, Some(tcp), SipUa::new(cfg)), bound))
}

/// The trunk's addresses (DNS resolved once at start).
pub async fn resolve_trunk(settings: &Settings) -> Vec<SocketAddr> {
    let port = settings.trunk.port.unwrap_or(5060);
    match tokio::net::lookup_host((settings.trunk.host.as_str(), port)).await {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            tracing::error!(trunk = %settings.trunk.host, error = %e, "cannot resolve the trunk host");
            Vec::new()
        }
    }
}

/// Runs the SIP side until the task is aborted.
pub async fn run(
    mut sip: SipSocket,
    settings: Settings,
    trunk: Vec<SocketAddr>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) {
    health.set_sip(Check::Ok);
    if settings.trunk.register {
        health.set_registration(Check::Failing);
        metrics.sip_registered.set(0);
        match (trunk.first(), settings.trunk.credentials.as_ref()) {
            (Some(addr), Some(c)) => {
                let public = sip.local_addr().map(|a| a.to_string()).unwrap_or_default();
                let host = settings.trunk.host.clone();
                sip.ua().register(
                    Instant::now(),
                    RegisterConfig {
                        registrar: format!(
                            "sip:{}",
                            match settings.trunk.port {
                                Some(p) => format!("{host}:{p}"),
                                None => host.clone(),
                            }
                        ),
                        aor: format!("sip:{}@{host}", c.username),
                        contact: format!(
                            "sip:{}@{}",
                            c.username,
                            if settings.sip.public_addr.port == 0 {
                                public
                            } else {
                                settings.sip.public_addr.to_string()
                            }
                        ),
                        expires: settings.trunk.register_expires,
                        username: c.username.clone(),
                        password: c.password.clone(),
                    },
                    Peer {
                        transport: Transport::Udp,
                        addr: *addr,
                    },
                );
            }
            _ => tracing::error!(
                "trunk.register = true but the trunk address or credentials are missing"
            ),
        }
    }
    loop {
        match sip.next_event().await {
            UaEvent::Registration { registered, code } => {
                health.set_registration(if registered {
                    Check::Ok
                } else {
                    Check::Failing
                });
                metrics.sip_registered.set(registered as i64);
                if registered {
                    tracing::info!(code, "registered to the PBX");
                } else {
                    tracing::warn!(code, "registration to the PBX failed; retrying");
                }
            }
            UaEvent::Incoming {
                call,
                invite,
                source,
            } => {
                tracing::warn!(%source.addr, call_id = invite.call_id(), "INVITE refused: call handling is not implemented yet");
                sip.ua().reject(
                    Instant::now(),
                    call,
                    503,
                    "Service Unavailable",
                    &[
                        ("retry-after", "60".into()),
                        (
                            "reason",
                            "SIP;cause=503;text=\"calls not implemented yet\"".into(),
                        ),
                    ],
                );
            }
            other => tracing::debug!(event = ?other, "SIP event"),
        }
        // Registration expiry is also a readiness matter between refreshes.
        if settings.trunk.register && sip.ua().registered(Instant::now()) == Some(false) {
            health.set_registration(Check::Failing);
            metrics.sip_registered.set(0);
        }
    }
}
