//! SMTP transport security and reliability against real TLS-speaking SMTP servers on loopback:
//! the README's production path (STARTTLS required + AUTH, a private CA) on mailin-embedded,
//! `smtps://`, and what a man in the middle or a flaky server tries (STARTTLS removed, bytes
//! injected before the handshake, a certificate from another CA, a lost final reply, a pooled
//! connection the server closed).

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{spawn_app_on, until, TestApp, TestSmtp};
use crate::smtp_server::{last_error, wait_for_a_try, Script, ScriptedSmtp, TestCa};

fn with_credentials(script: Script) -> Script {
    Script {
        credentials: Some(("latchkey".into(), "app password".into())),
        ..script
    }
}

/// The app sending through `server` at `url` (`{port}` is filled in), trusting `ca` unless
/// `trust_ca` is false.
async fn app_sending_to(server: &ScriptedSmtp, url: &str, ca: &TestCa, trust_ca: bool) -> TestApp {
    let url = url.replace("{port}", &server.port.to_string());
    let ca_file = trust_ca.then(|| ca.ca_file());
    spawn_app_on(TestSmtp::reserve(), move |c| {
        c.smtp_url = Some(url);
        c.smtp_ca_file = ca_file;
    })
    .await
}

/// Waits until the outbox has sent, or failed to send, the message to `masked` (e.g. `f***`).
async fn until_tried(app: &TestApp, masked: &str) {
    let sql = format!(
        "SELECT COUNT(*) FROM outbox WHERE recipient_masked LIKE '{masked}@%' AND (status = 'sent' OR last_error IS NOT NULL)"
    );
    until(&format!("the message to {masked} is tried"), || async {
        app.count(&sql).await > 0
    })
    .await;
}

