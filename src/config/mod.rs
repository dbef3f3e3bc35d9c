//! Configuration: a TOML file plus `WSB_<SECTION>__<KEY>` environment overrides,
//! validated into typed [`Settings`] before anything starts.
//!
//! Two layers on purpose. [`RawConfig`] mirrors the file (strings, numbers,
//! lists) and is deserialized one section at a time, so a type error in one
//! section does not hide problems in the others. [`RawConfig::validate`] then
//! turns it into [`Settings`] and collects *every* problem, each naming its key
//! (`trunk.uri: ...`), which is what `check-config` prints.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Environment variable prefix for per-key overrides: `WSB_WATI__TOKEN`.
pub const ENV_PREFIX: &str = "WSB_";
/// Environment variable naming the config file (handled by the CLI).
pub const ENV_CONFIG_FILE: &str = "WSB_CONFIG";

/// One thing wrong with the configuration, tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `section.key`, or the file / environment variable when no key applies.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found while loading, one per line when displayed.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![Problem {
                key: key.into(),
                message: message.into(),
            }],
        }
    }

    /// True when some problem names exactly this key.
    pub fn names(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }
}

mod env;
mod raw;
mod settings;
mod validate;

pub use raw::*;
pub use settings::*;
pub use validate::INBOUND_USER_PLACEHOLDERS;

/// Loads, overrides and validates in one go, reporting every problem: those
/// found while reading and those found by validation (a key already reported
/// while reading is not reported again).
pub fn load_settings(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one(path.display().to_string(), format!("cannot read: {e}")))?;
    settings_from_toml_str(&text, env)
}

/// As [`load_settings`], from TOML text.
pub fn settings_from_toml_str(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let (raw, mut problems) = RawConfig::parse(text, env)?;
    match raw.validate() {
        Ok(settings) if problems.is_empty() => Ok(settings),
        Ok(_) => Err(ConfigError { problems }),
        Err(e) => {
            for p in e.problems {
                if !problems.iter().any(|q| q.key == p.key) {
                    problems.push(p);
                }
            }
            Err(ConfigError { problems })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
