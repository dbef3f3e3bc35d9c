#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/ (the RFC 4475 messages come
from tests/sip-torture-messages.rs: WSB_WRITE_FUZZ_SEEDS=1). Run from the
repository root; idempotent."""
import json, os, re, struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n")

def with_len(head, body=""):
    head = crlf(head).rstrip("\r\n")
    body = crlf(body)
    return f"{head}\r\nContent-Length: {len(body)}\r\n\r\n{body}"

# The captured WhatsApp offer (../shared/whatsapp-wire.md, as in src/webrtc/sdp.rs).
WA_OFFER = open(os.path.join(os.path.dirname(root), "..", "src", "webrtc", "sdp.rs")).read()
WA_OFFER = re.search(r'const WA_OFFER: &str = "(.*?)";', WA_OFFER).group(1).encode().decode("unicode_escape")

PCMU_SDP = crlf("""v=0
o=pbx 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 4000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
""")
SDES_SDP = crlf("""v=0
o=- 1 2 IN IP4 127.0.0.1
s=Asterisk
c=IN IP4 127.0.0.1
t=0 0
m=audio 10000 RTP/SAVP 0 101
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
a=crypto:2 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
""")
OPUS_SDP = crlf("""v=0
o=FreeSWITCH 1 2 IN IP4 127.0.0.1
s=FreeSWITCH
c=IN IP4 127.0.0.1
t=0 0
m=audio 16000 RTP/AVP 102 0 101
a=rtpmap:102 opus/48000/2
a=fmtp:102 useinbandfec=1; maxplaybackrate=16000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=rtcp:16001 IN IP4 127.0.0.1
""")
HOLD_SDP = PCMU_SDP.replace("a=sendrecv", "a=sendonly").replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")

for name, sdp in [("pcmu", PCMU_SDP), ("sdes", SDES_SDP), ("opus", OPUS_SDP), ("hold", HOLD_SDP), ("whatsapp", WA_OFFER)]:
    put("pbx_sdp", name, sdp)

put("whatsapp_offer", "captured", WA_OFFER)
put("whatsapp_offer", "ipv6-only", WA_OFFER.replace("127.0.0.1 3484 typ host", "::1 3484 typ host"))
put("whatsapp_offer", "pcmu-only", WA_OFFER.replace("111 126", "0 126").replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:0 PCMU/8000"))

# SIP: requests from the PBX and responses to our INVITE (@C@, @B@, @F@, @T@
# stand for the dialogs' identifiers; see fuzz_targets/sip_ua.rs).
PBX = "127.0.0.1:5099"
def pbx_req(method, cseq, extra="", body="", ctype="application/sdp", to_tag="@T@", call_id="pbx-call-1"):
    head = f"""{method} sip:bridge@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP {PBX};branch=z9hG4bK{method.lower()}{cseq}
