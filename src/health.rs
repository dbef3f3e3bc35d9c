//! Readiness flags that several parts set and `/readyz` reads.
//!
//! Each flag is an atomic written by its owner (the store, the Wati client,
//! later the SIP transport and registration) so readiness never takes a lock.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// State of a check that may not apply in every configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not part of this configuration (e.g. registration when `trunk.register = false`).
    NotApplicable,
    Ok,
    Failing,
}

#[derive(Debug)]
pub struct Health {
    store_ok: AtomicBool,
    /// Cleared by a 401 from Wati, set again by the next successful call.
    wati_token_ok: AtomicBool,
    sip: AtomicU8,
    registration: AtomicU8,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            store_ok: AtomicBool::new(true),
            wati_token_ok: AtomicBool::new(true),
            sip: AtomicU8::new(Check::NotApplicable as u8),
            registration: AtomicU8::new(Check::NotApplicable as u8),
        }
    }
}

fn load(v: &AtomicU8) -> Check {
    match v.load(Ordering::Relaxed) {
        x if x == Check::Ok as u8 => Check::Ok,
        x if x == Check::Failing as u8 => Check::Failing,
        _ => Check::NotApplicable,
    }
}

impl Health {
    pub fn set_store_ok(&self, ok: bool) {
        self.store_ok.store(ok, Ordering::Relaxed);
    }
    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Ordering::Relaxed)
    }
    pub fn set_wati_token_ok(&self, ok: bool) {
        self.wati_token_ok.store(ok, Ordering::Relaxed);
    }
    pub fn wati_token_ok(&self) -> bool {
        self.wati_token_ok.load(Ordering::Relaxed)
    }
    pub fn set_sip(&self, c: Check) {
        self.sip.store(c as u8, Ordering::Relaxed);
    }
    pub fn sip(&self) -> Check {
        load(&self.sip)
    }
    pub fn set_registration(&self, c: Check) {
        self.registration.store(c as u8, Ordering::Relaxed);
    }
    pub fn registration(&self) -> Check {
        load(&self.registration)
    }

    /// Ready when every applicable check passes.
    pub fn ready(&self) -> bool {
        self.store_ok()
            && self.wati_token_ok()
            && self.sip() != Check::Failing
            && self.registration() != Check::Failing
    }
}
