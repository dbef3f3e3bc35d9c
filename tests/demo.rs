//! `wa-sip-bridge demo`, README's first command, runs an inbound and an
//! outbound call through the real stack on loopback and exits 0 only when
//! every check passed.

use std::process::Command;

#[test]
fn demo_passes_every_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_wa-sip-bridge"))
        .arg("demo")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "demo failed");
    assert!(
        text.contains("✔ 1 kHz from WhatsApp detected at the PBX"),
        "{text}"
    );
    assert!(
        text.contains("✔ 440 Hz from the PBX detected at WhatsApp"),
        "{text}"
    );
    assert!(text.contains("✔ DTMF WhatsApp → PBX"), "{text}");
    assert!(text.contains("✔ DTMF PBX → WhatsApp"), "{text}");
    assert!(
        text.contains("✔ 600 Hz from the PBX detected at WhatsApp"),
        "{text}"
    );
    assert!(
        text.contains("✔ SIP to the PBX: [180] then Some(200)"),
        "{text}"
    );
    assert!(text.contains("✔ Wati outbound call: POST"), "{text}");
    assert!(text.contains("24 passed, 0 failed"), "{text}");
    assert!(!text.contains('✘'), "{text}");
}
