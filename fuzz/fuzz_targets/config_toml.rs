//! A config file → the loader and the checker (every problem reported at
//! once, each naming its key). Oracle: no panic; an error names keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wa_sip_bridge::config::settings_from_toml_str;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = settings_from_toml_str(text, Vec::<(String, String)>::new()) {
        assert!(!e.to_string().is_empty());
    }
});
