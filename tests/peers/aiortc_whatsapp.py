#!/usr/bin/env python3
"""An independent WebRTC peer (aiortc) playing the WhatsApp user against the
bridge's WhatsApp leg, on 127.0.0.1 only.

Protocol on stdin/stdout, one JSON object per line:
  offer mode:  we print {"sdp": <offer>}; read {"sdp": <answer>}
  answer mode: we read {"sdp": <offer>}; print {"sdp": <answer>}
then we send a sine of --tone Hz for --seconds and print
  {"result": {"frames": N, "snr_db": X, "expect_hz": F, "connection": state, "ice_controlling": bool}}
measuring the tone the bridge sent (--expect Hz) in what we received.

Like WhatsApp's media servers, this peer is never the controlling ICE agent:
the bridge must control. --rsa gives it an RSA certificate (and lets its
DTLS accept ECDHE-RSA suites) instead of aiortc's default ECDSA one.
"""
import argparse
import asyncio
import fractions
import json
import math
import sys

import numpy as np

import aioice.ice
import aiortc
from aiortc import RTCPeerConnection, RTCSessionDescription, MediaStreamTrack
from aiortc.rtcdtlstransport import RTCCertificate
import av

# aioice drops loopback addresses from host candidates; this test lives on 127.0.0.1.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

RATE = 48000
FRAME = 960


class Tone(MediaStreamTrack):
    kind = "audio"

    def __init__(self, freq):
        super().__init__()
        self.freq = freq
        self.n = 0
        self.start = None

    async def recv(self):
        loop = asyncio.get_event_loop()
        if self.start is None:
            self.start = loop.time()
        due = self.start + self.n / RATE
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (np.arange(FRAME) + self.n) / RATE
        samples = (0.4 * 32767 * np.sin(2 * math.pi * self.freq * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.n
        frame.time_base = fractions.Fraction(1, RATE)
        self.n += FRAME
        return frame


def use_rsa():
    from cryptography.hazmat.primitives.asymmetric import rsa
    from aiortc import rtcdtlstransport

    def gen(cls):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(key=key, cert=rtcdtlstransport.generate_certificate(key))

    RTCCertificate.generateCertificate = classmethod(gen)
    original = RTCCertificate._create_ssl_context

    def ctx(self, srtp_profiles):
        c = original(self, srtp_profiles=srtp_profiles)
        c.set_cipher_list(b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")
        return c

    RTCCertificate._create_ssl_context = ctx


def snr_db(pcm, freq):
    x = pcm.astype(np.float64)
    if len(x) < RATE // 10:
        return -100.0
    n = len(x)
    w = 2 * math.pi * freq / RATE
    # Goertzel-equivalent projection onto the tone.
    t = np.arange(n)
    c = np.dot(x, np.cos(w * t))
    s = np.dot(x, np.sin(w * t))
    signal = 2 * (c * c + s * s) / (n * n)
    total = float(np.mean(x * x))
    noise = max(total - signal, total * 1e-9, 1e-9)
    return 10 * math.log10(max(signal, 1e-12) / noise)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def read_line():
    line = await asyncio.get_event_loop().run_in_executor(None, sys.stdin.readline)
    return json.loads(line)


def controlled(pc):
    conn = pc.getTransceivers()[0].sender.transport.transport._connection
    conn.ice_controlling = False
    return conn


async def main(args):
    if args.rsa:
        use_rsa()
    pc = RTCPeerConnection()
    received = []
    done = asyncio.Event()

    @pc.on("track")
    def on_track(track):
        async def pull():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                arr = frame.to_ndarray()
                # aiortc decodes to packed stereo s16: keep the left channel.
                if frame.layout.name == "stereo":
                    arr = arr.reshape(-1)[0::2]
                else:
                    arr = arr.reshape(-1)
                received.append(arr.copy())
        asyncio.ensure_future(pull())

    tx = pc.addTransceiver(Tone(args.tone), direction="sendrecv")
    caps = aiortc.RTCRtpSender.getCapabilities("audio")
    tx.setCodecPreferences([c for c in caps.codecs if c.mimeType.lower() == "audio/opus"])

    if args.mode == "offer":
        await pc.setLocalDescription(await pc.createOffer())
        conn = controlled(pc)
        emit({"sdp": pc.localDescription.sdp})
        answer = await read_line()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        conn.ice_controlling = False
    else:
        offer = await read_line()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        conn = controlled(pc)
        emit({"sdp": pc.localDescription.sdp})

    await asyncio.sleep(args.seconds)
    pcm = np.concatenate(received) if received else np.zeros(0, dtype=np.int16)
    skip = RATE // 2  # codec and jitter-buffer warm-up
    result = {
        "frames": len(received),
        "snr_db": snr_db(pcm[skip:], args.expect),
        "expect_hz": args.expect,
        "connection": pc.connectionState,
        "ice_controlling": conn.ice_controlling,
        "aiortc": aiortc.__version__,
    }
    emit({"result": result})
    await pc.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["offer", "answer"])
    p.add_argument("--tone", type=float, default=440.0)
    p.add_argument("--expect", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rsa", action="store_true")
    asyncio.run(main(p.parse_args()))
