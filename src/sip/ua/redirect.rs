//! 3xx from the PBX, followed the way Asterisk's `redirect_method = user`
//! does (RFC 3261 §8.1.3.4).

use super::*;

/// Where a 3xx response sends our INVITE, the way Asterisk's
/// `redirect_method = user` (its default) does: the user part of the most
/// preferred Contact (highest `q`, RFC 3261 §8.1.3.4; `sip:`, `sips:` or
/// `tel:`) replaces the user of our request-URI, and the INVITE goes to the
/// same trunk. A PBX's answer cannot send the bridge's calls to hosts of its
/// choosing (toll fraud, internal addresses). `None` when no Contact has a
/// user made only of characters a SIP user may hold unescaped.
pub(super) fn redirect_uri(invite: &Msg, resp: &Msg) -> Option<String> {
    let mut best: Option<(f32, &str)> = None;
    for contact in &resp.contact {
        let Some(user) = contact_user(&contact.uri) else {
            continue;
        };
        let q = contact
            .param("q")
            .and_then(|q| q.parse::<f32>().ok())
            .filter(|q| (0.0..=1.0).contains(q))
            .unwrap_or(1.0);
        if best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, user));
        }
    }
    let (_, user) = best?;
    let current = invite.request_uri()?;
    let (scheme, rest) = current.split_once(':')?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    Some(format!("{scheme}:{user}@{host}"))
}

/// The user of a Contact URI, if it is one we can put in a request-URI as is.
fn contact_user(uri: &str) -> Option<&str> {
    let user = if let Some(tel) = uri.strip_prefix("tel:") {
        tel.split(';').next()?
    } else {
        let rest = uri
            .strip_prefix("sip:")
            .or_else(|| uri.strip_prefix("sips:"))?;
        let (userinfo, _) = rest.split_once('@')?;
        // user ";" parameters and ":password" are not carried over.
        userinfo.split([';', ':']).next()?
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || "+-_.!~*#%".contains(c);
    (!user.is_empty() && user.len() <= 64 && user.chars().all(plain)).then_some(user)
}

impl SipUa {
    /// The PBX redirected our INVITE: follow it on the trunk (at most
    /// [`MAX_REDIRECTS`] times), or fail the call with the 3xx.
    pub(super) fn follow_redirect(&mut self, now: Instant, call: CallRef, code: u16, msg: &Msg) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match redirect_uri(&c.invite, msg) {
            Some(uri) => {
                tracing::info!(code, to = %uri, "the PBX redirected our INVITE; following it on the trunk");
                c.redirects += 1;
                // A new request-URI: the digest exchange starts over.
                c.auth_tries = 0;
                self.resend_invite(now, call, Some(uri), None);
            }
            None => {
                c.state = State::Ended;
                self.emit(UaEvent::Failed {
                    call,
                    code,
                    reason: "redirect without a usable Contact".into(),
                });
            }
        }
    }
}
