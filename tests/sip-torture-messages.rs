//! RFC 4475's parser torture messages (§3.1.1 valid, §3.1.2 invalid) fed to
//! the user agent as a PBX would send them, sans-IO. A valid request is
//! answered as its method and the UA's state call for (an INVITE reaches the
//! call layer, OPTIONS gets 200, a method we do not implement 405 with
//! Allow, an in-dialog request without a dialog 481); a valid response to no
//! request of ours is absorbed silently; an invalid request gets 400 with a
//! reason phrase naming the problem (505 for an unknown version), or is
//! dropped where nothing can be answered; nothing panics.
//!
//! The messages are RFC 4475's, with its Content-Lengths recomputed for our
//! CRLF line endings and its non-printable characters written out.

use std::time::Instant;

use wa_sip_bridge::sip::acl::SourceAcl;
use wa_sip_bridge::sip::endpoint::{Peer, Transport};
use wa_sip_bridge::sip::message::parse_incoming;
use wa_sip_bridge::sip::transaction::Timers;
use wa_sip_bridge::sip::ua::{SipUa, UaConfig, UaEvent, UaOutput};

fn ua() -> SipUa {
    SipUa::new(
        UaConfig {
            via_host: "127.0.0.1:5060".into(),
            tls_host: None,
            contact_uri: "sip:bridge@127.0.0.1:5060".into(),
            credentials: None,
            inbound_credentials: None,
            realm: "test".into(),
            acl: SourceAcl::new(vec!["127.0.0.1/32".parse().unwrap()], vec![]),
            timers: Timers::default(),
            rng_seed: Some(4475),
            session: Default::default(),
            auth_guard: Default::default(),
        },
        Instant::now(),
    )
}

/// `text` with LF line ends made CRLF and `{len}` replaced by the length
/// of what follows the blank line.
fn wire(text: &str) -> Vec<u8> {
    let crlf = text.replace('\n', "\r\n");
    let body_len = crlf.find("\r\n\r\n").map_or(0, |i| crlf.len() - i - 4);
    crlf.replace("{len}", &body_len.to_string()).into_bytes()
}

/// What the UA did with one message: the status lines it sent (status code
/// and reason phrase) and whether the call layer heard of a new call.
fn feed(data: &[u8]) -> (Vec<(u16, String)>, bool) {
    let mut ua = ua();
    let pbx = Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5099".parse().unwrap(),
    };
    ua.handle_message(Instant::now(), data, pbx);
    let (mut sent, mut incoming) = (Vec::new(), false);
    while let Some(o) = ua.poll_output() {
        match o {
            UaOutput::Transmit { data, .. } => {
                let text = String::from_utf8_lossy(&data).to_string();
                let line = text.lines().next().unwrap_or("").to_string();
                let mut parts = line.splitn(3, ' ');
                assert_eq!(
                    parts.next(),
                    Some("SIP/2.0"),
                    "only responses go out: {line}"
                );
                let code = parts.next().and_then(|c| c.parse().ok()).unwrap();
                sent.push((code, parts.next().unwrap_or("").to_string()));
            }
            UaOutput::Event(UaEvent::Incoming { .. }) => incoming = true,
            UaOutput::Event(_) => {}
        }
    }
    (sent, incoming)
}

/// The final status sent (ignoring 100 Trying).
fn final_of(sent: &[(u16, String)]) -> Option<(u16, String)> {
    sent.iter().find(|(c, _)| *c >= 200).cloned()
}

const SDP150: &str = "v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.3
s=-
c=IN IP4 192.0.2.4
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
";

