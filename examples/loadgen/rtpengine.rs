//! Reference mode: the same calls through rtpengine (Debian `rtpengine-daemon`,
//! userspace forwarding, `--table=-1`) doing the bridge's media job — the
//! WhatsApp-like leg (ICE-lite peer, DTLS-SRTP, Opus) to a plain RTP leg,
//! Opus relayed or transcoded to PCMU — driven over its ng control protocol
//! (bencoded dictionaries over UDP, cookie first).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

/// A bencode value (strings as bytes).
#[derive(Debug, Clone, PartialEq)]
pub enum B {
    Str(Vec<u8>),
    Int(i64),
    List(Vec<B>),
    Dict(BTreeMap<Vec<u8>, B>),
}

impl B {
    pub fn s(v: &str) -> B {
        B::Str(v.as_bytes().to_vec())
    }

    pub fn dict(items: Vec<(&str, B)>) -> B {
        B::Dict(
            items
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            B::Str(s) => {
                out.extend_from_slice(s.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(s);
            }
            B::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            B::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode(out);
                }
                out.push(b'e');
            }
            B::Dict(d) => {
                // Keys sorted (BTreeMap), as bencode requires.
                out.push(b'd');
                for (k, v) in d {
                    B::Str(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    pub fn decode(data: &[u8]) -> Option<(B, &[u8])> {
        let (&first, rest) = data.split_first()?;
        match first {
            b'i' => {
                let end = rest.iter().position(|&c| c == b'e')?;
                let n = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
                Some((B::Int(n), &rest[end + 1..]))
            }
            b'l' => {
                let mut items = Vec::new();
                let mut rest = rest;
                while rest.first() != Some(&b'e') {
                    let (v, r) = B::decode(rest)?;
                    items.push(v);
                    rest = r;
                }
                Some((B::List(items), &rest[1..]))
            }
            b'd' => {
                let mut items = BTreeMap::new();
                let mut rest = rest;
                while rest.first() != Some(&b'e') {
                    let (k, r) = B::decode(rest)?;
                    let (v, r) = B::decode(r)?;
                    if let B::Str(k) = k {
                        items.insert(k, v);
                    }
                    rest = r;
                }
                Some((B::Dict(items), &rest[1..]))
            }
            b'0'..=b'9' => {
                let colon = data.iter().position(|&c| c == b':')?;
                let len: usize = std::str::from_utf8(&data[..colon]).ok()?.parse().ok()?;
                let start = colon + 1;
                let s = data.get(start..start + len)?;
                Some((B::Str(s.to_vec()), &data[start + len..]))
            }
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&B> {
        match self {
            B::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            B::Str(s) => std::str::from_utf8(s).ok(),
            _ => None,
        }
    }
}

/// A running rtpengine and its ng control socket.
pub struct Rtpengine {
    pub child: tokio::process::Child,
    pub pid: u32,
    ng: SocketAddr,
    sock: UdpSocket,
    cookie: u64,
}

pub fn version() -> String {
    std::process::Command::new("rtpengine")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "rtpengine not installed".into())
}

impl Rtpengine {
    pub async fn start(
        ng_port: u16,
        ports: (u16, u16),
        log: std::fs::File,
    ) -> Result<Rtpengine, String> {
        let child = tokio::process::Command::new("rtpengine")
            .args([
                "--config-file=none",
                "--table=-1",
                "--interface=127.0.0.1",
                &format!("--listen-ng=127.0.0.1:{ng_port}"),
                &format!("--port-min={}", ports.0),
                &format!("--port-max={}", ports.1),
                "--foreground",
                "--log-stderr",
                &format!(
                    "--log-level={}",
                    std::env::var("LOADGEN_RTPENGINE_LOG_LEVEL").unwrap_or_else(|_| "4".into())
                ),
                "--num-threads=2",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("rtpengine (apt-get install rtpengine-daemon): {e}"))?;
        let pid = child.id().ok_or("rtpengine exited")?;
        let sock = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let mut r = Rtpengine {
            child,
            pid,
            ng: ([127, 0, 0, 1], ng_port).into(),
            sock,
            cookie: 0,
        };
        for _ in 0..100 {
            if let Ok(reply) = r
                .command(
                    B::dict(vec![("command", B::s("ping"))]),
                    Duration::from_millis(100),
                )
                .await
            {
                if reply.get("result").and_then(B::as_str) == Some("pong") {
                    return Ok(r);
                }
            }
        }
        Err("rtpengine did not answer ping".into())
    }

    /// Sends one ng command and waits for its reply (retransmitted, as ng is UDP).
    pub async fn command(&mut self, cmd: B, timeout: Duration) -> Result<B, String> {
        self.cookie += 1;
        let cookie = format!("c{}", self.cookie);
        let mut msg = cookie.as_bytes().to_vec();
        msg.push(b' ');
        cmd.encode(&mut msg);
        let mut buf = vec![0u8; 65536];
        for _ in 0..5 {
            self.sock
                .send_to(&msg, self.ng)
                .await
                .map_err(|e| e.to_string())?;
            let deadline = tokio::time::Instant::now() + timeout;
            while let Ok(Ok((n, _))) =
                tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await
            {
                let data = &buf[..n];
                let Some(sp) = data.iter().position(|&c| c == b' ') else {
                    continue;
                };
                if &data[..sp] != cookie.as_bytes() {
                    continue;
                }
                let (reply, _) = B::decode(&data[sp + 1..]).ok_or("undecodable ng reply")?;
                return Ok(reply);
            }
        }
        Err("ng: no reply".into())
    }

    /// `offer`: the PBX's plain RTP offer in; out, the offer for WhatsApp
    /// (ICE, DTLS-SRTP, Opus: transcoded from `transcode_from` when given).
    /// This is the bridge's outbound shape: WhatsApp answers ICE-lite with
    /// `a=setup:active`, and rtpengine meets the lite peer's candidates only
    /// in its answer (offering the WhatsApp side first made rtpengine check a
    /// peer that had no credentials yet, and most calls never got DTLS up).
    pub async fn offer(
        &mut self,
        call_id: &str,
        pbx_offer: &str,
        transcode_from: Option<&str>,
    ) -> Result<String, String> {
        let mut items = vec![
            ("command", B::s("offer")),
            ("call-id", B::s(call_id)),
            ("from-tag", B::s("pbx")),
            ("sdp", B::s(pbx_offer)),
            ("transport-protocol", B::s("UDP/TLS/RTP/SAVPF")),
            ("ICE", B::s("force")),
            ("rtcp-mux", B::List(vec![B::s("offer")])),
            ("flags", B::List(vec![B::s("SDES-off")])),
        ];
        if let Some(codec) = transcode_from {
            items.push((
                "codec",
                B::dict(vec![
                    ("transcode", B::List(vec![B::s("opus")])),
                    // Not offered to WhatsApp, but still used toward the PBX.
                    ("mask", B::List(vec![B::s(codec)])),
                ]),
            ));
        }
        let sdp = self.sdp_command(B::dict(items)).await?;
        Ok(with_bundle(&sdp))
    }

    /// `answer`: WhatsApp's SDP answer in, the answer for the PBX (plain RTP) out.
    pub async fn answer(&mut self, call_id: &str, wa_answer: &str) -> Result<String, String> {
        self.sdp_command(B::dict(vec![
            ("command", B::s("answer")),
            ("call-id", B::s(call_id)),
            ("from-tag", B::s("pbx")),
            ("to-tag", B::s("wa")),
            ("sdp", B::s(wa_answer)),
            ("transport-protocol", B::s("RTP/AVP")),
            ("ICE", B::s("remove")),
            ("rtcp-mux", B::List(vec![B::s("demux")])),
            ("flags", B::List(vec![B::s("SDES-off")])),
        ]))
        .await
    }

    pub async fn delete(&mut self, call_id: &str) {
        let _ = self
            .command(
                B::dict(vec![
                    ("command", B::s("delete")),
                    ("call-id", B::s(call_id)),
                    ("from-tag", B::s("pbx")),
                ]),
                Duration::from_millis(500),
            )
            .await;
    }

    async fn sdp_command(&mut self, cmd: B) -> Result<String, String> {
        let reply = self.command(cmd, Duration::from_secs(2)).await?;
        match reply.get("result").and_then(B::as_str) {
            Some("ok") => reply
                .get("sdp")
                .and_then(B::as_str)
                .map(str::to_string)
                .ok_or_else(|| "ng reply without sdp".into()),
            other => Err(format!(
                "ng {:?}: {}",
                other,
                reply.get("error-reason").and_then(B::as_str).unwrap_or("")
            )),
        }
    }
}

/// Adds `a=group:BUNDLE <mid>` at session level (and `a=mid:0` when there is
/// no mid): rtpengine leaves them out and our WhatsApp peer (str0m) needs them.
pub fn with_bundle(sdp: &str) -> String {
    if sdp.contains("a=group:BUNDLE") {
        return sdp.to_string();
    }
    // The end of the line that starts at `prefix`.
    let after_line = |text: &str, prefix: &str| {
        text.find(prefix)
            .and_then(|i| text[i + 2..].find("\r\n").map(|j| i + 2 + j + 2))
    };
    let mut text = sdp.to_string();
    if !text.contains("\r\na=mid:") {
        let Some(at) = after_line(&text, "\r\nm=") else {
            return text;
        };
        text.insert_str(at, "a=mid:0\r\n");
    }
    let mid = text
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .unwrap_or("0")
        .to_string();
    if let Some(at) = after_line(&text, "\r\nt=") {
        text.insert_str(at, &format!("a=group:BUNDLE {mid}\r\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_and_mid_are_added() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 107\r\na=sendrecv\r\n";
        let out = with_bundle(sdp);
        assert!(
            out.contains(
                "t=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 107\r\na=mid:0\r\n"
            ),
            "{out}"
        );
        assert_eq!(with_bundle(&out), out);
    }

    #[test]
    fn bencode_round_trips() {
        let v = B::dict(vec![
            ("command", B::s("ping")),
            ("n", B::Int(-3)),
            ("l", B::List(vec![B::s("a")])),
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(out, b"d7:command4:ping1:ll1:ae1:ni-3ee");
        assert_eq!(B::decode(&out).unwrap().0, v);
    }
}
