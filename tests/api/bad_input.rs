use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{spawn_app, TestApp};

crate::backend_tests! {
    async fn bad_email_addresses_get_an_inline_message_keep_the_value_and_store_nothing() {
        let app = spawn_app().await;
        let long = format!("{}@example.com", "a".repeat(243));
        let cases: Vec<(&str, &str)> = vec![
            ("", "Enter your email address."),
            ("   ", "Enter your email address."),
            (
                "not-an-address",
                "Enter an email address like name@example.com.",
            ),
            ("jane@", "Enter an email address like name@example.com."),
            (&long, "at most 254 characters"),
            (
                "a@x.test\r\nBcc: e@evil.test",
                "characters that are not allowed",
            ),
            ("ab\u{200B}c@example.com", "characters that are not allowed"),
            ("ab\u{202E}c@example.com", "characters that are not allowed"),
        ];
        for (input, message) in cases {
            for start in ["/sign-up", "/sign-in"] {
                let resp = app.submit_identifier(start, input).await;
                assert_eq!(
                    resp.status(),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "{start} {input:?}"
                );
                let page = TestApp::into_page(resp).await;
                assert!(page.contains(message), "{input:?}: {}", page.html);
                assert!(page.html.contains(r#"role="alert""#));
                // The typed value comes back (HTML normalises CR/LF in attribute values).
                let kept = page.input_value("email_address").unwrap();
                assert_eq!(
                    kept.replace(['\r', '\n'], ""),
                    input.replace(['\r', '\n'], ""),
                    "{input:?}"
                );
            }
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0);
        assert!(app.smtp.all().is_empty());
    }

    async fn an_unknown_or_malformed_flow_id_gets_a_404_page_with_a_way_to_start_over() {
        let app = spawn_app().await;
        for path in [
            "/sign-in/verify/flw_aaaaaaaaaaaaaaaaaaaaaaaaaa",
            "/sign-in/verify/nonsense",
            "/sign-up/verify/flw_'%20OR%201=1",
        ] {
            let page = app.page(path).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
            assert!(page.contains("This link is not valid"), "{}", page.html);
            assert!(page.links().iter().any(|(l, _)| l == "Start again"));
        }
    }

    async fn a_flow_expires_after_an_hour_without_activity() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "idle@example.com").await;
        app.smtp.wait_for("idle@example.com", 1).await;
        app.clock.advance(Duration::from_secs(3600));
        let page = app.page(&verify).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
        assert!(page.contains("This attempt has expired"), "{}", page.html);
    }

    async fn activity_keeps_a_flow_alive() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "busy@example.com").await;
        app.smtp.wait_for("busy@example.com", 1).await;
        app.clock.advance(Duration::from_secs(3000));
        app.resend(&verify).await;
        let code = app.smtp.wait_for("busy@example.com", 2).await.code();
        app.clock.advance(Duration::from_secs(3000));
        assert_eq!(
            app.enter_code(&verify, &code).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "code expired"
        );
        assert_eq!(
            app.page(&verify).await.status,
            StatusCode::OK,
            "flow still alive"
        );
    }

    async fn an_oversized_body_is_refused_with_413() {
        let app = spawn_app().await;
        let form = app
            .page("/sign-up")
            .await
            .form("/sign-up")
            .set("email_address", &"a".repeat(100_000));
        let resp = app.submit(&form).await;
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let page = TestApp::into_page(resp).await;
        assert!(page.contains("too much data"), "{}", page.html);
    }

    async fn a_non_form_body_is_refused_with_415() {
        let app = spawn_app().await;
        app.page("/sign-up").await;
        let resp = app
            .client
            .post(app.url("/sign-up"))
            .header("Origin", &app.address)
            .header("Content-Type", "application/json")
            .body(r#"{"email_address":"j@example.com"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    async fn a_long_multibyte_prefill_is_cut_safely() {
        let app = spawn_app().await;
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.append_pair("email_address", &format!("{}é@example.com", "a".repeat(319)));
        let page = app.page(&format!("/sign-in?{}", s.finish())).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.input_value("email_address").unwrap().chars().count(), 320);
    }
}
