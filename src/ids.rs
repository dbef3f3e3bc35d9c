//! Identifier types shared between the layers, so that a Wati call id, a
//! WhatsApp number and a SIP Call-ID cannot be mixed up.

use std::fmt;

/// Wati's / WhatsApp's id for one call (`wacid.…`). Opaque; may contain `=`, `/` and `+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaCallId(String);

/// Longest call id we accept from outside (real ones are about 60 characters).
pub const MAX_CALL_ID_LEN: usize = 256;

impl WaCallId {
    /// Accepts any printable, non-empty id up to [`MAX_CALL_ID_LEN`] bytes.
    pub fn parse(s: &str) -> Result<WaCallId, &'static str> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty");
        }
        if s.len() > MAX_CALL_ID_LEN {
            return Err("longer than 256 characters");
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("contains whitespace or control characters");
        }
        Ok(WaCallId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WaCallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A WhatsApp user's number as WhatsApp names it (`wa_id`): digits only, country code first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Waid(String);

impl Waid {
    /// Accepts `+`, spaces, dots and dashes as decoration and keeps the digits;
    /// the result must be 6 to 15 digits (E.164 allows at most 15).
    pub fn parse(s: &str) -> Result<Waid, &'static str> {
        let s = s.trim();
        let s = s.strip_prefix('+').unwrap_or(s);
        let mut digits = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err("must be a phone number (digits, optionally with a leading +)"),
            }
        }
        if !(6..=15).contains(&digits.len()) {
            return Err("must have 6 to 15 digits");
        }
        Ok(Waid(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Waid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SIP dialog's Call-ID header value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SipCallId(pub String);

impl fmt::Display for SipCallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waid_keeps_digits_only() {
        assert_eq!(
            Waid::parse("+91 73585-80180").unwrap().as_str(),
            "917358580180"
        );
        assert_eq!(Waid::parse("14085551234").unwrap().as_str(), "14085551234");
        assert!(Waid::parse("12345").is_err());
        assert!(Waid::parse("1234567890123456").is_err());
        assert!(Waid::parse("1408abc1234").is_err());
        assert!(Waid::parse("sip:1408@x").is_err());
        assert!(Waid::parse("").is_err());
    }

    #[test]
    fn call_id_is_opaque_but_bounded() {
        let real = "wacid.HBgMOTE3MzU4NTgwMTgwFQIAEhggQkE2/+ABUKAA==";
        assert_eq!(WaCallId::parse(real).unwrap().as_str(), real);
        assert!(WaCallId::parse("").is_err());
        assert!(WaCallId::parse("a b").is_err());
        assert!(WaCallId::parse("a\u{0}b").is_err());
        assert!(WaCallId::parse(&"x".repeat(257)).is_err());
    }
}
