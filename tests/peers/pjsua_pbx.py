#!/usr/bin/env python3
"""PJSIP (pjsua2, the SIP stack inside Asterisk's chan_pjsip) as the PBX
extension in the interop tests, on 127.0.0.1 only, G.711 (the PyPI wheel has
no Opus).

  answer mode: auto-answers the first INVITE on --port.
  dial mode:   calls --target (a SIP URI) from --port.
Either way it plays a --tone Hz sine, records what it receives to --record
(WAV, 16 kHz mono: pjsua's conference clock), sends --dtmf as RFC 4733
events 1.5 s after the call is confirmed, hangs up after --seconds of call
(dial mode) or waits for the other side's BYE (answer mode), and prints one
JSON line: {"result": {"final": code, "reason": phrase, "confirmed": bool,
"digits": the DTMF digits it received (RFC 4733), "pjsua": version}}.
"""
import argparse
import gc
import json
import os
import sys
import time

import pjsua2 as pj


class Call(pj.Call):
    def __init__(self, acc, args, call_id=pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.args = args
        self.confirmed_at = None
        self.final = None
        self.reason = ""
        self.disconnected = False
        self.dtmf_sent = False
        self.digits = ""
        self.tone = None
        self.rec = None

    def onCallState(self, prm):
        ci = self.getInfo()  # hold the object: its fields dangle otherwise (SWIG)
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and self.confirmed_at is None:
            self.confirmed_at = time.time()
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True
            self.final = ci.lastStatusCode
            self.reason = ci.lastReason

    def onDtmfDigit(self, prm):
        self.digits += prm.digit

    def onCallMediaState(self, prm):
        ci = self.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                am = self.getAudioMedia(i)
                if self.tone is None:
                    self.tone = pj.ToneGenerator()
                    self.tone.createToneGenerator(16000, 1)
                    td = pj.ToneDesc()
                    td.freq1, td.freq2, td.on_msec, td.off_msec = int(self.args.tone), 0, 30000, 0
                    tv = pj.ToneDescVector()
                    tv.append(td)
                    self.tone.play(tv, True)
                    self.rec = pj.AudioMediaRecorder()
                    self.rec.createRecorder(self.args.record)
                self.tone.startTransmit(am)
                am.startTransmit(self.rec)


class Acc(pj.Account):
    def __init__(self, args):
        super().__init__()
        self.args = args
        self.calls = []

    def onIncomingCall(self, prm):
        c = Call(self, self.args, prm.callId)
        self.calls.append(c)
        op = pj.CallOpParam()
        op.statusCode = 200
        c.answer(op)


def main(args):
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    level = int(os.environ.get("PJSUA_LOG", "1"))
    cfg.logConfig.consoleLevel = level
    cfg.logConfig.level = level
    if os.environ.get("PJSUA_LOGFILE"):
        cfg.logConfig.filename = os.environ["PJSUA_LOGFILE"]
    cfg.medConfig.clockRate = 16000
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    # G.711 only, μ-law first unless told otherwise.
    for c in ep.codecEnum2():
        ep.codecSetPriority(c.codecId, 0)
    for i, name in enumerate(args.codecs.split(",")):
        ep.codecSetPriority(name, 255 - i)
    tc = pj.TransportConfig()
    tc.port = args.port
    tc.boundAddress = tc.publicAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
    ep.libStart()
    ac = pj.AccountConfig()
    ac.idUri = "sip:agent@127.0.0.1:%d" % args.port
    ac.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    ac.mediaConfig.transportConfig.port = args.rtp_port
    if args.username:
        cred = pj.AuthCredInfo("digest", "*", args.username, 0, args.password)
        ac.sipConfig.authCreds.append(cred)
    acc = Acc(args)
    acc.create(ac)
    print(json.dumps({"ready": True, "pjsua": ep.libVersion().full}), flush=True)

    call = None
    if args.mode == "dial":
        call = Call(acc, args)
        acc.calls.append(call)
        op = pj.CallOpParam(True)
        call.makeCall(args.target, op)

    deadline = time.time() + args.limit
    while time.time() < deadline:
        ep.libHandleEvents(10)
        if call is None and acc.calls:
            call = acc.calls[0]
        if call is None:
            continue
        if call.confirmed_at and not call.dtmf_sent and time.time() - call.confirmed_at > 1.5:
            call.dtmf_sent = True
            if args.dtmf:
                call.dialDtmf(args.dtmf)
        if call.disconnected:
            break
        if args.mode == "dial" and call.confirmed_at and time.time() - call.confirmed_at > args.seconds:
            call.hangup(pj.CallOpParam())
            for _ in range(100):
                ep.libHandleEvents(10)
                if call.disconnected:
                    break
            break
    result = {
        "final": call.final if call else None,
        "reason": call.reason if call else "",
        "confirmed": bool(call and call.confirmed_at),
        "digits": call.digits if call else "",
        "pjsua": ep.libVersion().full,
    }
    print(json.dumps({"result": result}), flush=True)
    # Call objects must be gone before libDestroy (pjsua asserts otherwise).
    acc.calls.clear()
    call = None
    del acc
    gc.collect()
    ep.libDestroy()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["answer", "dial"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rtp-port", type=int, default=0)
    p.add_argument("--target", default="")
    p.add_argument("--tone", type=float, default=600.0)
    p.add_argument("--record", required=True)
    p.add_argument("--dtmf", default="")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--limit", type=float, default=30.0)
    p.add_argument("--codecs", default="PCMU/8000,PCMA/8000")
    p.add_argument("--username", default="")
    p.add_argument("--password", default="")
    main(p.parse_args())
