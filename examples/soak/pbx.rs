//! The soak's PBX: one SIP user agent (ours) for every call, each call
//! doing what its plan says — answer and maybe hang up after a while,
//! reject, or (dialling out) cancel while it rings — with a PCMU tone on a
//! socket of its own once answered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use wa_sip_bridge::config::Codec;
use wa_sip_bridge::demo::audio::sine;
use wa_sip_bridge::media::g711::Law;
use wa_sip_bridge::media::rtp::write_header;
use wa_sip_bridge::sip::endpoint::{Peer, Transport};
use wa_sip_bridge::sip::runtime::SipSocket;
use wa_sip_bridge::sip::sdp::{self, LocalSdp, MediaDirection};
use wa_sip_bridge::sip::ua::{CallRef, Invite, UaEvent};

/// What the PBX does with the bridge's INVITE for a WhatsApp call id.
#[derive(Debug, Clone, Copy)]
pub enum InPlan {
    /// Answer; hang up (BYE) this long after, or wait for the bridge's BYE.
    Answer {
        hangup_after: Option<Duration>,
    },
    Reject(u16),
}

/// A call the PBX places to a WhatsApp number.
#[derive(Debug, Clone)]
pub struct Dial {
    pub number: String,
    /// CANCEL this long after the INVITE if not answered by then.
    pub cancel_after: Option<Duration>,
    /// BYE this long after the answer.
    pub hangup_after: Option<Duration>,
}

/// How a call ended at the PBX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PbxEnd {
    /// The bridge's final response to our INVITE (a call we placed).
    Failed(u16),
    /// Answered, then ended (by either side).
    Ended,
}

enum Cmd {
    Dial(Dial, oneshot::Sender<PbxEnd>),
    Hangup(CallRef),
    Live(oneshot::Sender<usize>),
}

/// Plans by WhatsApp call id, set before the webhook that makes the
/// bridge INVITE (shared, not sent: the INVITE must not overtake it).
type Plans = Arc<Mutex<HashMap<String, InPlan>>>;

#[derive(Clone)]
pub struct Pbx {
    cmds: mpsc::Sender<Cmd>,
    plans: Plans,
    pub addr: SocketAddr,
}

/// A call in progress at the PBX.
struct Leg {
    /// Stops the call's media (dropped: stopped).
    media: Option<watch::Sender<bool>>,
    /// Who waits for the end of a call we placed.
    done: Option<oneshot::Sender<PbxEnd>>,
    hangup_after: Option<Duration>,
}

impl Pbx {
    pub async fn start(sip: SipSocket, bridge: SocketAddr) -> Result<Pbx, String> {
        let addr = sip.local_addr().map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(256);
        let plans = Plans::default();
        tokio::spawn(run(sip, rx, tx.clone(), bridge, plans.clone()));
        Ok(Pbx {
            cmds: tx,
            plans,
            addr,
        })
    }

    /// The plan for the INVITE carrying this WhatsApp call id.
    pub fn plan(&self, wa_call_id: &str, plan: InPlan) {
        self.plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(wa_call_id.into(), plan);
    }

    /// Dials `d.number` through the bridge; resolves when the call is over.
    pub async fn dial(&self, d: Dial) -> oneshot::Receiver<PbxEnd> {
        let (tx, rx) = oneshot::channel();
        let _ = self.cmds.send(Cmd::Dial(d, tx)).await;
        rx
    }

    /// Calls not yet over at the PBX's user agent.
    pub async fn live(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Live(tx)).await.is_err() {
            return usize::MAX;
        }
        rx.await.unwrap_or(usize::MAX)
    }
}