crate::backend_tests! {
    async fn codes_reach_a_starttls_server_with_auth_whose_certificate_a_private_ca_signed() {
        // The README's production path: smtp://user@host:587?tls=required, the password from a
        // file, and the relay's certificate from the operator's own CA.
        let ca = TestCa::new();
        let smtp = TestSmtp::start_with_tls(&ca, "latchkey", "app password");
        let (port, password_file, ca_file) =
            (smtp.port, ca.write("smtp-password", "app password\n"), ca.ca_file());
        let app = spawn_app_on(smtp.clone(), move |c| {
            c.smtp_url = Some(format!("smtp://latchkey@127.0.0.1:{port}?tls=required"));
            c.smtp_password_file = Some(password_file);
            c.smtp_ca_file = Some(ca_file);
        })
        .await;

        let response = app.sign_up("tls@example.com").await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(app.page("/user").await.status, StatusCode::OK);
        // mailin offers AUTH only over TLS and takes no mail before it.
        assert_eq!(smtp.authenticated(), vec!["latchkey".to_string()]);
    }

    async fn codes_reach_an_smtps_server_over_tls_from_the_first_byte() {
        let ca = TestCa::new();
        let server = ScriptedSmtp::start(
            &ca,
            with_credentials(Script { implicit_tls: true, pipelining: true, ..Script::default() }),
        )
        .await;
        let app = app_sending_to(&server, "smtps://latchkey:app%20password@127.0.0.1:{port}", &ca, true).await;

        app.start_flow("/sign-up", "smtps@example.com").await;
        server.wait_for_messages(1).await;
        let received = server.received();
        assert!(received.commands.iter().all(|(_, tls)| *tls), "{received:?}");
        assert_eq!(received.auth, vec![("latchkey:app password".to_string(), true)]);
        assert!(received.messages[0].contains("To: smtps@example.com"));
    }

    async fn a_server_that_does_not_offer_starttls_gets_no_credentials_and_no_message() {
        // A man in the middle deleted STARTTLS from the EHLO answer and offers AUTH in clear.
        let ca = TestCa::new();
        let server = ScriptedSmtp::start(
            &ca,
            with_credentials(Script { offer_auth_in_clear: true, pipelining: true, ..Script::default() }),
        )
        .await;
        let app = app_sending_to(&server, "smtp://latchkey:app%20password@127.0.0.1:{port}?tls=required", &ca, true).await;

        app.start_flow("/sign-up", "downgrade@example.com").await;
        wait_for_a_try(&app).await;
        {
            let received = server.received();
            assert_eq!(received.verbs(), vec!["EHLO"], "{received:?}");
            assert!(received.auth.is_empty() && received.messages.is_empty());
        }
        assert!(last_error(&app).await.contains("STARTTLS"), "{}", last_error(&app).await);
        assert_eq!(
            app.count("SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND payload IS NOT NULL").await,
            1,
            "the message stays queued for a retry"
        );
    }

    async fn without_credentials_too_a_server_that_does_not_offer_starttls_gets_no_message() {
        let ca = TestCa::new();
        let server =
            ScriptedSmtp::start(&ca, Script { pipelining: true, ..Script::default() }).await;
        let app = app_sending_to(&server, "smtp://127.0.0.1:{port}?tls=required", &ca, true).await;

        app.start_flow("/sign-up", "downgrade@example.com").await;
        wait_for_a_try(&app).await;
        let received = server.received();
        assert_eq!(received.verbs(), vec!["EHLO"], "{received:?}");
        assert!(received.messages.is_empty());
    }

    async fn bytes_injected_after_the_starttls_reply_are_refused_and_nothing_is_sent() {
        // "220 ready to start TLS" and "250 injected before TLS" arrive in one write: read after
        // the upgrade, the injected line would pass as the first answer over TLS.
        let ca = TestCa::new();
        let server = ScriptedSmtp::start(
            &ca,
            with_credentials(Script {
                offer_starttls: true,
                inject_after_starttls: true,
                pipelining: true,
                ..Script::default()
            }),
        )
        .await;
        let app = app_sending_to(&server, "smtp://latchkey:app%20password@127.0.0.1:{port}?tls=required", &ca, true).await;

        app.start_flow("/sign-up", "injected@example.com").await;
        wait_for_a_try(&app).await;
        {
            let received = server.received();
            assert_eq!(received.verbs(), vec!["EHLO", "STARTTLS"], "{received:?}");
            assert!(received.auth.is_empty() && received.messages.is_empty());
        }
        assert!(last_error(&app).await.contains("injection"), "{}", last_error(&app).await);
    }

    async fn a_certificate_from_a_ca_not_trusted_gets_no_credentials_and_no_message() {
        // Without `smtp_ca_file` only the public roots are trusted, and they did not sign it.
        let ca = TestCa::new();
        let server = ScriptedSmtp::start(
            &ca,
            with_credentials(Script { offer_starttls: true, pipelining: true, ..Script::default() }),
        )
        .await;
        let app = app_sending_to(&server, "smtp://latchkey:app%20password@127.0.0.1:{port}?tls=required", &ca, false).await;

        app.start_flow("/sign-up", "untrusted@example.com").await;
        wait_for_a_try(&app).await;
        {
            let received = server.received();
            assert_eq!(received.verbs(), vec!["EHLO", "STARTTLS"], "{received:?}");
            assert!(received.auth.is_empty() && received.messages.is_empty());
        }
        assert!(last_error(&app).await.contains("TLS"), "{}", last_error(&app).await);
    }

    async fn a_message_whose_final_reply_was_lost_is_not_resent_at_once_but_after_the_backoff() {
        // The second message goes over the pooled connection of the first; the server reads it
        // to its final "." and closes without answering. It may have been delivered: a resend
        // on a new connection within the same try would be a duplicate in the same instant.
        let ca = TestCa::new();
        let server = ScriptedSmtp::start(
            &ca,
            Script { pipelining: true, lose_final_reply_of: Some(2), ..Script::default() },
        )
        .await;
        let app = app_sending_to(&server, "smtp://127.0.0.1:{port}", &ca, false).await;

        app.start_flow("/sign-up", "first@example.com").await;
        until_tried(&app, "f***").await;
        app.start_flow("/sign-up", "second@example.com").await;
        until_tried(&app, "s***").await;
        {
            let received = server.received();
            assert_eq!((received.messages.len(), received.connections), (2, 1), "{received:?}");
        }
        let error = last_error(&app).await;
        assert!(error.contains("may have been delivered"), "{error}");
        assert_eq!(
            app.count("SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND attempts = 1 AND recipient_masked LIKE 's***@%'").await,
            1,
            "queued for a retry after the backoff"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(server.received().messages.len(), 2, "no resend before the retry is due");

        // The retry delivers it again: a duplicate, which is the lesser harm than a lost code.
        until("the retry goes out", || async {
            app.make_retries_due().await;
            server.received().messages.len() >= 3
        })
        .await;
        // Its earlier failure already marks it tried: wait for the retry's outcome itself.
        until("the retry is recorded as sent", || async {
            app.count("SELECT COUNT(*) FROM outbox WHERE status = 'sent' AND recipient_masked LIKE 's***@%'").await > 0
        })
        .await;
        assert_eq!(
            app.count("SELECT COUNT(*) FROM outbox WHERE status = 'sent'").await,
            2
        );
        let received = server.received();
        assert!(received.messages[1].contains("To: second@example.com"));
        assert!(received.messages[2].contains("To: second@example.com"));
    }

    async fn a_pooled_connection_the_server_closed_while_idle_costs_no_message() {
        // After each message the server says "421 closing" and closes; the next message must
        // not spend a try on the dead connection.
        let ca = TestCa::new();
        let server =
            ScriptedSmtp::start(&ca, Script { leave_after_each_message: true, ..Script::default() }).await;
        let app = app_sending_to(&server, "smtp://127.0.0.1:{port}", &ca, false).await;

        app.start_flow("/sign-up", "first@example.com").await;
        until_tried(&app, "f***").await;
        until("the server closed the first connection", || async {
            server.received().ended >= 1
        })
        .await;
        app.start_flow("/sign-up", "second@example.com").await;
        server.wait_for_messages(2).await;
        until_tried(&app, "s***").await;
        assert_eq!(
            app.count("SELECT COUNT(*) FROM outbox WHERE status = 'sent' AND attempts = 1 AND last_error IS NULL").await,
            2,
            "both delivered at the first try"
        );
        assert_eq!(server.received().connections, 2);
    }
}
