//! The registry of live calls: who is live (for admission, the admin API and
//! shutdown), and which call task a webhook for a Wati call id goes to.
//!
//! One mutex guards it; it is touched when a call starts, learns its Wati
//! call id, changes state or ends, and per webhook, never per packet.

use super::EndCause;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::ids::WaCallId;
use crate::store::now_ms;
use crate::wati::OutboundStatus;

/// Messages to one call's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallCommand {
    /// The WhatsApp side ended the call (Terminate webhook).
    Terminated,
    /// Progress of a call we placed (status webhook).
    Status(OutboundStatus),
    /// The user answered a call we placed: their SDP answer.
    Answer(String),
    /// End the call on both sides, for this reason (admin API, shutdown).
    /// Boxed: an `EndCause` is 48 bytes and every call's command channel
    /// holds a block of 32 commands (1.8 KiB a call unboxed, 0.8 boxed).
    Hangup(Box<EndCause>),
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `calls.max_concurrent` calls are live.
    Capacity,
    /// The bridge is shutting down.
    Draining,
}

impl Refusal {
    /// The `result` label of `wsb_calls_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Capacity => "refused_capacity",
            Refusal::Draining => "refused_draining",
        }
    }

    /// The call record's cause.
    pub fn cause(self) -> EndCause {
        match self {
            Refusal::Capacity => EndCause::RefusedCapacity,
            Refusal::Draining => EndCause::RefusedDraining,
        }
    }
}

/// What the admin API shows of a live call.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LiveCall {
    pub id: u64,
    pub direction: &'static str,
    pub wa_call_id: Option<String>,
    pub waid: Option<String>,
    pub sip_call_id: Option<String>,
    /// `setup`, `ringing`, `connecting`, `answered`, `ending`.
    pub state: &'static str,
    pub started_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    /// Both legs' quality so far (once media flows; brought up to date
    /// with each RTCP report toward the PBX, every 2.5–7.5 s).
    pub quality: Option<crate::media::quality::CallQuality>,
}

/// The state of a call whose outcome is decided: it is cleaning up
/// (terminate at Wati, call record) and no longer counts for admission.
pub(crate) const ENDING: &str = "ending";

/// How long a webhook for a not-yet-known Wati call id is kept, and how many.
const EARLY_TTL: Duration = Duration::from_secs(60);
const EARLY_MAX: usize = 1024;

struct Entry {
    info: LiveCall,
    tx: mpsc::Sender<CallCommand>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    draining: bool,
    calls: HashMap<u64, Entry>,
    by_wa: HashMap<WaCallId, u64>,
    /// Webhooks for a Wati call id no live call has claimed yet: an outbound
    /// call's status webhook can arrive before Wati's REST answer naming the id.
    early: HashMap<WaCallId, (Instant, Vec<CallCommand>)>,
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// Where [`Registry::route`] put a command.
#[derive(Debug)]
pub enum Routed {
    /// Send it on this channel.
    To(mpsc::Sender<CallCommand>, CallCommand),
    /// Kept for a call that may claim the id soon.
    Kept,
    /// No live call has it, and it is not worth keeping.
    Unknown,
}

/// Removes the call from the registry when its task ends, however it ends.
pub struct LiveGuard<'a> {
    registry: &'a Registry,
    pub id: u64,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new call unless the bridge is draining or `max` calls are live.
    /// Returns its id and the channel its task reads.
    pub fn admit(
        &self,
        direction: &'static str,
        max: usize,
        wa_call_id: Option<WaCallId>,
        waid: Option<String>,
        sip_call_id: Option<String>,
    ) -> Result<(u64, mpsc::Receiver<CallCommand>), Refusal> {
        let mut g = self.lock();
        if g.draining {
            return Err(Refusal::Draining);
        }
        // A call that is ending (its final response sent or on its way)
        // no longer counts: a PBX that places its next call the moment it
        // has our final response finds the slot free.
        let counted = g.calls.values().filter(|e| e.info.state != ENDING).count();
        if counted >= max {
            return Err(Refusal::Capacity);
        }
        g.next_id += 1;
        let id = g.next_id;
        let (tx, rx) = mpsc::channel(16);
        g.calls.insert(
            id,
            Entry {
                info: LiveCall {
                    id,
                    direction,
                    wa_call_id: wa_call_id.as_ref().map(|w| w.to_string()),
                    waid,
                    sip_call_id,
                    state: "setup",
                    started_at_ms: now_ms(),
                    answered_at_ms: None,
                    quality: None,
                },
                tx,
            },
        );
        if let Some(w) = wa_call_id {
            g.by_wa.insert(w, id);
        }
        Ok((id, rx))
    }