fn valid() -> Vec<(&'static str, Vec<u8>)> {
    let long = "a".repeat(200);
    let longreq = format!(
        "INVITE sip:user@example.com SIP/2.0
To: \"I have a user name of {long} proportion\" <sip:user@example.com:6000;unknownparam1=verylonguuunnnnnnnnknnnnnnnnnownnnnnnnnnvaaaaaaaaaaaaaaaaaaaaaaaalue;longparam{long}=shortvalue;verylonglonglonglonglongparametername=verylongvalue{long}>
From: sip:{long}@example.net;tag={long}
Call-ID: longreq.one{long}
CSeq: 3882340 INVITE
Unknown-{long}-Header: unknown-{long}-value; unknown-{long}-parameter-name = unknown-{long}-parameter-value
Via: SIP/2.0/TCP sip33.example.com
v: SIP/2.0/TCP sip32.example.com
V: SIP/2.0/TCP sip31.example.com
Via: SIP/2.0/TCP sip30.example.com
ViA: SIP/2.0/TCP sip29.example.com
VIa: SIP/2.0/TCP sip28.example.com
VIA: SIP/2.0/TCP sip27.example.com
via: SIP/2.0/TCP sip26.example.com
viA: SIP/2.0/TCP sip25.example.com
vIa: SIP/2.0/TCP sip24.example.com
vIA: SIP/2.0/TCP sip23.example.com
V :  SIP/2.0/TCP sip22.example.com
v :  SIP/2.0/TCP sip21.example.com
V  : SIP/2.0/TCP sip20.example.com
v  : SIP/2.0/TCP sip19.example.com
Via : SIP/2.0/TCP sip18.example.com
Via  : SIP/2.0/TCP sip17.example.com
Via: SIP/2.0/TCP sip16.example.com
Via: SIP/2.0/TCP sip15.example.com
Via: SIP/2.0/TCP sip14.example.com
Via: SIP/2.0/TCP sip13.example.com
Via: SIP/2.0/TCP sip12.example.com
Via: SIP/2.0/TCP sip11.example.com
Via: SIP/2.0/TCP sip10.example.com
Via: SIP/2.0/TCP sip9.example.com
Via: SIP/2.0/TCP sip8.example.com
Via: SIP/2.0/TCP sip7.example.com
Via: SIP/2.0/TCP sip6.example.com
Via: SIP/2.0/TCP sip5.example.com
Via: SIP/2.0/TCP sip4.example.com
Via: SIP/2.0/TCP sip3.example.com
Via: SIP/2.0/TCP sip2.example.com
Via: SIP/2.0/TCP sip1.example.com
Via: SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=z9hG4bK{long}
Max-Forwards: 70
Contact: <sip:amazinglylongcallername{long}@host5.example.net>
Content-Type: application/sdp
l: {{len}}

{SDP150}"
    );
    vec![
        ("wsinv", wire(&format!("INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : {{len}}
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

{SDP150}"))),
        ("intmeth", wire("!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: \"BEL:\\\u{7} NUL:\\\u{0} DEL:\\\u{7f}\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\u{feff}\u{5927}\u{505c}\u{96fb}
Content-Length: 0

")),
        ("esc01", wire(&format!("INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: {{len}}

{SDP150}"))),
        ("escnull", wire("REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

")),
        ("esc02", wire("RE%47IST%45R sip:registrar.example.com SIP/2.0
To: \"%Z%45\" <sip:resource@example.com>
From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

")),
        ("lwsdisp", wire("OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

")),
        ("longreq", wire(&longreq)),
        ("dblreq", wire("REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0


INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.15
s=-
c=IN IP4 192.0.2.15
t=0 0
m=audio 49217 RTP/AVP 0 12
m =video 3227 RTP/AVP 31
a=rtpmap:31 LPC
")),
        ("semiuri", wire("OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

")),
        ("transports", wire("OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

")),
        ("mpart01", wire("MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
Route: <sip:127.0.0.1:5080>
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+813gvYjcBUaZngQmXc9WNZSDNGCzA+fWl9MEUHWIZo1CeJebdY/XlgKeTa0Olvq0rt70Q5jiSfbqMJmQFteeivUhkMWYUA=
Contact: <sip:fluffy@127.0.0.1:5070>
To: <sip:kumiko@example.org>
From: <sip:fluffy@example.com>;tag=2fb0dcc9
Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655
Date: Sat, 15 Oct 2005 04:44:56 GMT
User-Agent: SIPimp.org/0.2.5 (curses)
Content-Length: {len}

--7a9cbec02ceef655
Content-Type: text/plain
Content-Transfer-Encoding: binary

Hello
--7a9cbec02ceef655
Content-Type: application/octet-stream
Content-Transfer-Encoding: binary

0\u{1}\u{2}
--7a9cbec02ceef655--
")),
        ("unreason", wire("SIP/2.0 200 = 2**3 * 5**2 \u{43d}\u{43e} \u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{43d}\u{43e}\u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{442}\u{44c} - \u{43f}\u{440}\u{43e}\u{441}\u{442}\u{43e}\u{435}
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: {len}
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.198
s=-
c=IN IP4 192.0.2.198
t=0 0
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
")),
        ("noreason", wire("SIP/2.0 100 \nVia: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

")),
    ]
}

/// A valid request is answered as its method calls for.
#[test]
fn rfc4475_valid_messages_are_accepted() {
    for (name, data) in valid() {
        let (sent, incoming) = feed(&data);
        let fin = final_of(&sent).map(|(c, _)| c);
        let expected: (Option<u16>, bool) = match name {
            // A new call for the call layer (no final response yet).
            "esc01" | "longreq" => (None, true),
            // A To tag and no such dialog (RFC 3261 §12.2.2).
            "wsinv" => (Some(481), false),
            // Methods the bridge does not implement (RFC 3261 §8.2.1).
            "intmeth" | "escnull" | "esc02" | "dblreq" | "mpart01" => (Some(405), false),
            "lwsdisp" | "semiuri" | "transports" => (Some(200), false),
            // Responses to nothing of ours: absorbed.
            "unreason" | "noreason" => (None, false),
            other => unreachable!("{other}"),
        };
        assert_eq!((fin, incoming), expected, "{name}: sent {sent:?}");
        if fin == Some(405) {
            assert!(
                sent.iter().all(|(c, _)| *c != 400),
                "{name}: a 405, never a 400"
            );
        }
    }
}

/// Each valid message, parsed, written out and parsed again, is the same
/// message (folded lines, compact names, odd spacing all normalised once).
#[test]
fn rfc4475_valid_messages_survive_a_round_trip() {
    for (name, data) in valid() {
        let m = parse_incoming(&data).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let again =
            parse_incoming(&m.to_bytes()).unwrap_or_else(|e| panic!("{name} rewritten: {e:?}"));
        assert_eq!(again, m, "{name}");
    }
}

fn invalid() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("badinv01", wire(&format!("INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: \"Joe\" <sip:joe@example.org>;;;;
Content-Length: {{len}}
Content-Type: application/sdp

{SDP150}"))),
        ("clerr", wire(&format!("INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999

{SDP150}"))),
        ("ncl", wire(&format!("INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

{SDP150}"))),
        ("scalar02", wire("REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0

")),
        ("quotbal", wire(&format!("INVITE sip:user@example.com SIP/2.0
To: \"Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234
Content-Type: application/sdp
Content-Length: {{len}}

{SDP150}"))),
        ("ltgtruri", wire(&format!("INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP 192.0.2.5
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: {{len}}

{SDP150}"))),
        ("lwsruri", wire(&format!("INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: {{len}}

{SDP150}"))),
        ("lwsstart", wire(&format!("INVITE  sip:user@example.com  SIP/2.0
Max-Forwards: 8
To: sip:user@example.com
From: sip:caller@example.net;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw3923
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: {{len}}

{SDP150}"))),
        ("trws", wire("OPTIONS sip:remote-target@example.com SIP/2.0  
Via: SIP/2.0/TCP host1.examle.com;branch=z9hG4bK299342093
To: <sip:remote-target@example.com>
From: <sip:local-resource@example.com>;tag=329429089
Call-ID: trws.oicu34958239neffasdhr2345r
Accept: application/sdp
CSeq: 238923 OPTIONS
Max-Forwards: 70
Content-Length: 0

")),
        ("escruri", wire(&format!("INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw
Content-Type: application/sdp
Content-Length: {{len}}

{SDP150}"))),
        ("baddn", wire("OPTIONS sip:t.watson@example.org SIP/2.0
Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards:      70
From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To:      Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq:    3923239 OPTIONS
l: 0

")),
        ("badvers", wire("OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0

")),
        ("mismatch01", wire("OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
l: 0

")),
        ("mismatch02", wire("NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: 138

v=0
o=mhandley 29739 7272939 IN IP4 192.0.2.1
c=IN IP4 192.0.2.1
m=audio 49217 RTP/AVP 0 12
m=video 3227 RTP/AVP 31
a=rtpmap:31 LPC
")),
        ("multi01", wire(&format!("INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: {{len}}
Contact: <sip:caller@host36.example.net>
Max-Forwards: 5

{SDP150}"))),
        ("insuf", wire(&format!("INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: {{len}}

{SDP150}"))),
        ("scalarlg", wire("SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture \"In Progress\"
Content-Length: 0

")),
        ("bigcode", wire("SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

")),
    ]
}

/// RFC 4475 §3.1.2: each invalid request gets 400 (505 for SIP/7.0) with a
/// reason phrase naming what is wrong, and never reaches the call layer; an
/// invalid response is dropped without a word.
#[test]
fn rfc4475_invalid_messages_get_400_naming_the_problem() {
    for (name, data) in invalid() {
        let (sent, incoming) = feed(&data);
        assert!(!incoming, "{name} reached the call layer");
        let expected: (u16, &str) = match name {
            "badinv01" => (400, "empty"),
            "clerr" | "ncl" => (400, "Content-Length"),
            "scalar02" => (400, "CSeq"),
            "quotbal" => (400, "quoted string"),
            "ltgtruri" => (400, "Request-URI"),
            "lwsruri" | "lwsstart" | "trws" => (400, "Request-Line"),
            "escruri" => (400, "Request-URI"),
            "baddn" => (400, "display name"),
            "badvers" => (505, "Version"),
            "mismatch01" | "mismatch02" => (400, "CSeq method"),
            "multi01" => (400, "Multiple"),
            "insuf" => {
                // Nothing to address a response with (no From, To, Call-ID).
                assert!(sent.is_empty(), "{name}: {sent:?}");
                continue;
            }
            "scalarlg" | "bigcode" => {
                assert!(sent.is_empty(), "{name}: {sent:?}");
                continue;
            }
            other => unreachable!("{other}"),
        };
        let (code, reason) = final_of(&sent).unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!(code, expected.0, "{name}: {reason}");
        assert!(
            reason.contains(expected.1),
            "{name}: the reason {reason:?} names {:?}",
            expected.1
        );
    }
}

/// What a new user tries first: an unknown method gets 405 with Allow, not
/// 400; so does a known method the bridge does not implement.
#[test]
fn an_unknown_method_gets_405_with_allow() {
    for method in ["FROBNICATE", "SUBSCRIBE", "PUBLISH"] {
        let data = wire(&format!(
            "{method} sip:14085551234@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-{method};rport
Max-Forwards: 70
From: <sip:agent@127.0.0.1:5099>;tag=a1
To: <sip:14085551234@127.0.0.1:5060>
Call-ID: frob-{method}@test
CSeq: 1 {method}
Content-Length: 0

"
        ));
        let mut ua = ua();
        let pbx = Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5099".parse().unwrap(),
        };
        ua.handle_message(Instant::now(), &data, pbx);
        let mut answer = None;
        while let Some(o) = ua.poll_output() {
            if let UaOutput::Transmit { data, .. } = o {
                answer = Some(String::from_utf8(data).unwrap());
            }
        }
        let answer = answer.expect("answered");
        assert!(
            answer.starts_with("SIP/2.0 405 Method Not Allowed\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains(
                "\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, PRACK\r\n"
            ),
            "{answer}"
        );
    }
}

/// The fuzz targets `sip_message` and `sip_ua` start from these messages:
/// each is a file of the committed seed corpus, byte for byte. With
/// `WSB_WRITE_FUZZ_SEEDS=1` the files are (re)written instead.
#[test]
fn rfc4475_messages_are_the_fuzz_seeds() {
    let write = std::env::var_os("WSB_WRITE_FUZZ_SEEDS").is_some();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in ["sip_message", "sip_ua"] {
        let dir = root.join(target);
        for (name, data) in valid().into_iter().chain(invalid()) {
            let path = dir.join(format!("rfc4475-{name}"));
            // sip_ua's input: its flags (0: no digest, no registration),
            // then the message's source byte (4: the PBX over UDP).
            let seed = if target == "sip_ua" {
                [&[0u8, 4u8][..], &data].concat()
            } else {
                data
            };
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &seed).unwrap();
            }
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (WSB_WRITE_FUZZ_SEEDS=1 writes it)", path.display())
            });
            assert_eq!(
                committed,
                seed,
                "{} differs from the test's message",
                path.display()
            );
        }
    }
}
