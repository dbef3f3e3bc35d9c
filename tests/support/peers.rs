//! Third-party peers for the interop tests, each run as a child process on
//! 127.0.0.1: aiortc (the WhatsApp user), baresip and pjsua2 (the PBX
//! extension). A missing peer fails the test (tests/setup-system.sh installs them).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub fn python() -> String {
    std::env::var("WSB_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn peer_script(name: &str) -> String {
    format!("{}/tests/peers/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A child speaking one JSON object per line on stdin/stdout.
pub struct JsonChild {
    pub child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl JsonChild {
    fn spawn(mut cmd: Command) -> JsonChild {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("peer runs (tests/setup-system.sh installs it)");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        JsonChild {
            child,
            stdin,
            lines,
        }
    }

    /// The next JSON line (lines that are not JSON, e.g. library logs, are skipped).
    pub async fn read(&mut self, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .expect("peer answered in time")
                .unwrap()
                .expect("peer still running");
            if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
                return v;
            }
        }
    }

    pub async fn write(&mut self, v: &Value) {
        self.stdin
            .write_all(format!("{v}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }
}

/// aiortc as the WhatsApp user (tests/peers/aiortc_whatsapp.py): `mode` is
/// "offer" (an inbound call) or "answer" (an outbound call).
pub fn aiortc(mode: &str, tone: f64, expect: f64, seconds: f64) -> JsonChild {
    let version = std::process::Command::new(python())
        .args(["-c", "import aiortc; print(aiortc.__version__)"])
        .output()
        .expect("python3 runs");
    eprintln!("aiortc {}", String::from_utf8_lossy(&version.stdout).trim());
    let mut cmd = Command::new(python());
    cmd.arg(peer_script("aiortc_whatsapp.py")).args([
        mode,
        "--tone",
        &tone.to_string(),
        "--expect",
        &expect.to_string(),
        "--seconds",
        &seconds.to_string(),
    ]);
    JsonChild::spawn(cmd)
}

/// pjsua2 as the PBX extension (tests/peers/pjsua_pbx.py).
pub fn pjsua(args: &[&str]) -> JsonChild {
    let mut cmd = Command::new(python());
    cmd.arg(peer_script("pjsua_pbx.py")).args(args);
    JsonChild::spawn(cmd)
}

/// baresip as the PBX extension: auto-answers on `port`, or dials `dial`;
/// sends a `tone_hz` sine; records what it receives under `dir/rec`.
pub struct Baresip {
    pub child: Child,
    pub dir: PathBuf,
}

pub fn baresip_version() -> String {
    let out = std::process::Command::new("baresip")
        .arg("-h")
        .output()
        .expect("baresip is installed (tests/setup-system.sh)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().unwrap_or("baresip").to_string()
}

impl Baresip {
    /// `codec`: "opus/48000/2", "pcmu" or "pcma".
    pub fn start(
        dir: &Path,
        port: u16,
        rtp_ports: (u16, u16),
        codec: &str,
        tone_hz: u32,
        dial: Option<&str>,
        seconds: u32,
    ) -> Baresip {
        Self::start_with(dir, port, rtp_ports, codec, tone_hz, dial, seconds, "", "")
    }

    /// As [`Baresip::start`] (auto-answering), with SIP over TLS on
    /// `port + 1` (`cert_and_key`: its certificate and key in one PEM file)
    /// and SRTP required on its calls (SDES, RTP/SAVP: `mediaenc=srtp-mand`).
    #[allow(clippy::too_many_arguments)]
    pub fn start_secure(
        dir: &Path,
        port: u16,
        rtp_ports: (u16, u16),
        codec: &str,
        tone_hz: u32,
        seconds: u32,
        cert_and_key: &Path,
        ca: &Path,
    ) -> Baresip {
        let tls = format!(
            "sip_certificate\t\t{}\nsip_cafile\t\t{}\nmodule\t\t\tsrtp.so\n",
            cert_and_key.display(),
            ca.display()
        );
        Self::start_with(
            dir,
            port,
            rtp_ports,
            codec,
            tone_hz,
            None,
            seconds,
            &tls,
            ";mediaenc=srtp-mand",
        )
    }

    /// As [`Baresip::start`], with baresip's ctrl_tcp module listening on
    /// `ctrl_port` (JSON in netstrings: its events out, commands in).
    #[allow(clippy::too_many_arguments)]
    pub fn start_controlled(
        dir: &Path,
        port: u16,
        rtp_ports: (u16, u16),
        codec: &str,
        tone_hz: u32,
        seconds: u32,
        ctrl_port: u16,
    ) -> Baresip {
        let ctrl = format!("module_app\t\tctrl_tcp.so\nctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n");
        Self::start_with(
            dir, port, rtp_ports, codec, tone_hz, None, seconds, &ctrl, "",
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn start_with(
        dir: &Path,
        port: u16,
        rtp_ports: (u16, u16),
        codec: &str,
        tone_hz: u32,
        dial: Option<&str>,
        seconds: u32,
        extra_config: &str,
        account_params: &str,
    ) -> Baresip {
        eprintln!("{}", baresip_version());
        let rec = dir.join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        let config = format!(
            "poll_method\t\tepoll\nsip_listen\t\t127.0.0.1:{port}\nnet_interface\t\t127.0.0.1\ncall_local_timeout\t120\ncall_max_calls\t\t4\naudio_source\t\tausine,{tone_hz}\nausrc_srate\t\t48000\nausrc_channels\t\t2\naudio_buffer\t\t20-160\nrtp_ports\t\t{}-{}\nrtcp_mux\t\tno\njitter_buffer_delay\t5-10\nmodule_path\t\t/usr/lib/baresip/modules\nmodule\t\t\tg711.so\nmodule\t\t\topus.so\nmodule\t\t\tausine.so\nmodule\t\t\tsndfile.so\nsnd_path\t\t{}\nmodule_tmp\t\tuuid.so\nmodule_tmp\t\taccount.so\nmodule_app\t\tmenu.so\nopus_bitrate\t\t28000\n",
            rtp_ports.0,
            rtp_ports.1,
            rec.display()
        ) + extra_config;
        std::fs::write(dir.join("config"), config).unwrap();
        let answer = if dial.is_none() {
            ";answermode=auto"
        } else {
            ""
        };
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:ivr@127.0.0.1:{port}>;regint=0{answer};audio_codecs={codec};audio_source=ausine,{tone_hz}{account_params}\n"),
        )
        .unwrap();
        std::fs::write(dir.join("contacts"), "").unwrap();
        let mut cmd = Command::new("baresip");
        cmd.arg("-f").arg(dir).args(["-t", &seconds.to_string()]);
        if let Some(target) = dial {
            cmd.args(["-e", &format!("/dial {target}")]);
        }
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("baresip is installed (tests/setup-system.sh)");
        Baresip {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// What baresip printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// Waits for baresip to exit (its `-t` limit), or ends it with SIGTERM after `limit`.
    pub async fn finish(mut self, limit: Duration) -> Option<(u32, Vec<i16>)> {
        if tokio::time::timeout(limit, self.child.wait())
            .await
            .is_err()
        {
            if let Some(pid) = self.child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        }
        let rec = self.dir.join("rec");
        let dec = std::fs::read_dir(&rec)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))?;
        read_wav(&dec)
    }
}

/// Channel 0 of a 16-bit PCM WAV file, with its sample rate.
pub fn read_wav(path: &Path) -> Option<(u32, Vec<i16>)> {
    let b = std::fs::read(path).ok()?;
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return None;
    }
    let (mut rate, mut channels, mut i) = (0u32, 1usize, 12usize);
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let mut len = u32::from_le_bytes(b[i + 4..i + 8].try_into().ok()?) as usize;
        // A recorder stopped early may leave the data length unset.
        if id == b"data" && (len == 0 || i + 8 + len > b.len()) {
            len = b.len() - i - 8;
        }
        let body = &b[i + 8..(i + 8 + len).min(b.len())];
        if id == b"fmt " && body.len() >= 16 {
            channels = u16::from_le_bytes([body[2], body[3]]) as usize;
            rate = u32::from_le_bytes(body[4..8].try_into().ok()?);
        } else if id == b"data" {
            let samples: Vec<i16> = body
                .chunks_exact(2 * channels.max(1))
                .map(|f| i16::from_le_bytes([f[0], f[1]]))
                .collect();
            return Some((rate, samples));
        }
        i += 8 + len + (len & 1);
    }
    None
}

/// A connection to baresip's ctrl_tcp module: JSON objects in netstrings
/// (`<length>:<json>,`) both ways.
pub struct BaresipCtrl {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    /// baresip closed the connection (it exited).
    pub closed: bool,
}

impl BaresipCtrl {
    pub async fn connect(port: u16, limit: Duration) -> BaresipCtrl {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(stream) => {
                    return BaresipCtrl {
                        stream,
                        buf: Vec::new(),
                        closed: false,
                    }
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("baresip's ctrl_tcp on {port}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Sends a command (`sndcode` with a key, `hangup`, …).
    pub async fn command(&mut self, command: &str, params: &str) {
        let json =
            serde_json::json!({"command": command, "params": params, "token": "test"}).to_string();
        let framed = format!("{}:{json},", json.len());
        self.stream.write_all(framed.as_bytes()).await.unwrap();
    }

    /// The next message baresip sends (an event or a command's response);
    /// `None` at `limit` or when the connection closes (then `closed`).
    pub async fn next(&mut self, limit: Duration) -> Option<Value> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(colon) = self.buf.iter().position(|&b| b == b':') {
                let len: usize = std::str::from_utf8(&self.buf[..colon])
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                if self.buf.len() > colon + len + 1 {
                    let body = self.buf[colon + 1..colon + 1 + len].to_vec();
                    self.buf.drain(..colon + len + 2);
                    return serde_json::from_slice(&body).ok();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                self.closed = true;
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
