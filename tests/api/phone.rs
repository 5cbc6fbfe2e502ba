//! Phone numbers and SMS codes, end to end: the pages, the outbox and a local HTTP server that
//! speaks the Twilio Messages API (or receives the signed webhook).

use std::time::Duration;

use latchkey::config::RawConfig;
use reqwest::StatusCode;

use crate::helpers::{browser, eventually, location, spawn_app_with, until, TestApp};
use crate::sms_server::TestSms;

const NUMBER: &str = "+12015550123";

/// SMS through the Twilio-speaking receiver; US, Canada and UK numbers allowed.
pub(crate) fn with_twilio(sms: &TestSms, raw: &mut RawConfig) {
    raw.phone.allowed_countries = Some(vec!["US".into(), "CA".into(), "+44".into()]);
    raw.phone.default_region = Some("US".into());
    raw.sms.provider = "twilio".into();
    raw.sms.twilio.base_url = sms.twilio_base_url();
    raw.sms.twilio.account_sid = Some(sms.account_sid());
    raw.sms.twilio.auth_token = Some(sms.auth_token());
    raw.sms.twilio.from = Some("+15005550006".into());
}

pub(crate) fn phone_only(raw: &mut RawConfig) {
    raw.identifiers.email.enabled = false;
    raw.identifiers.email.required = false;
    raw.identifiers.email.used_for_sign_in = false;
    raw.identifiers.phone.required = true;
}

async fn phone_app(sms: &TestSms, customise: impl FnOnce(&mut RawConfig)) -> TestApp {
    let sms = sms.clone();
    spawn_app_with(move |raw| {
        with_twilio(&sms, raw);
        customise(raw);
    })
    .await
}