async fn run(
    mut sip: SipSocket,
    mut cmds: mpsc::Receiver<Cmd>,
    me: mpsc::Sender<Cmd>,
    bridge: SocketAddr,
    plans: Plans,
) {
    let mut legs: HashMap<CallRef, Leg> = HashMap::new();
    let mut rtp_of: HashMap<CallRef, UdpSocket> = HashMap::new();
    let local = sip.local_addr().unwrap_or(bridge);
    let later = |call: CallRef, after: Duration, me: &mpsc::Sender<Cmd>| {
        let me = me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = me.send(Cmd::Hangup(call)).await;
        });
    };
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(Cmd::Live(reply)) => { let _ = reply.send(sip.ua().live_calls()); }
                Some(Cmd::Hangup(call)) => sip.ua().hangup(Instant::now(), call),
                Some(Cmd::Dial(d, done)) => {
                    let Ok(rtp) = UdpSocket::bind("127.0.0.1:0").await else { continue };
                    let Ok(addr) = rtp.local_addr() else { continue };
                    let offer = LocalSdp { session_id: 1, version: 1, addr, codecs: &[Codec::Pcmu], chosen: None, direction: MediaDirection::SendRecv }.render();
                    let uri = format!("sip:{}@{bridge}", d.number);
                    let call = sip.ua().invite(Instant::now(), Invite {
                        request_uri: &uri,
                        from: &format!("<sip:agent@{local}>"),
                        to: &format!("<{uri}>"),
                        headers: &[],
                        sdp: &offer,
                        peer: Peer { transport: Transport::Udp, addr: bridge },
                    });
                    if let Some(after) = d.cancel_after {
                        later(call, after, &me);
                    }
                    rtp_of.insert(call, rtp);
                    legs.insert(call, Leg { media: None, done: Some(done), hangup_after: d.hangup_after });
                }
            },
            ev = sip.next_event() => match ev {
                UaEvent::Incoming { call, invite, .. } => {
                    let id = invite.wa_call_id.clone().unwrap_or_default();
                    let plan = plans.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                    match plan {
                        Some(InPlan::Reject(code)) => sip.ua().reject(Instant::now(), call, code, "Busy Here", &[]),
                        Some(InPlan::Answer { hangup_after }) => {
                            let answered = async {
                                let offer = sdp::parse(invite.body_str()).ok()?;
                                let n = sdp::negotiate_offer(&offer, &[Codec::Pcmu]).ok()?;
                                let rtp = UdpSocket::bind("127.0.0.1:0").await.ok()?;
                                let addr = rtp.local_addr().ok()?;
                                let answer = LocalSdp { session_id: 1, version: 1, addr, codecs: &[Codec::Pcmu], chosen: Some(&n), direction: n.our_direction }.render();
                                Some((rtp, n.remote?, n.pt, answer))
                            }.await;
                            match answered {
                                Some((rtp, remote, pt, answer)) => {
                                    sip.ua().answer(Instant::now(), call, &answer);
                                    let media = play(rtp, remote, pt);
                                    if let Some(after) = hangup_after {
                                        later(call, after, &me);
                                    }
                                    legs.insert(call, Leg { media: Some(media), done: None, hangup_after: None });
                                }
                                None => sip.ua().reject(Instant::now(), call, 488, "Not Acceptable Here", &[]),
                            }
                        }
                        None => sip.ua().reject(Instant::now(), call, 404, "Not Found", &[]),
                    }
                }
                UaEvent::Answered { call, sdp: Some(answer) } => {
                    let remote = sdp::parse(&answer)
                        .ok()
                        .and_then(|m| sdp::negotiate_answer(&m, &[Codec::Pcmu]).ok())
                        .and_then(|n| n.remote.map(|r| (r, n.pt)));
                    if let (Some(leg), Some(rtp), Some((remote, pt))) = (legs.get_mut(&call), rtp_of.remove(&call), remote) {
                        leg.media = Some(play(rtp, remote, pt));
                        if let Some(after) = leg.hangup_after.take() {
                            later(call, after, &me);
                        }
                    }
                }
                UaEvent::Failed { call, code, .. } => {
                    rtp_of.remove(&call);
                    if let Some(leg) = legs.remove(&call) {
                        if let Some(done) = leg.done {
                            let _ = done.send(PbxEnd::Failed(code));
                        }
                    }
                }
                UaEvent::Ended { call, .. } => {
                    rtp_of.remove(&call);
                    if let Some(leg) = legs.remove(&call) {
                        if let Some(done) = leg.done {
                            let _ = done.send(PbxEnd::Ended);
                        }
                    }
                }
                _ => {}
            },
        }
    }
}

/// A 440 Hz PCMU tone to `remote` every 20 ms (what comes back is read and
/// dropped) until the sender is dropped.
fn play(rtp: UdpSocket, remote: SocketAddr, pt: u8) -> watch::Sender<bool> {
    let (stop, mut stopped) = watch::channel(false);
    let rtp = Arc::new(rtp);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let (mut seq, mut n) = (0u16, 0u64);
        let mut pkt = [0u8; 172];
        let mut buf = [0u8; 2048];
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                _ = tick.tick() => {
                    write_header(&mut pkt, pt, false, seq, n as u32, 0x50a4);
                    Law::Mu.encode_into(&sine(440.0, 8000, n, 160), &mut pkt[12..]);
                    let _ = rtp.send_to(&pkt, remote).await;
                    seq = seq.wrapping_add(1);
                    n += 160;
                }
                _ = rtp.recv_from(&mut buf) => {}
            }
        }
    });
    stop
}