    /// A guard that unregisters call `id` when dropped.
    pub fn guard(&self, id: u64) -> LiveGuard<'_> {
        LiveGuard { registry: self, id }
    }

    /// Whether a live call has this Wati call id.
    pub fn has_wa_call(&self, wa: &WaCallId) -> bool {
        self.lock().by_wa.contains_key(wa)
    }

    /// Call `id` now has Wati call id `wa`; returns the webhooks that arrived for it first.
    pub fn bind_wa(&self, id: u64, wa: WaCallId) -> Vec<CallCommand> {
        let mut g = self.lock();
        if let Some(e) = g.calls.get_mut(&id) {
            e.info.wa_call_id = Some(wa.to_string());
        }
        g.by_wa.insert(wa.clone(), id);
        g.early.remove(&wa).map(|(_, c)| c).unwrap_or_default()
    }

    /// Finds the task for a webhook about `wa`. Outbound-call webhooks for an
    /// id no call has claimed yet are kept for a while (see `early`).
    pub fn route(&self, wa: &WaCallId, cmd: CallCommand, now: Instant) -> Routed {
        let mut g = self.lock();
        if let Some(e) = g.by_wa.get(wa).and_then(|id| g.calls.get(id)) {
            return Routed::To(e.tx.clone(), cmd);
        }
        // Only while an outbound call is still waiting for its id can it be
        // this call's; otherwise the call is over or was never ours.
        let waiting = g
            .calls
            .values()
            .any(|e| e.info.direction == "outbound" && e.info.wa_call_id.is_none());
        if !waiting {
            return Routed::Unknown;
        }
        g.early
            .retain(|_, (at, _)| now.duration_since(*at) < EARLY_TTL);
        if g.early.len() >= EARLY_MAX && !g.early.contains_key(wa) {
            return Routed::Unknown;
        }
        g.early
            .entry(wa.clone())
            .or_insert_with(|| (now, Vec::new()))
            .1
            .push(cmd);
        Routed::Kept
    }

    pub fn set_state(&self, id: u64, state: &'static str) {
        let mut g = self.lock();
        if let Some(e) = g.calls.get_mut(&id) {
            e.info.state = state;
            if state == "answered" && e.info.answered_at_ms.is_none() {
                e.info.answered_at_ms = Some(now_ms());
            }
        }
    }

    /// A live call's quality so far.
    pub fn set_quality(&self, id: u64, q: crate::media::quality::CallQuality) {
        if let Some(e) = self.lock().calls.get_mut(&id) {
            e.info.quality = Some(q);
        }
    }

    fn remove(&self, id: u64) {
        let mut g = self.lock();
        if let Some(e) = g.calls.remove(&id) {
            if let Some(w) = e.info.wa_call_id.and_then(|w| WaCallId::parse(&w).ok()) {
                if g.by_wa.get(&w) == Some(&id) {
                    g.by_wa.remove(&w);
                }
            }
        }
    }

    /// Live calls, oldest first.
    pub fn list(&self) -> Vec<LiveCall> {
        let mut v: Vec<LiveCall> = self.lock().calls.values().map(|e| e.info.clone()).collect();
        v.sort_by_key(|c| c.id);
        v
    }

    pub fn len(&self) -> usize {
        self.lock().calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The channel of call `id`, to hang it up.
    pub fn sender(&self, id: u64) -> Option<mpsc::Sender<CallCommand>> {
        self.lock().calls.get(&id).map(|e| e.tx.clone())
    }

    /// Stops admitting calls; returns the live calls' channels.
    pub fn start_draining(&self) -> Vec<mpsc::Sender<CallCommand>> {
        let mut g = self.lock();
        g.draining = true;
        g.calls.values().map(|e| e.tx.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    //! (`unwrap` here is test set-up and assertions: a failure is the test's failure.)
    use super::*;

    fn wa(s: &str) -> WaCallId {
        WaCallId::parse(s).unwrap()
    }

    #[test]
    fn a_call_that_is_ending_leaves_its_slot_to_the_next() {
        let r = Registry::default();
        let (a, _rx) = r.admit("outbound", 1, None, None, None).unwrap();
        assert_eq!(
            r.admit("outbound", 1, None, None, None).unwrap_err(),
            Refusal::Capacity
        );
        // Its final response is on its way to the PBX; it still cleans up.
        r.set_state(a, ENDING);
        let (b, _rx2) = r.admit("outbound", 1, None, None, None).unwrap();
        assert_eq!(r.len(), 2, "both listed until the first is gone");
        assert_eq!(
            r.admit("inbound", 1, None, None, None).unwrap_err(),
            Refusal::Capacity
        );
        drop(r.guard(a));
        drop(r.guard(b));
        assert!(r.is_empty());
    }

    #[test]
    fn admission_stops_at_max_and_when_draining() {
        let r = Registry::default();
        let (a, _rx) = r.admit("inbound", 2, Some(wa("a")), None, None).unwrap();
        let (_b, _rx2) = r.admit("outbound", 2, None, None, None).unwrap();
        assert_eq!(
            r.admit("inbound", 2, None, None, None).unwrap_err(),
            Refusal::Capacity
        );
        drop(r.guard(a));
        assert_eq!(r.len(), 1);
        assert!(!r.has_wa_call(&wa("a")));
        assert_eq!(r.start_draining().len(), 1);
        assert_eq!(
            r.admit("inbound", 10, None, None, None).unwrap_err(),
            Refusal::Draining
        );
    }

    #[test]
    fn webhooks_that_beat_the_call_id_are_kept_for_the_call_that_claims_it() {
        let r = Registry::default();
        let now = Instant::now();
        // No outbound call waiting for its id: nothing is kept.
        assert!(matches!(
            r.route(&wa("x"), CallCommand::Terminated, now),
            Routed::Unknown
        ));
        let (id, _rx) = r.admit("outbound", 5, None, None, None).unwrap();
        let ringing = CallCommand::Status(OutboundStatus::Ringing);
        assert!(matches!(
            r.route(&wa("x"), ringing.clone(), now),
            Routed::Kept
        ));
        assert_eq!(r.bind_wa(id, wa("x")), vec![ringing]);
        assert!(matches!(
            r.route(&wa("x"), CallCommand::Terminated, now),
            Routed::To(_, CallCommand::Terminated)
        ));
        assert_eq!(r.list()[0].wa_call_id.as_deref(), Some("x"));
    }

    #[test]
    fn kept_webhooks_expire() {
        let r = Registry::default();
        let t0 = Instant::now();
        let (id, _rx) = r.admit("outbound", 5, None, None, None).unwrap();
        r.route(&wa("old"), CallCommand::Terminated, t0);
        // A later webhook for another id sweeps the expired one out.
        r.route(&wa("new"), CallCommand::Terminated, t0 + EARLY_TTL * 2);
        assert!(r.bind_wa(id, wa("old")).is_empty());
    }

    #[test]
    fn a_call_command_stays_small_for_the_per_call_channels() {
        let size = std::mem::size_of::<CallCommand>();
        assert!(
            size <= 32,
            "CallCommand is {size} bytes: box the large variant"
        );
    }
}
