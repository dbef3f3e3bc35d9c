//! SIP request methods (RFC 3261 §7.1, §25.1), with room for any other
//! `token` a peer may send: an extension method is a valid request that gets
//! `405 Method Not Allowed` with `Allow` (§8.2.1), not a parse error. rsip's
//! `Method` has no such variant (it refuses the request), hence our own.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Refer,
    Notify,
    Subscribe,
    Message,
    Publish,
    /// Any other method token, as sent (methods are case-sensitive, §7.1).
    Extension(String),
}

/// RFC 3261 §25.1: `token = 1*(alphanum / "-" / "." / "!" / "%" / "*" /
/// "_" / "+" / "`" / "'" / "~")`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

impl Method {
    /// The method a request-line or CSeq token names; `None` when it is not
    /// a token at all.
    pub fn parse(token: &str) -> Option<Method> {
        Some(match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            other if is_token(other) => Method::Extension(other.to_string()),
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(m) => m,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_extension_tokens_and_non_tokens() {
        assert_eq!(Method::parse("INVITE"), Some(Method::Invite));
        // Case-sensitive: `invite` is an extension method.
        assert_eq!(
            Method::parse("invite"),
            Some(Method::Extension("invite".into()))
        );
        let odd = "!interesting-Method0123456789_*+`.%indeed'~";
        assert_eq!(
            Method::parse(odd).map(|m| m.to_string()),
            Some(odd.to_string())
        );
        for bad in ["", "IN VITE", "<INVITE>", "INV\u{e9}TE", "A:B"] {
            assert_eq!(Method::parse(bad), None, "{bad:?}");
        }
    }
}
