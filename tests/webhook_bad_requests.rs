//! Every kind of bad webhook request gets the exact status the contract names,
//! each 400 names the field, nothing is a 5xx, and nothing bad reaches the call layer.

mod support;

use serde_json::Value;
use support::fake_wati::FakeWati;
use support::{settings, WEBHOOK_KEY};
use wa_sip_bridge::Bridge;

struct Case {
    name: &'static str,
    route: &'static str,
    auth: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// For a 400: the field the error must name.
    field: Option<&'static str>,
}

fn bearer() -> Option<String> {
    Some(format!("Bearer {WEBHOOK_KEY}"))
}

fn case(
    name: &'static str,
    route: &'static str,
    body: &str,
    status: u16,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        route,
        auth: bearer(),
        content_type: Some("application/json"),
        body: body.as_bytes().to_vec(),
        status,
        field,
    }
}

const SDP: &str = r#""v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n""#;

fn cases() -> Vec<Case> {
    let good_inbound =
        format!(r#"{{"callId":"wacid.1","sdp":{SDP},"businessNumber":"1234567890"}}"#);
    let mut v = vec![
        Case {
            auth: None,
            ..case("no key", "inbound-call", &good_inbound, 401, None)
        },
        Case {
            auth: Some("Bearer wrong-key".into()),
            ..case("wrong key", "inbound-call", &good_inbound, 401, None)
        },
        Case {
            auth: Some(format!("bearer {WEBHOOK_KEY}")),
            ..case(
                "lower-case bearer",
                "terminate",
                r#"{"callId":"x"}"#,
                401,
                None,
            )
        },
        Case {
            auth: Some(WEBHOOK_KEY.into()),
            ..case(
                "key without scheme",
                "terminate",
                r#"{"callId":"x"}"#,
                401,
                None,
            )
        },
        Case {
            auth: Some(format!("Basic {WEBHOOK_KEY}")),
            ..case(
                "basic scheme",
                "call-permission",
                r#"{"waid":"14085551234","hasPermission":true}"#,
                401,
                None,
            )
        },
        Case {
            auth: Some(format!("Bearer {WEBHOOK_KEY}x")),
            ..case(
                "key with extra char",
                "outbound-call-status",
                r#"{"callId":"x","status":"RINGING"}"#,
                401,
                None,
            )
        },
        Case {
            auth: Some("Bearer ".into()),
            ..case(
                "empty key",
                "outbound-call",
                r#"{"callId":"x","sdp":"v=0"}"#,
                401,
                None,
            )
        },
        case("empty body", "inbound-call", "", 400, Some("body")),
        case("whitespace body", "terminate", "  \n ", 400, Some("body")),
        case(
            "non-JSON body",
            "inbound-call",
            "callId=x&sdp=y",
            400,
            Some("body"),
        ),
        case(
            "JSON array",
            "terminate",
            r#"["callId"]"#,
            400,
            Some("body"),
        ),
        case(
            "truncated JSON",
            "inbound-call",
            r#"{"callId":"x","sdp":"v=0"#,
            400,
            Some("body"),
        ),
        Case {
            content_type: Some("text/plain"),
            ..case(
                "wrong content type",
                "inbound-call",
                &good_inbound,
                415,
                None,
            )
        },
        Case {
            content_type: Some("application/x-www-form-urlencoded"),
            ..case(
                "form content type",
                "terminate",
                r#"{"callId":"x"}"#,
                415,
                None,
            )
        },
        Case {
            body: {
                let mut b = br#"{"callId":"x","sdp":""#.to_vec();
                b.extend(std::iter::repeat_n(b'a', 300 * 1024));
                b.extend(br#""}"#);
                b
            },
            ..case("300 KiB body", "inbound-call", "", 413, None)
        },
        case(
            "missing callId",
            "inbound-call",
            &format!(r#"{{"sdp":{SDP}}}"#),
            400,
            Some("callId"),
        ),
        case(
            "callId not a string",
            "terminate",
            r#"{"callId":{"id":1}}"#,
            400,
            Some("callId"),
        ),
        case(
            "empty callId",
            "terminate",
            r#"{"callId":""}"#,
            400,
            Some("callId"),
        ),
        case(
            "callId with spaces",
            "terminate",
            r#"{"callId":"a b"}"#,
            400,
            Some("callId"),
        ),
        case(
            "missing sdp",
            "inbound-call",
            r#"{"callId":"x"}"#,
            400,
            Some("sdp"),
        ),
        case(
            "sdp not a string",
            "inbound-call",
            r#"{"callId":"x","sdp":42}"#,
            400,
            Some("sdp"),
        ),
        case(
            "empty sdp",
            "inbound-call",
            r#"{"callId":"x","sdp":""}"#,
            400,
            Some("sdp"),
        ),
        case(
            "sdp not an SDP",
            "outbound-call",
            r#"{"callId":"x","sdp":"hello"}"#,
            400,
            Some("sdp"),
        ),
        case(
            "sdp object without sdp",
            "inbound-call",
            r#"{"callId":"x","sdp":{"type":"offer"}}"#,
            400,
            Some("sdp"),
        ),
        case(
            "bad businessNumber",
            "inbound-call",
            &format!(r#"{{"callId":"x","sdp":{SDP},"businessNumber":"sales"}}"#),
            400,
            Some("businessNumber"),
        ),
        case(
            "answer without sdp",
            "outbound-call",
            r#"{"callId":"x"}"#,
            400,
            Some("sdp"),
        ),
        case(
            "unknown status value",
            "outbound-call-status",
            r#"{"callId":"x","status":"DANCING"}"#,
            400,
            Some("status"),
        ),
        case(
            "status not a string",
            "outbound-call-status",
            r#"{"callId":"x","status":true}"#,
            400,
            Some("status"),
        ),
        case(
            "missing status",
            "outbound-call-status",
            r#"{"callId":"x"}"#,
            400,
            Some("status"),
        ),
        case(
            "terminate without callId",
            "terminate",
            r#"{"tenantId":"t1"}"#,
            400,
            Some("callId"),
        ),
        case(
            "permission without waid",
            "call-permission",
            r#"{"hasPermission":true}"#,
            400,
            Some("waid"),
        ),
        case(
            "permission with bad waid",
            "call-permission",
            r#"{"waid":"not-a-number","hasPermission":true}"#,
            400,
            Some("waid"),
        ),
        case(
            "permission without verdict",
            "call-permission",
            r#"{"waid":"14085551234"}"#,
            400,
            Some("hasPermission"),
        ),
        case(
            "permission unknown status",
            "call-permission",
            r#"{"waid":"14085551234","status":"perhaps"}"#,
            400,
            Some("status"),
        ),
    ];
    // Invalid UTF-8 inside a JSON string.
    v.push(Case {
        body: b"{\"callId\":\"\xff\xfe\"}".to_vec(),
        ..case("invalid UTF-8", "terminate", "", 400, Some("body"))
    });
    v
}

#[tokio::test]
async fn bad_webhook_requests_get_the_exact_status() {
    let wati = FakeWati::start().await.unwrap();
    let (bridge, mut events) = Bridge::start_with_events(settings(&wati.api_endpoint()))
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let cases = cases();
    assert!(cases.len() >= 20);
    for c in &cases {
        let mut req = client
            .post(format!(
                "http://{}/webhooks/wati/{}",
                bridge.http_addr, c.route
            ))
            .body(c.body.clone());
        if let Some(a) = &c.auth {
            req = req.header("authorization", a);
        }
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, c.status, "{}: got {status} {body}", c.name);
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no error text in {body}", c.name));
        if let Some(field) = c.field {
            assert!(
                error.starts_with(&format!("{field}:")),
                "{}: error {error:?} does not name {field}",
                c.name
            );
        }
    }
    // None of them reached the call layer.
    assert!(events.try_recv().is_err());

    // Metrics counted them by status.
    let metrics = client
        .get(format!("http://{}/metrics", bridge.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"wsb_webhooks_total{kind="inbound_call",status="401"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wsb_webhooks_total{kind="inbound_call",status="413"} 1"#),
        "{metrics}"
    );

    // 400s are logged for operators with their error; 401/413/415 are not stored.
    let logged = bridge.store.recent_webhooks(1000).await.unwrap();
    let n400 = cases.iter().filter(|c| c.status == 400).count();
    assert_eq!(logged.len(), n400);
    assert!(logged.iter().all(|w| w.status == 400 && w.error.is_some()));
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_routes_and_methods_are_not_5xx() {
    let wati = FakeWati::start().await.unwrap();
    let bridge = Bridge::start(settings(&wati.api_endpoint())).await.unwrap();
    let client = reqwest::Client::new();
    let get = client
        .get(format!(
            "http://{}/webhooks/wati/inbound-call",
            bridge.http_addr
        ))
        .header("authorization", format!("Bearer {WEBHOOK_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    let other = client
        .post(format!("http://{}/webhooks/wati/nope", bridge.http_addr))
        .header("authorization", format!("Bearer {WEBHOOK_KEY}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);
    bridge.shutdown().await.unwrap();
}