/// Signs up `number` (phone-only instance) with a throw-away browser.
async fn create_phone_account(app: &TestApp, sms: &TestSms, number: &str, e164: &str) {
    let other = browser();
    let before = sms.messages_to(e164).len();
    let resp = app
        .submit_fields_with(&other, "/sign-up", &[("phone_number", number)])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let verify = location(&resp);
    let code = sms.wait_for(e164, before + 1).await.code();
    let resp = app.enter_code_with(&other, &verify, &code).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

/// Test mode on a staging instance: both opt-ins, and test addresses only at the operator's own
/// domain.
fn staging_test_mode(raw: &mut RawConfig) {
    raw.test_mode = Some(true);
    raw.test_mode_outside_dev_mode = true;
    raw.test_email_domains = vec!["example.com".into()];
}

crate::backend_tests! {
    async fn a_person_signs_up_with_a_phone_number_and_an_sms_code() {
        let sms = TestSms::start();
        let app = phone_app(&sms, phone_only).await;

        let page = app.page("/sign-up").await;
        assert!(page.html.contains(r#"name="phone_number" type="tel" inputmode="tel" autocomplete="tel""#), "{}", page.html);
        assert!(page.input_value("email_address").is_none());
        let verify = app
            .start_flow_with_fields("/sign-up", &[("phone_number", "+1 (201) 555-0123")])
            .await;
        let code_page = app.page(&verify).await;
        assert!(code_page.contains("Check your phone"), "{}", code_page.html);
        assert!(code_page.contains("+1 201-555-0123"), "shown in international format");

        let msg = sms.wait_for(NUMBER, 1).await;
        assert_eq!(msg.to, NUMBER);
        assert_eq!(msg.from.as_deref(), Some("+15005550006"));
        let first_line = msg.body.lines().next().unwrap();
        assert_eq!(first_line, format!("{} is your Acme verification code.", msg.code()));
        let host = app.address.trim_start_matches("http://").split(':').next().unwrap().to_string();
        assert_eq!(msg.body.lines().last().unwrap(), format!("@{host} #{}", msg.code()), "origin-bound last line");
        assert!(msg.body.chars().count() <= 160);

        let resp = app.enter_code(&verify, &msg.code()).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), "/user");
        let profile = app.page("/user").await;
        assert!(profile.contains("phone numbers") && profile.contains("+1 201-555-0123"), "{}", profile.html);
        assert_eq!(
            app.count("SELECT COUNT(*) FROM identifiers WHERE kind = 'phone' AND canonical = '+12015550123' AND verified_at IS NOT NULL").await,
            1
        );
        assert!(app.smtp.all().is_empty(), "no mail on a phone-only instance");
    }

    async fn the_same_number_typed_in_any_format_is_one_account() {
        let sms = TestSms::start();
        let app = phone_app(&sms, phone_only).await;
        create_phone_account(&app, &sms, "+1 201 555 0123", NUMBER).await;
        for (i, typed) in ["(201) 555-0123", "201.555.0123", "+12015550123", "  +1-201-555-0123 "].iter().enumerate() {
            let client = browser();
            let resp = app.submit_fields_with(&client, "/sign-in", &[("phone_number", typed)]).await;
            assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{typed}");
            let verify = location(&resp);
            let code = sms.wait_for(NUMBER, i + 2).await.code();
            assert_eq!(app.enter_code_with(&client, &verify, &code).await.status(), StatusCode::SEE_OTHER, "{typed}");
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
        // Taken at sign-up in any format, too.
        let resp = app.submit_fields("/sign-up", &[("phone_number", "201 555 0123")]).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = TestApp::into_page(resp).await;
        assert!(page.contains("An account with this phone number already exists."), "{}", page.html);
        assert_eq!(page.input_value("phone_number").as_deref(), Some("201 555 0123"));
    }

    async fn sign_up_with_both_identifiers_required_verifies_each_before_the_account_exists() {
        let sms = TestSms::start();
        let app = phone_app(&sms, |raw| raw.identifiers.phone.required = true).await;
        let page = app.page("/sign-up").await;
        assert!(page.input_value("email_address").is_some() && page.input_value("phone_number").is_some());
        let resp = app.submit_fields("/sign-up", &[("email_address", "both@example.com")]).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "the phone number is required");
        assert!(TestApp::into_page(resp).await.contains("Enter your phone number."));

        let verify = app
            .start_flow_with_fields("/sign-up", &[("email_address", "both@example.com"), ("phone_number", "201-555-0123")])
            .await;
        let page = app.page(&verify).await;
        assert!(page.contains("Step 1 of 2") && page.contains("Check your email"), "{}", page.html);
        sms.assert_count_stays(NUMBER, 0).await;
        let mail = app.smtp.wait_for("both@example.com", 1).await;
        let email_form = page.form(&verify).set("code", &mail.code());
        let resp = app.submit(&email_form).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), format!("{verify}?verified=1"));
        // A double submit of the email step moves on without using a try of the phone code.
        let again = app.submit(&email_form).await;
        assert_eq!(again.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&again), verify);
        assert_eq!(app.count("SELECT MAX(attempts) FROM verifications WHERE channel = 'sms'").await, 0);
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0, "no account before every identifier is verified");

        let page = app.page(&location(&resp)).await;
        assert!(page.contains("Step 2 of 2") && page.contains("Check your phone") && page.contains("+1 201-555-0123"), "{}", page.html);
        let text = sms.wait_for(NUMBER, 1).await;
        let resp = app.enter_code(&verify, &text.code()).await;
        assert_eq!(location(&resp), "/user");
        let profile = app.page("/user").await;
        assert!(profile.contains("both@example.com") && profile.contains("+1 201-555-0123"), "{}", profile.html);
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM identifiers WHERE is_primary = 1 AND verified_at IS NOT NULL").await, 2);
    }

    async fn an_optional_phone_number_can_be_added_and_verified_at_sign_up() {
        let sms = TestSms::start();
        let app = phone_app(&sms, |_| {}).await;
        let page = app.page("/sign-up").await;
        assert!(page.contains("Phone number (optional)"), "{}", page.html);
        // Left out: an email-only account.
        assert_eq!(app.sign_up("solo@example.com").await.status(), StatusCode::SEE_OTHER);
        assert_eq!(app.count("SELECT COUNT(*) FROM identifiers WHERE kind = 'phone'").await, 0);
        // Given: verified too.
        let other = browser();
        let resp = app
            .submit_fields_with(&other, "/sign-up", &[("email_address", "duo@example.com"), ("phone_number", "+1 201 555 0144")])
            .await;
        let verify = location(&resp);
        let code = app.smtp.wait_for("duo@example.com", 1).await.code();
        app.enter_code_with(&other, &verify, &code).await;
        let code = sms.wait_for("+12015550144", 1).await.code();
        assert_eq!(location(&app.enter_code_with(&other, &verify, &code).await), "/user");
        assert_eq!(app.count("SELECT COUNT(*) FROM identifiers WHERE kind = 'phone' AND canonical = '+12015550144'").await, 1);
    }

    async fn one_field_takes_an_email_address_or_a_phone_number_at_sign_in() {
        let sms = TestSms::start();
        let app = phone_app(&sms, |_| {}).await;
        let page = app.page("/sign-in").await;
        assert!(page.contains("Email address or phone number"));
        assert!(page.html.contains(r#"name="identifier" type="text""#), "{}", page.html);
        assert!(page.html.contains(r#"autocomplete="username""#));
        // An account with both, made at sign-up.
        let other = browser();
        let resp = app
            .submit_fields_with(&other, "/sign-up", &[("email_address", "kim@example.com"), ("phone_number", "2015550123")])
            .await;
        let verify = location(&resp);
        let code = app.smtp.wait_for("kim@example.com", 1).await.code();
        app.enter_code_with(&other, &verify, &code).await;
        let code = sms.wait_for(NUMBER, 1).await.code();
        app.enter_code_with(&other, &verify, &code).await;

        let verify = app.start_flow_with_fields("/sign-in", &[("identifier", "(201) 555-0123")]).await;
        let code = sms.wait_for(NUMBER, 2).await.code();
        assert_eq!(location(&app.enter_code(&verify, &code).await), "/user");
        app.page("/user").await;
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);

        let client = browser();
        let resp = app.submit_fields_with(&client, "/sign-in", &[("identifier", "KIM@example.com")]).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let resp = app.submit_fields_with(&client, "/sign-in", &[("identifier", "hello")]).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = TestApp::into_page(resp).await;
        assert!(page.contains("Enter an email address or a phone number."), "{}", page.html);
        assert_eq!(page.input_value("identifier").as_deref(), Some("hello"));
    }

    async fn a_person_with_email_and_phone_chooses_where_the_sign_in_code_goes() {
        let sms = TestSms::start();
        let app = phone_app(&sms, |raw| raw.identifiers.phone.required = true).await;
        let other = browser();
        let resp = app
            .submit_fields_with(&other, "/sign-up", &[("email_address", "jo@example.com"), ("phone_number", "+1 201 555 0123")])
            .await;
        let verify = location(&resp);
        let code = app.smtp.wait_for("jo@example.com", 1).await.code();
        app.enter_code_with(&other, &verify, &code).await;
        let code = sms.wait_for(NUMBER, 1).await.code();
        app.enter_code_with(&other, &verify, &code).await;

        let verify = app.start_flow_with_fields("/sign-in", &[("identifier", "jo@example.com")]).await;
        let email_code = app.smtp.wait_for("jo@example.com", 2).await.code();
        let page = app.page(&verify).await;
        assert!(page.contains("Use another method"), "{}", page.html);
        assert!(page.contains("Send a code to +1 ••• ••• •123"), "{}", page.html);
        let hidden = |html: &str| !html.contains("555-0123") && !html.contains("5550123");
        assert!(hidden(&page.html), "only the masked number is shown");
        let action = page.form_action("/factor/");
        // Switching waits for the resend cooldown too (no message per request).
        let resp = app.submit(&page.form(&action)).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(resp.headers().contains_key("retry-after"));
        app.clock.advance(Duration::from_secs(30));
        let resp = app.submit(&page.form(&action)).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let page = app.page(&location(&resp)).await;
        assert!(page.contains("Check your phone") && page.contains("+1 ••• ••• •123"), "{}", page.html);
        assert!(hidden(&page.html), "the number stays masked after the switch: {}", page.html);
        assert!(page.contains("Send a code to j•••@example.com"), "{}", page.html);
        let edit = app.page(&page.link("Use another phone number")).await;
        assert!(hidden(&edit.html), "Edit keeps what was typed, not the switched-to number");
        assert_eq!(edit.input_value("identifier").as_deref(), Some("jo@example.com"));
        let text_code = sms.wait_for(NUMBER, 2).await.code();
        if text_code != email_code {
            let resp = app.enter_code(&verify, &email_code).await;
            assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "the emailed code died with the switch");
        }
        assert_eq!(location(&app.enter_code(&verify, &text_code).await), "/user");
    }

    async fn a_country_taken_off_the_list_gets_no_more_codes() {
        let sms = TestSms::start();
        let app = phone_app(&sms, |raw| raw.identifiers.phone.required = true).await;
        let other = browser();
        let resp = app
            .submit_fields_with(&other, "/sign-up", &[("email_address", "uk@example.com"), ("phone_number", "+44 7400 123456")])
            .await;
        let verify = location(&resp);
        let code = app.smtp.wait_for("uk@example.com", 1).await.code();
        app.enter_code_with(&other, &verify, &code).await;
        let code = sms.wait_for("+447400123456", 1).await.code();
        assert_eq!(location(&app.enter_code_with(&other, &verify, &code).await), "/user");

        let app = app
            .restart_with(|raw| raw.phone.allowed_countries = Some(vec!["US".into()]))
            .await;
        let resp = app.submit_fields("/sign-in", &[("identifier", "+44 7400 123456")]).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(TestApp::into_page(resp).await.contains("Phone numbers from this country can't be used here."));
        let verify = app.start_flow_with_fields("/sign-in", &[("identifier", "uk@example.com")]).await;
        let page = app.page(&verify).await;
        assert!(!page.contains("Use another method"), "the UK number is not offered: {}", page.html);
        app.clock.advance(Duration::from_secs(30));
        assert_eq!(sms.request_count(), 1);
    }

    async fn a_number_of_a_country_not_allowed_gets_a_message_and_no_sms() {
        let sms = TestSms::start();
        let app = phone_app(&sms, |raw| {
            phone_only(raw);
            raw.phone.allowed_countries = Some(vec!["US".into()]);
        })
        .await;
        for typed in ["+44 7400 123456", "+33 6 12 34 56 78"] {
            let resp = app.submit_fields("/sign-up", &[("phone_number", typed)]).await;
            assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{typed}");
            let page = TestApp::into_page(resp).await;
            assert!(page.contains("Phone numbers from this country can't be used here."), "{}", page.html);
            assert_eq!(page.input_value("phone_number").as_deref(), Some(typed));
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sms.request_count(), 0);
    }

    async fn bad_phone_input_gets_a_specific_inline_message_keeps_the_value_and_sends_nothing() {
        let sms = TestSms::start();
        let app = phone_app(&sms, |_| {}).await;
        app.create_account("taken@example.com").await;
        let cases: Vec<(&str, &str, &str, &str)> = vec![
            ("/sign-up", "phone_number", "201-555-01ab", "can only contain digits"),
            ("/sign-up", "phone_number", "+1 201 555 0123 4567 8901 23", "too many digits"),
            ("/sign-up", "phone_number", "+1 123 456 7890", "not a valid phone number"),
            ("/sign-up", "phone_number", "+44 20 7946 0000", "mobile number"),
            ("/sign-up", "phone_number", "jane@example.com", "looks like an email address"),
            ("/sign-up", "email_address", "+1 201 555 0123", "looks like a phone number"),
            ("/sign-up", "email_address", "taken@example.com", "already exists"),
            ("/sign-in", "identifier", "+1 123 456 7890", "not a valid phone number"),
            ("/sign-in", "identifier", "+1 201 555 0234", "couldn't find an account"),
        ];
        for (start, field, typed, message) in cases {
            let mut fields = vec![(field, typed)];
            if start == "/sign-up" && field == "phone_number" {
                fields.push(("email_address", "new@example.com"));
            }
            let resp = app.submit_fields(start, &fields).await;
            assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{start} {field} {typed:?}");
            let page = TestApp::into_page(resp).await;
            assert!(page.contains(message), "{typed:?}: {}", page.html);
            assert_eq!(page.input_value(field).as_deref(), Some(typed), "{typed:?} kept");
            assert!(page.html.contains(r#"aria-invalid="true""#), "{typed:?}");
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 1, "only the sign-up of taken@example.com");
        assert_eq!(app.smtp.messages_to("new@example.com").len(), 0);
        assert_eq!(sms.request_count(), 0);
    }

    async fn an_sms_provider_outage_is_retried_and_the_code_delivered_once() {
        let sms = TestSms::start();
        sms.set_failure(Some(503));
        let app = phone_app(&sms, phone_only).await;
        let verify = app.start_flow_with_fields("/sign-up", &[("phone_number", NUMBER)]).await;
        until("retried while the provider was down", || async {
            if sms.request_count() >= 2 {
                return true;
            }
            app.make_retries_due().await;
            false
        })
        .await;
        assert!(sms.messages().is_empty());
        sms.set_failure(None);
        let msg = sms.wait_for_retried(&app, NUMBER, 1).await;
        app.clock.advance(Duration::from_secs(5));
        sms.assert_count_stays(NUMBER, 1).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE status = 'sent'").await, 1);
        assert_eq!(app.enter_code(&verify, &msg.code()).await.status(), StatusCode::SEE_OTHER);
    }

    async fn a_provider_refusal_marks_the_message_failed_without_retrying() {
        let sms = TestSms::start();
        sms.set_failure(Some(400));
        let app = phone_app(&sms, phone_only).await;
        app.start_flow_with_fields("/sign-up", &[("phone_number", NUMBER)]).await;
        until("the message is marked failed (a 4xx is permanent)", || async {
            app.count("SELECT COUNT(*) FROM outbox WHERE status = 'failed'").await == 1
        })
        .await;
        for _ in 0..30 {
            app.clock.advance(Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sms.request_count(), 1, "no retry storm");
        let db = app.db().await;
        let error: String = sqlx::query_scalar("SELECT last_error FROM outbox").fetch_one(&db).await.unwrap();
        assert!(error.contains("21211"), "the provider's reason is kept: {error}");
        assert!(!error.contains(&sms.auth_token()));
    }

    async fn codes_reach_a_signed_webhook_receiver() {
        let secret = "webhook-secret-for-tests-0123456789abcdef";
        let sms = TestSms::start_webhook(secret);
        let app = spawn_app_with({
            let url = sms.webhook_url();
            move |raw| {
                phone_only(raw);
                raw.phone.allowed_countries = Some(vec!["US".into()]);
                raw.sms.provider = "webhook".into();
                raw.sms.webhook.url = Some(url);
                raw.sms.webhook.secret = Some(secret.into());
            }
        })
        .await;
        let verify = app.start_flow_with_fields("/sign-up", &[("phone_number", "+1 201 555 0123")]).await;
        let msg = sms.wait_for(NUMBER, 1).await;
        let json = msg.json.clone().expect("a JSON body");
        assert_eq!(json["purpose"], "sign_up");
        assert_eq!(json["to"], NUMBER);
        assert_eq!(json["code"].as_str(), Some(msg.code().as_str()));
        assert!(msg.signature.as_deref().is_some_and(|s| s.starts_with("t=")));
        assert_eq!(sms.rejected_count(), 0, "every request carried a valid signature");
        assert_eq!(location(&app.enter_code(&verify, &msg.code()).await), "/user");
    }

    async fn test_identifiers_get_no_message_and_accept_the_fixed_code_in_test_mode() {
        let sms = TestSms::start();
        let app = phone_app(&sms, staging_test_mode).await;
        let health = app.page("/healthz").await;
        assert!(health.html.contains("TEST MODE IS ON"), "{}", health.html);

        let first = browser();
        let resp = app
            .submit_fields_with(&first, "/sign-up", &[("email_address", "jane+latchkey_test@example.com")])
            .await;
        let verify = location(&resp);
        assert_eq!(location(&app.enter_code_with(&first, &verify, "424242").await), "/user");

        let client = browser();
        let resp = app
            .submit_fields_with(&client, "/sign-up", &[("email_address", "kai+latchkey_test@example.com"), ("phone_number", "+1 201 555 0100")])
            .await;
        let verify = location(&resp);
        app.enter_code_with(&client, &verify, "424242").await;
        assert_eq!(location(&app.enter_code_with(&client, &verify, "424242").await), "/user");

        // Ordinary identifiers behave normally: the fixed code is just a wrong code.
        let verify = app.start_flow_with_fields("/sign-up", &[("email_address", "real@example.com")]).await;
        let mail = app.smtp.wait_for("real@example.com", 1).await;
        if mail.code() != "424242" {
            assert_eq!(app.enter_code(&verify, "424242").await.status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
        assert_eq!(app.smtp.all().len(), 1, "no mail to test addresses");
        assert_eq!(sms.request_count(), 0, "no SMS to test numbers");
        // +1 201 555 0123 is in the test range (0100…0199); 0234 is an ordinary number.
        let verify = app.start_flow_with_fields("/sign-up", &[("email_address", "x+latchkey_test@example.com"), ("phone_number", "+1 201 555 0234")]).await;
        let resp = app.enter_code(&verify, "424242").await;
        let status = resp.status();
        assert_eq!(status, StatusCode::SEE_OTHER, "{}", resp.text().await.unwrap());
        let text = sms.wait_for("+12015550234", 1).await;
        if text.code() != "424242" {
            assert_eq!(app.enter_code(&verify, "424242").await.status(), StatusCode::UNPROCESSABLE_ENTITY, "a real number needs its real code");
        }
    }

    async fn outside_dev_mode_test_addresses_work_only_at_the_configured_test_domains() {
        let sms = TestSms::start();
        let app = phone_app(&sms, staging_test_mode).await;
        // Someone else's domain: an ordinary address, whatever its tag.
        let verify = app.start_flow("/sign-up", "ceo+latchkey_test@bigcorp.example").await;
        let mail = app.smtp.wait_for("ceo+latchkey_test@bigcorp.example", 1).await;
        if mail.code() != "424242" {
            let resp = app.enter_code(&verify, "424242").await;
            assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "the fixed code opens nothing at another domain");
        }
        assert_eq!(location(&app.enter_code(&verify, &mail.code()).await), "/user");
        // The configured domain: the fixed code, no mail.
        let client = browser();
        let resp = app.submit_fields_with(&client, "/sign-up", &[("email_address", "qa+latchkey_test@Example.com")]).await;
        assert_eq!(location(&app.enter_code_with(&client, &location(&resp), "424242").await), "/user");
        assert_eq!(app.smtp.all().len(), 1, "no mail to the test address");
    }

    async fn without_test_mode_the_fixed_code_opens_nothing() {
        let sms = TestSms::start();
        let app = phone_app(&sms, |raw| raw.test_mode = Some(false)).await;
        assert_eq!(app.page("/healthz").await.html, "ok");
        let verify = app.start_flow("/sign-up", "jane+latchkey_test@example.com").await;
        let mail = app.smtp.wait_for("jane+latchkey_test@example.com", 1).await;
        if mail.code() != "424242" {
            assert_eq!(app.enter_code(&verify, "424242").await.status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
    }

    async fn a_dev_instance_shows_sms_codes_on_the_outbox_page() {
        let app = spawn_app_with(|raw| {
            raw.dev_mode = Some(true);
            raw.test_mode = Some(false);
            phone_only(raw);
        })
        .await;
        let verify = app.start_flow_with_fields("/sign-up", &[("phone_number", "+44 7400 123456")]).await;
        let code = eventually("the SMS shows on /dev/outbox", || async {
            let outbox = app.page("/dev/outbox").await;
            if !outbox.html.contains("sent") {
                return None;
            }
            let text = outbox.text();
            assert!(text.contains("+447400123456") && text.contains("is your Acme verification code."), "{text}");
            let after = text.split("SMS: ").nth(1).expect("the SMS text is listed");
            Some(after.chars().take(6).collect::<String>())
        })
        .await;
        assert_eq!(location(&app.enter_code(&verify, &code).await), "/user");
    }

    async fn the_settings_page_exists_only_in_dev_mode() {
        let app = spawn_app_with(|_| {}).await;
        assert_eq!(app.page("/dev/settings").await.status, StatusCode::NOT_FOUND);
        let app = spawn_app_with(|raw| raw.dev_mode = Some(true)).await;
        let page = app.page("/dev/settings").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.contains("identifiers.phone.used_for_sign_in") && page.contains("strategies.phone_code"), "{}", page.html);
        assert!(page.contains("any country"), "{}", page.html);
    }
}