Max-Forwards: 70
From: <sip:agent@{PBX}>;tag=pbx
To: <sip:14085551234@127.0.0.1:5060>;tag={to_tag}
Call-ID: {call_id}
CSeq: {cseq} {method}
Contact: <sip:agent@{PBX}>
{extra}"""
    if body:
        head = head.rstrip("\n") + f"\nContent-Type: {ctype}\n"
    return with_len(head, body)

def resp(code, reason, extra="", body="", method="INVITE", cseq=1):
    head = f"""SIP/2.0 {code} {reason}
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=@B@;rport
From: <sip:+15551234567@wa.example.com>;tag=@F@
To: <sip:ivr@{PBX}>;tag=pbx-answer
Call-ID: @C@
CSeq: {cseq} {method}
Contact: <sip:ivr@{PBX}>
{extra}"""
    if body:
        head = head.rstrip("\n") + "\nContent-Type: application/sdp\n"
    return with_len(head, body)

sip_ua = {
    "bye": pbx_req("BYE", 2),
    "reinvite-hold": pbx_req("INVITE", 2, body=HOLD_SDP),
    "reinvite-sdes": pbx_req("INVITE", 3, body=SDES_SDP),
    "update-no-sdp": pbx_req("UPDATE", 2),
    "update-timer": pbx_req("UPDATE", 2, "Session-Expires: 120;refresher=uac\nSupported: timer\n"),
    "refer": pbx_req("REFER", 2, f"Refer-To: <sip:echo@{PBX}>\nReferred-By: <sip:agent@{PBX}>\n"),
    "refer-replaces": pbx_req("REFER", 2, f"Refer-To: <sip:echo@{PBX}?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>\n"),
    "info-dtmf": pbx_req("INFO", 2, body="Signal=5\r\nDuration=160\r\n", ctype="application/dtmf-relay"),
    "options": pbx_req("OPTIONS", 5),
    "cancel": pbx_req("CANCEL", 1, to_tag=""),
    "180-rel": resp(180, "Ringing", "Require: 100rel\nRSeq: 1\n", PCMU_SDP),
    "183-sdp": resp(183, "Session Progress", "", SDES_SDP),
    "200": resp(200, "OK", "Session-Expires: 90;refresher=uas\nRequire: timer\n", PCMU_SDP),
    "401": resp(401, "Unauthorized", 'WWW-Authenticate: Digest realm="pbx", nonce="abc", algorithm=SHA-256, qop="auth"\n'),
    "407": resp(407, "Proxy Authentication Required", 'Proxy-Authenticate: Digest realm="pbx", nonce="n1", algorithm=MD5\n'),
    "302": resp(302, "Moved", f"Contact: <sip:+4477@{PBX}>;q=0.7, <sip:+4478@{PBX}>;q=0.9\n"),
    "422": resp(422, "Session Interval Too Small", "Min-SE: 1800\n"),
    "486": resp(486, "Busy Here"),
}
for name, msg in sip_ua.items():
    put("sip_ua", f"hand-{name}", b"\x00\x04" + msg.encode())
    put("sip_message", f"hand-{name}", msg)
# A whole exchange: provisional, answer, then the PBX's BYE in the other call.
put("sip_ua", "hand-sequence", b"\x03\x04" + sip_ua["180-rel"].encode() + b"\x00\x04" + sip_ua["200"].encode() + b"\x00\x05" + sip_ua["reinvite-hold"].encode() + b"\x00\x04" + sip_ua["bye"].encode())
put("sip_ua", "hand-digest-invite", b"\x01\x04" + pbx_req("INVITE", 1, 'Authorization: Digest username="pbx", realm="bridge", nonce="x", uri="sip:bridge@127.0.0.1:5060", response="0123456789abcdef0123456789abcdef"\n', PCMU_SDP, to_tag="", call_id="pbx-call-2").encode())

put("sip_stream", "two-messages-and-pings", b"\x10" + b"\r\n\r\n" + sip_ua["options"].encode() + b"\r\n\r\n" + sip_ua["bye"].encode() + b"\r\n")
put("sip_stream", "partial", b"\x40" + sip_ua["reinvite-hold"].encode()[:-10])

# Webhook bodies, first byte the route (WebhookKind::ALL order).
hooks = [
    (0, {"callId": "wacid.1", "sdp": WA_OFFER, "businessNumber": "15551441906", "contact": {"ContactNumber": "917358580180"}}),
    (0, {"callId": "c1", "sdp": {"type": "offer", "sdp": WA_OFFER}}),
    (1, {"callId": "wacid.2", "status": "accepted", "sdp": WA_OFFER}),
    (2, {"callId": "wacid.2", "status": "ringing"}),
    (3, {"callId": "c1", "tenantId": "123456"}),
    (4, {"waid": "14085551234", "hasPermission": False}),
    (4, {"waid": "+1 408 555 1234", "status": "granted"}),
]
for i, (kind, body) in enumerate(hooks):
    put("webhook_json", f"hook-{i}", bytes([kind]) + json.dumps(body).encode())

put("config_toml", "example", open(os.path.join(os.path.dirname(root), "..", "examples", "bridge.toml"), "rb").read())

# Relay: [mode] then records [op, len, bytes...].
def rtp(pt, seq, ts, ssrc, payload, marker=False):
    return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, ts, ssrc) + payload
def rec(op, data):
    return bytes([op, len(data)]) + data
pcmu = [rec(0, rtp(0, 1 + i, 160 * i, 0xabc, bytes([0xff]) * 160)) for i in range(3)]
event = rec(0, rtp(101, 9, 480, 0xabc, bytes([5, 0x0a, 0, 160]), True)) + rec(0, rtp(101, 10, 480, 0xabc, bytes([5, 0x8a, 1, 64])))
opus_silence = bytes([0xf8, 0xff, 0xfe])
put("pbx_rtp", "pcmu", b"\x01" + b"".join(pcmu) + event + rec(2, opus_silence) + rec(4, b"\x05") + rec(3, bytes([1, 0x0a, 0, 160])) + rec(5, b""))
put("pbx_rtp", "opus", b"\x00" + rec(0, rtp(111, 1, 0, 0xabc, opus_silence)) + rec(2, opus_silence) + rec(4, b"\xff" * 4))
put("pbx_rtp", "pcma-rtcp", b"\x02" + rec(0, bytes([0x81, 200, 0, 6]) + bytes(24)) + rec(0, rtp(8, 1, 0, 0xabc, bytes([0xd5]) * 240)))

# WhatsApp leg datagrams: [mode] then records [flags, len, bytes...].
stun = struct.pack("!HHI", 0x0001, 8, 0x2112A442) + bytes(range(12)) + struct.pack("!HH", 0x0006, 4) + b"ab:c"
dtls = bytes([22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 12]) + bytes([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
srtp = rtp(111, 7, 960, 0x3e6b6a5b, bytes(30))
def drec(flags, data):
    return bytes([flags | (len(data) >> 8), len(data) & 0xff]) + data
put("whatsapp_datagrams", "before-connect", b"\x00" + drec(0, stun) + drec(0, dtls) + drec(0x80, srtp))
put("whatsapp_datagrams", "connected", b"\x01" + drec(0x08, srtp) + drec(0, bytes([0x81, 201, 0, 1]) + bytes(4)) + drec(0, dtls) + drec(0x10, stun))
