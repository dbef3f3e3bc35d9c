//! What the relay needs to know about an Opus packet without decoding it
//! (RFC 6716 §3.1): how many samples it holds, from its TOC byte.

/// Samples at 48 kHz in one Opus packet, or `None` when the packet is
/// malformed (empty, or a code-3 packet without its frame count byte).
pub(crate) fn samples_48k(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame duration per configuration (RFC 6716 Table 2), in 48 kHz samples.
    let frame: u32 = match config {
        // SILK NB/MB/WB: 10, 20, 40, 60 ms
        0..=11 => [480, 960, 1920, 2880][(config % 4) as usize],
        // Hybrid SWB/FB: 10, 20 ms
        12..=15 => [480, 960][(config % 2) as usize],
        // CELT NB/WB/SWB/FB: 2.5, 5, 10, 20 ms
        _ => [120, 240, 480, 960][(config % 4) as usize],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => (*packet.get(1)? & 0x3f) as u32,
    };
    let total = frame * frames;
    // RFC 6716 §3.2.5: a packet holds at most 120 ms.
    if frames == 0 || total > 5760 {
        return None;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_toc() {
        assert_eq!(samples_48k(&[0xf8, 0xff, 0xfe]), Some(960)); // CELT FB 20 ms
        assert_eq!(samples_48k(&[0x08]), Some(960)); // SILK NB 20 ms
        assert_eq!(samples_48k(&[0x18 | 1]), Some(5760)); // SILK NB 60 ms, two frames
        assert_eq!(samples_48k(&[0x78, 0]), Some(960)); // hybrid FB 20 ms
        assert_eq!(samples_48k(&[0xfb, 0x03]), Some(2880)); // code 3, three 20 ms frames
        assert_eq!(samples_48k(&[0xfb]), None);
        assert_eq!(samples_48k(&[0xfb, 0x00]), None);
        assert_eq!(samples_48k(&[0xfb, 0x3f]), None); // 63 × 20 ms > 120 ms
        assert_eq!(samples_48k(&[]), None);
    }
}
