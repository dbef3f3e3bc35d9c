//! `WSB_<SECTION>__<KEY>` environment overrides, applied to the file's
//! TOML before it is read.

use super::*;

/// Applies `WSB_<SECTION>__<KEY>=value` overrides onto the parsed document.
/// The value is read as the type the key has by default (string, integer,
/// boolean, list), so `WSB_WATI__TOKEN=12345` stays a string.
pub(super) fn apply_env(
    doc: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    problems: &mut Vec<Problem>,
) {
    let defaults = match toml::Table::try_from(RawConfig::default()) {
        Ok(t) => t,
        Err(_) => return, // RawConfig always serializes; nothing to compare against otherwise
    };
    // Sorted so that problems come out in a stable order.
    let env: BTreeMap<String, String> = env.into_iter().collect();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name == ENV_CONFIG_FILE {
            continue;
        }
        let Some((section, key)) = rest.split_once("__") else {
            problems.push(Problem {
                key: name.clone(),
                message: "expected WSB_<SECTION>__<KEY> (two underscores)".into(),
            });
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let Some(default) = defaults
            .get(&section)
            .and_then(|s| s.as_table())
            .and_then(|s| s.get(&key))
        else {
            problems.push(Problem {
                key: name.clone(),
                message: format!("no such config key {section}.{key}"),
            });
            continue;
        };
        let parsed = match default {
            toml::Value::String(_) => Ok(toml::Value::String(value.clone())),
            toml::Value::Integer(_) => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| "expected an integer"),
            toml::Value::Boolean(_) => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(toml::Value::Boolean(true)),
                "false" | "0" | "no" => Ok(toml::Value::Boolean(false)),
                _ => Err("expected true or false"),
            },
            toml::Value::Array(_) => Ok(parse_env_list(&value)),
            _ => Err("this key cannot be set from the environment"),
        };
        match parsed {
            Ok(v) => {
                let table = doc
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match table.as_table_mut() {
                    Some(t) => {
                        t.insert(key, v);
                    }
                    None => problems.push(Problem {
                        key: section,
                        message: "must be a table ([section])".into(),
                    }),
                }
            }
            Err(msg) => problems.push(Problem {
                key: format!("{section}.{key}"),
                message: format!("{msg} (from {name}={value:?})"),
            }),
        }
    }
}

/// A list from the environment: TOML array syntax, or comma-separated items.
fn parse_env_list(value: &str) -> toml::Value {
    let trimmed = value.trim();
    if trimmed.starts_with('[') {
        if let Ok(t) = format!("v = {trimmed}").parse::<toml::Table>() {
            if let Some(v) = t.get("v") {
                return v.clone();
            }
        }
    }
    toml::Value::Array(
        trimmed
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| toml::Value::String(s.to_string()))
            .collect(),
    )
}
