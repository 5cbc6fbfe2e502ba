//! `SmsSender` against real HTTP servers on loopback: what reaches the provider, and how each
//! kind of failure is classified (retry or give up).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use latchkey::config::{SmsProvider, TwilioSender};
use latchkey::delivery::{
    sms_text, verify_webhook_signature, webhook_signature, OutgoingSms, Purpose, SmsError,
    SmsSender, SIGNATURE_HEADER,
};
use reqwest::StatusCode;

use crate::sms_server::{TestSms, WEBHOOK_TOLERANCE_SECS};

const TO: &str = "+15005550009";
const CODE: &str = "482913";
const SECRET: &str = "webhook-secret-0123456789abcdef0123";

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn sender(provider: SmsProvider) -> SmsSender {
    SmsSender::new(provider, Duration::from_secs(5)).unwrap()
}

async fn send_to(sender: &SmsSender, to: &str) -> Result<(), SmsError> {
    let body = sms_text(CODE, "Acme", "accounts.example.com");
    let sms = OutgoingSms {
        id: "msg_test",
        to,
        body: &body,
        code: CODE,
        purpose: Purpose::SignIn,
        expires_at_ms: 1_700_000_600_000,
    };
    sender.send(&sms, now_unix()).await
}

async fn send(sender: &SmsSender) -> Result<(), SmsError> {
    send_to(sender, TO).await
}

fn permanent(result: Result<(), SmsError>) -> String {
    match result {
        Err(SmsError::Permanent(e)) => e,
        other => panic!("expected a permanent failure, got {other:?}"),
    }
}

fn temporary(result: Result<(), SmsError>) -> String {
    match result {
        Err(SmsError::Temporary(e)) => e,
        other => panic!("expected a temporary failure, got {other:?}"),
    }
}

fn twilio_with_token(sms: &TestSms, token: &str) -> SmsProvider {
    match sms.provider() {
        SmsProvider::Twilio {
            base_url,
            account_sid,
            sender,
            ..
        } => SmsProvider::Twilio {
            base_url,
            account_sid,
            auth_token: token.into(),
            sender,
        },
        other => panic!("{other:?}"),
    }
}

/// An address where nothing listens.
fn closed_port_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn twilio_receives_the_form_fields_with_basic_auth() {
    let sms = TestSms::start();
    send(&sender(sms.provider())).await.unwrap();

    let got = sms.wait_for(TO, 1).await;
    assert_eq!(got.from.as_deref(), Some("+15005550006"));
    assert_eq!(got.messaging_service_sid, None);
    assert_eq!(
        got.body,
        "482913 is your Acme verification code.\n\n@accounts.example.com #482913"
    );
    assert_eq!(got.code(), CODE);
    sms.assert_count_stays(TO, 1).await;
    assert_eq!(sms.request_count(), 1);
}

#[tokio::test]
async fn the_test_twilio_checks_basic_auth_and_answers_like_twilio() {
    let sms = TestSms::start();
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        sms.twilio_base_url(),
        sms.account_sid()
    );
    let form = [
        ("To", TO),
        ("From", "+15005550006"),
        ("Body", "482913 is your code."),
    ];
    let client = reqwest::Client::new();

    let anonymous = client.post(&url).form(&form).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let error: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(error["code"], 20003);

    let created = client
        .post(&url)
        .basic_auth(sms.account_sid(), Some(sms.auth_token()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let resource: serde_json::Value = created.json().await.unwrap();
    assert!(
        resource["sid"].as_str().unwrap().starts_with("SM"),
        "{resource}"
    );
    assert_eq!(resource["status"], "queued");
    assert_eq!(resource["to"], TO);
    assert_eq!(sms.messages_to(TO).len(), 1);
    assert_eq!(sms.rejected_count(), 1);
}

#[tokio::test]
async fn a_messaging_service_is_sent_instead_of_a_from_number() {
    let sms = TestSms::start();
    let provider = match sms.provider() {
        SmsProvider::Twilio {
            base_url,
            account_sid,
            auth_token,
            ..
        } => SmsProvider::Twilio {
            base_url,
            account_sid,
            auth_token,
            sender: TwilioSender::MessagingService("MG0123456789abcdef".into()),
        },
        other => panic!("{other:?}"),
    };
    send(&sender(provider)).await.unwrap();

    let got = sms.wait_for(TO, 1).await;
    assert_eq!(got.from, None);
    assert_eq!(
        got.messaging_service_sid.as_deref(),
        Some("MG0123456789abcdef")
    );
}

#[tokio::test]
async fn a_wrong_auth_token_is_a_permanent_failure_that_does_not_quote_the_token() {
    let sms = TestSms::start();
    let wrong = "wrong-token-never-logged";
    let err = permanent(send(&sender(twilio_with_token(&sms, wrong))).await);

    assert!(
        err.contains("HTTP 401") && err.contains("auth_token"),
        "{err}"
    );
    assert!(
        !err.contains(wrong) && !err.contains(&sms.auth_token()),
        "{err}"
    );
    assert_eq!(sms.rejected_count(), 1);
    assert!(sms.messages().is_empty());
}

#[tokio::test]
async fn an_invalid_number_is_a_permanent_failure_with_twilios_reason() {
    let sms = TestSms::start();
    sms.set_failure(Some(400));
    let err = permanent(send(&sender(sms.provider())).await);

    assert!(err.contains("Invalid 'To' Phone Number"), "{err}");
    assert!(err.contains("21211") && err.contains("HTTP 400"), "{err}");
    assert!(!err.contains(CODE) && !err.contains(TO), "{err}");
}

#[tokio::test]
async fn a_provider_outage_is_a_temporary_failure() {
    let sms = TestSms::start();
    sms.set_failure(Some(503));
    let err = temporary(send(&sender(sms.provider())).await);
    assert!(err.contains("HTTP 503"), "{err}");

    sms.set_failure(None);
    send(&sender(sms.provider())).await.unwrap();
    sms.wait_for(TO, 1).await;
    assert_eq!(sms.request_count(), 2);
}

#[tokio::test]
async fn throttling_is_a_temporary_failure() {
    let sms = TestSms::start();
    sms.set_failure(Some(429));
    temporary(send(&sender(sms.provider())).await);
}

#[tokio::test]
async fn a_refused_connection_is_a_temporary_failure() {
    let sms = TestSms::start();
    let provider = match sms.provider() {
        SmsProvider::Twilio {
            account_sid,
            auth_token,
            sender,
            ..
        } => SmsProvider::Twilio {
            base_url: closed_port_url().parse().unwrap(),
            account_sid,
            auth_token,
            sender,
        },
        other => panic!("{other:?}"),
    };
    let err = temporary(send(&sender(provider)).await);
    assert!(err.starts_with("could not reach Twilio"), "{err}");
}

#[tokio::test]
async fn a_provider_that_never_answers_is_a_temporary_failure_within_the_timeout() {
    // Connections complete in the listen backlog, but nothing ever reads or answers them.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/sms", silent.local_addr().unwrap());
    let provider = SmsProvider::Webhook {
        url: url.parse().unwrap(),
        secret: SECRET.into(),
    };
    let sender = SmsSender::new(provider, Duration::from_millis(300)).unwrap();

    let started = Instant::now();
    let err = temporary(send(&sender).await);
    // 300 ms is configured: a generous margin for a busy machine, still far from a hang.
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "answered, not hung: {took:?}"
    );
    assert!(err.contains("did not answer within 300 ms"), "{err}");
}

#[tokio::test]
async fn the_webhook_receives_signed_json() {
    let sms = TestSms::start_webhook(SECRET);
    send(&sender(sms.provider())).await.unwrap();

    let got = sms.wait_for(TO, 1).await;
    let doc = got.json.clone().unwrap();
    assert_eq!(doc["to"], TO);
    assert_eq!(doc["code"], CODE);
    assert_eq!(doc["purpose"], "sign_in");
    assert_eq!(doc["expires_at"], "2023-11-14T22:23:20Z");
    assert_eq!(got.code(), CODE);
    let header = got.signature.unwrap();
    assert!(
        header.starts_with("t=") && header.contains(",v1="),
        "{header}"
    );
}

#[tokio::test]
async fn a_webhook_signed_with_another_secret_is_refused_permanently() {
    let sms = TestSms::start_webhook(SECRET);
    let provider = SmsProvider::Webhook {
        url: sms.webhook_url().parse().unwrap(),
        secret: "another-secret-0123456789abcdef0123".into(),
    };
    let err = permanent(send(&sender(provider)).await);

    assert!(
        err.contains("HTTP 401") && err.contains("sms.webhook.secret"),
        "{err}"
    );
    assert_eq!(sms.rejected_count(), 1);
    assert!(sms.messages().is_empty());
}

#[tokio::test]
async fn the_webhook_receiver_rejects_a_tampered_body_and_a_replay() {
    let sms = TestSms::start_webhook(SECRET);
    let client = reqwest::Client::new();
    let signed = br#"{"to":"+15005550009","body":"482913 is your code."}"#;
    let tampered = br#"{"to":"+15005550666","body":"482913 is your code."}"#;
    let post = |body: &'static [u8], header: String| {
        client
            .post(sms.webhook_url())
            .header(SIGNATURE_HEADER, header)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let header = webhook_signature(SECRET, signed, now_unix());
    assert!(verify_webhook_signature(
        SECRET,
        &header,
        signed,
        now_unix(),
        5
    ));
    let response = post(tampered, header.clone()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let stale = webhook_signature(SECRET, signed, now_unix() - WEBHOOK_TOLERANCE_SECS - 60);
    let response = post(signed, stale).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let response = post(signed, header).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(sms.messages_to("+15005550009").len(), 1);
    assert_eq!(sms.rejected_count(), 2);
}

#[tokio::test]
async fn a_webhook_outage_is_a_temporary_failure() {
    let sms = TestSms::start_webhook(SECRET);
    sms.set_failure(Some(502));
    temporary(send(&sender(sms.provider())).await);
}
