//! Rate limits (issue 7): per identifier, per client IP (two separate buckets), the SMS budget,
//! trusted proxies. Each test turns on the limit it is about (the suite's default is off, since
//! most tests start many flows from 127.0.0.1 at one instant of the manual clock).

use std::time::Duration;

use latchkey::config::{LimitsConfig, RawConfig};
use reqwest::StatusCode;

use crate::helpers::{browser, spawn_app_with, TestApp};
use crate::sms_server::TestSms;

fn only(raw: &mut RawConfig, set: impl FnOnce(&mut LimitsConfig)) {
    raw.limits = LimitsConfig::off();
    set(&mut raw.limits);
}

/// Starts a sign-in for `email` in a fresh browser, optionally through a proxy header.
async fn start(app: &TestApp, email: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let client = browser();
    let page = app.page_with(&client, "/sign-in").await;
    let form = page.form("/sign-in").set("email_address", email);
    match forwarded_for {
        Some(ip) => {
            app.submit_with_headers(&client, &form, &[("X-Forwarded-For", ip)])
                .await
        }
        None => app.submit_with(&client, &form).await,
    }
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn assert_generic_429(resp: reqwest::Response) {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&resp) >= 1);
    let page = TestApp::into_page(resp).await;
    assert!(
        page.contains("Too many requests. For your security, please wait"),
        "{}",
        page.html
    );
    for hint in ["ip", "IP", "address limit", "bucket", "sendgap", "per day"] {
        assert!(
            !page.text().contains(hint),
            "the page names no bucket ({hint})"
        );
    }
}

crate::backend_tests! {
    async fn sends_to_one_address_are_at_least_30_seconds_apart_across_flows() {
        let app = spawn_app_with(|raw| only(raw, |l| l.send_interval_secs = 30)).await;
        app.create_account("gap@example.com").await;
        app.clock.advance(Duration::from_secs(30));
        assert_eq!(start(&app, "gap@example.com", None).await.status(), StatusCode::SEE_OTHER);
        let again = start(&app, "gap@example.com", None).await;
        assert_eq!(retry_after(&again), 30);
        assert_generic_429(again).await;
        app.clock.advance(Duration::from_secs(29));
        assert_eq!(start(&app, "gap@example.com", None).await.status(), StatusCode::TOO_MANY_REQUESTS);
        app.clock.advance(Duration::from_secs(1));
        assert_eq!(start(&app, "gap@example.com", None).await.status(), StatusCode::SEE_OTHER);
        // Another address is another bucket.
        app.create_account("other@example.com").await;
        assert_eq!(app.smtp.messages_to("gap@example.com").len(), 3, "refused starts send nothing");
    }

    async fn an_address_gets_at_most_5_codes_per_10_minutes_and_20_per_day_whatever_the_flow() {
        let app = spawn_app_with(|raw| only(raw, |l| {
            l.sends_per_10_minutes = 5;
            l.sends_per_day = 20;
        }))
        .await;
        app.create_account("many@example.com").await; // 1 send
        let verify = app.start_flow("/sign-in", "many@example.com").await; // 2
        for _ in 0..3 {
            app.clock.advance(Duration::from_secs(30));
            assert_eq!(app.resend(&verify).await.status(), StatusCode::SEE_OTHER); // 3, 4, 5
        }
        app.clock.advance(Duration::from_secs(30));
        let refused = app.resend(&verify).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "a resend counts like a new flow");
        let wait = retry_after(&refused);
        assert!((420..=480).contains(&wait), "the oldest send leaves the window in ~7.5 min: {wait}");
        assert_eq!(start(&app, "many@example.com", None).await.status(), StatusCode::TOO_MANY_REQUESTS, "and a new flow is refused too");
        app.clock.advance(Duration::from_secs(wait));
        assert_eq!(start(&app, "many@example.com", None).await.status(), StatusCode::SEE_OTHER);
        // The daily cap: 20 sends, whatever the spacing.
        let mut sent = 6;
        while sent < 20 {
            app.clock.advance(Duration::from_secs(121));
            assert_eq!(start(&app, "many@example.com", None).await.status(), StatusCode::SEE_OTHER, "send {}", sent + 1);
            sent += 1;
        }
        app.clock.advance(Duration::from_secs(600));
        let capped = start(&app, "many@example.com", None).await;
        assert_eq!(capped.status(), StatusCode::TOO_MANY_REQUESTS, "the 21st send in a day");
        assert!(retry_after(&capped) > 3600);
        assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 20, "20 messages queued in the day");
    }

    async fn one_ip_can_start_5_flows_per_10_seconds_whatever_the_addresses() {
        let app = spawn_app_with(|raw| only(raw, |l| l.ip_flows_per_10_seconds = 5)).await;
        for i in 0..5 {
            let resp = app.submit_identifier_with(&browser(), "/sign-up", &format!("p{i}@example.com")).await;
            assert_eq!(resp.status(), StatusCode::SEE_OTHER, "flow {i}");
        }
        let sixth = app.submit_identifier_with(&browser(), "/sign-up", "p5@example.com").await;
        assert_generic_429(sixth).await;
        app.smtp.assert_count_stays("p5@example.com", 0).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 5);
        app.clock.advance(Duration::from_secs(10));
        assert_eq!(app.submit_identifier_with(&browser(), "/sign-up", "p5@example.com").await.status(), StatusCode::SEE_OTHER);
    }

    async fn one_ip_gets_3_code_tries_per_10_seconds_and_a_refused_try_is_not_counted() {
        let app = spawn_app_with(|raw| {
            // More tries per code than per IP, so the code outlives the IP's refusal.
            raw.codes.max_attempts = 5;
            only(raw, |l| l.ip_attempts_per_10_seconds = 3);
        })
        .await;
        let verify = app.start_flow("/sign-up", "tries@example.com").await;
        let code = app.smtp.wait_for("tries@example.com", 1).await.code();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for _ in 0..3 {
            assert_eq!(app.enter_code(&verify, wrong).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
        }
        // The fourth try of this IP in 10 s is refused, even with the right code...
        let page = app.page(&verify).await;
        let right = page.form(&verify).set("code", &code);
        let refused = app.submit(&right).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "fourth try in 10 s");
        assert_eq!(app.count("SELECT MAX(attempts) FROM verifications").await, 3, "the refused try used none of the code's");
        // ...and goes through once the window has passed.
        app.clock.advance(Duration::from_secs(10));
        assert_eq!(app.submit(&right).await.status(), StatusCode::SEE_OTHER);
    }

    async fn per_ip_and_per_address_are_separate_buckets_through_a_trusted_proxy() {
        let app = spawn_app_with(|raw| {
            raw.trusted_proxies = vec!["127.0.0.1".into()];
            only(raw, |l| {
                l.ip_flows_per_10_seconds = 5;
                l.send_interval_secs = 30;
            });
        })
        .await;
        app.create_account("target@example.com").await;
        app.clock.advance(Duration::from_secs(30));
        // 50 IPs × 1 address: the address's own limit stops them after the first.
        let mut allowed = 0;
        for i in 0..50 {
            let resp = start(&app, "target@example.com", Some(&format!("198.51.100.{i}"))).await;
            if resp.status() == StatusCode::SEE_OTHER {
                allowed += 1;
            } else {
                assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
            }
        }
        assert_eq!(allowed, 1, "one send per 30 s to the address, whatever the IP");
        // 1 IP × 50 addresses: the IP's limit stops it after 5.
        let mut allowed = 0;
        for i in 0..50 {
            let client = browser();
            let page = app.page_with(&client, "/sign-up").await;
            let form = page.form("/sign-up").set("email_address", &format!("m{i}@example.com"));
            let resp = app.submit_with_headers(&client, &form, &[("X-Forwarded-For", "203.0.113.9")]).await;
            if resp.status() == StatusCode::SEE_OTHER {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5, "five flows per 10 s from one client IP");
    }

    async fn an_untrusted_peers_forwarded_headers_are_ignored() {
        let app = spawn_app_with(|raw| only(raw, |l| l.ip_flows_per_10_seconds = 5)).await;
        let mut allowed = 0;
        for i in 0..10 {
            let client = browser();
            let page = app.page_with(&client, "/sign-up").await;
            let form = page.form("/sign-up").set("email_address", &format!("x{i}@example.com"));
            let spoof = format!("198.51.100.{i}");
            let resp = app
                .submit_with_headers(&client, &form, &[("X-Forwarded-For", &spoof), ("Forwarded", &format!("for={spoof}"))])
                .await;
            if resp.status() == StatusCode::SEE_OTHER {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 5, "without trusted_proxies every request counts for the socket's address");
    }

    async fn a_spent_sms_budget_fails_sms_closed_while_email_keeps_working() {
        let sms = TestSms::start();
        let app = spawn_app_with({
            let sms = sms.clone();
            move |raw| {
                crate::phone::with_twilio(&sms, raw);
                raw.identifiers.email.required = false;
                raw.test_mode = Some(true);
                raw.test_mode_outside_dev_mode = true;
                raw.test_email_domains = vec!["example.com".into()];
                only(raw, |l| l.sms_per_hour = 2);
            }
        })
        .await;
        let phone_sign_up = |number: &'static str| {
            let client = browser();
            let app = &app;
            async move { app.submit_fields_with(&client, "/sign-up", &[("phone_number", number)]).await }
        };
        assert_eq!(phone_sign_up("+12015550201").await.status(), StatusCode::SEE_OTHER);
        assert_eq!(phone_sign_up("+12015550202").await.status(), StatusCode::SEE_OTHER);
        let refused = phone_sign_up("+12015550203").await;
        assert_generic_429(refused).await;
        assert_eq!(sms.wait_for("+12015550202", 1).await.to, "+12015550202");
        sms.assert_count_stays("+12015550203", 0).await;
        // Test numbers (test mode) are not counted against the budget.
        let test = phone_sign_up("+12015550150").await;
        assert_eq!(test.status(), StatusCode::SEE_OTHER, "test numbers are outside the SMS budget");
        // Email keeps working.
        let resp = app.submit_identifier_with(&browser(), "/sign-up", "mail@example.com").await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        app.smtp.wait_for("mail@example.com", 1).await;
        // An hour later the budget is back.
        app.clock.advance(Duration::from_secs(3600));
        assert_eq!(phone_sign_up("+12015550203").await.status(), StatusCode::SEE_OTHER);
        sms.wait_for("+12015550203", 1).await;
        assert_eq!(sms.request_count(), 3);
    }

    async fn a_refusal_answers_429_with_retry_after_in_the_json_api_too() {
        let app = spawn_app_with(|raw| only(raw, |l| l.ip_flows_per_10_seconds = 1)).await;
        let client = browser();
        let create = || {
            client
                .post(app.url("/v1/client/sign_ups"))
                .header("Origin", &app.address)
                .json(&serde_json::json!({"email_address": "api@example.com"}))
                .send()
        };
        assert_eq!(create().await.unwrap().status(), StatusCode::OK);
        let refused = create().await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after(&refused), 10);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "too_many_requests");
        assert_eq!(body["errors"][0]["message"], "Too many requests. Try again later.");
    }

    async fn rate_limit_counts_survive_a_restart_and_are_shared_by_instances_on_one_database() {
        let app = spawn_app_with(|raw| only(raw, |l| l.ip_flows_per_10_seconds = 2)).await;
        for i in 0..2 {
            let resp = app.submit_identifier_with(&browser(), "/sign-up", &format!("r{i}@example.com")).await;
            assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        }
        let app = app.restart().await;
        let resp = app.submit_identifier_with(&browser(), "/sign-up", "r2@example.com").await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "the count is in the database");
    }

    async fn the_janitor_deletes_rate_events_older_than_a_day() {
        let app = spawn_app_with(|raw| {
            raw.janitor_interval_ms = 50;
            only(raw, |l| l.ip_flows_per_10_seconds = 5);
        })
        .await;
        app.submit_identifier_with(&browser(), "/sign-up", "j@example.com").await;
        assert!(app.count("SELECT COUNT(*) FROM rate_events").await >= 1);
        app.clock.advance(Duration::from_secs(24 * 3600 + 1));
        crate::helpers::until("old rate events are deleted", || async {
            app.count("SELECT COUNT(*) FROM rate_events").await == 0
        })
        .await;
    }

    async fn distributed_guessing_across_resends_and_ips_stops_at_the_account_cap() {
        let app = spawn_app_with(|raw| {
            raw.trusted_proxies = vec!["127.0.0.1".into()];
            only(raw, |l| l.ip_attempts_per_10_seconds = 3);
        })
        .await;
        app.create_account("victim@example.com").await;
        let mut guesses = 0;
        let mut flows = 0;
        // Every guess from another IP, a new flow (and code) every three guesses.
        'outer: while flows < 10 {
            let client = browser();
            let page = app.page_with(&client, "/sign-in").await;
            let ip = format!("198.51.100.{flows}");
            let form = page.form("/sign-in").set("email_address", "victim@example.com");
            let resp = app.submit_with_headers(&client, &form, &[("X-Forwarded-For", &ip)]).await;
            let verify = crate::helpers::location(&resp);
            flows += 1;
            for n in 0..3 {
                let page = app.page_with(&client, &verify).await;
                let form = page.form(&verify).set("code", "000000");
                let ip = format!("203.0.113.{}", guesses);
                let resp = app.submit_with_headers(&client, &form, &[("X-Forwarded-For", &ip)]).await;
                guesses += 1;
                if resp.status() == StatusCode::TOO_MANY_REQUESTS {
                    assert_eq!(guesses, 10, "locked on the tenth failure (try {n} of flow {flows})");
                    break 'outer;
                }
            }
        }
        assert_eq!(guesses, 10, "ten consecutive failures lock the account, whatever the IPs");
        // Even the right code is refused now, from yet another IP.
        let client = browser();
        let page = app.page_with(&client, "/sign-in").await;
        let form = page.form("/sign-in").set("email_address", "victim@example.com");
        let resp = app.submit_with_headers(&client, &form, &[("X-Forwarded-For", "192.0.2.1")]).await;
        let verify = crate::helpers::location(&resp);
        let code = app.smtp.wait_for("victim@example.com", flows + 2).await.code();
        let page = app.page_with(&client, &verify).await;
        let resp = app
            .submit_with_headers(&client, &page.form(&verify).set("code", &code), &[("X-Forwarded-For", "192.0.2.2")])
            .await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    async fn one_ip_gets_a_bounded_number_of_sends_per_hour_whatever_the_addresses() {
        let app = spawn_app_with(|raw| only(raw, |l| l.ip_sends_per_hour = 3)).await;
        for i in 0..3 {
            let resp = app.submit_identifier_with(&browser(), "/sign-up", &format!("s{i}@example.com")).await;
            assert_eq!(resp.status(), StatusCode::SEE_OTHER, "send {i}");
        }
        assert_generic_429(app.submit_identifier_with(&browser(), "/sign-up", "s3@example.com").await).await;
        app.smtp.assert_count_stays("s3@example.com", 0).await;
        app.clock.advance(Duration::from_secs(3600));
        let resp = app.submit_identifier_with(&browser(), "/sign-up", "s3@example.com").await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "the hour has passed");
    }

    async fn ipv6_clients_count_per_64_and_eight_times_as_much_per_48_through_a_trusted_proxy() {
        let app = spawn_app_with(|raw| {
            raw.trusted_proxies = vec!["127.0.0.1".into()];
            only(raw, |l| l.ip_flows_per_10_seconds = 1);
        })
        .await;
        let sign_up_from = |ip: String| {
            let app = &app;
            async move {
                let client = browser();
                let page = app.page_with(&client, "/sign-up").await;
                let email = format!("{}@example.com", ip.replace(':', "-"));
                let form = page.form("/sign-up").set("email_address", &email);
                app.submit_with_headers(&client, &form, &[("X-Forwarded-For", &ip)]).await
            }
        };
        // One subscriber's /64: one flow per 10 s, whatever the interface identifier.
        assert_eq!(sign_up_from("2001:db8:aa:1::1".into()).await.status(), StatusCode::SEE_OTHER);
        assert_eq!(sign_up_from("2001:db8:aa:1:ffff::2".into()).await.status(), StatusCode::TOO_MANY_REQUESTS);
        // Other /64s of the same /48: eight flows between them, not one each.
        for net in 2..=8 {
            assert_eq!(sign_up_from(format!("2001:db8:aa:{net:x}::1")).await.status(), StatusCode::SEE_OTHER, "/64 number {net}");
        }
        let ninth = sign_up_from("2001:db8:aa:ff00::1".into()).await;
        assert_eq!(ninth.status(), StatusCode::TOO_MANY_REQUESTS, "the ninth /64 of one /48 within 10 s");
        assert_generic_429(ninth).await;
        // Another /48 is another customer.
        assert_eq!(sign_up_from("2001:db8:bb:1::1".into()).await.status(), StatusCode::SEE_OTHER);
        app.clock.advance(Duration::from_secs(10));
        assert_eq!(sign_up_from("2001:db8:aa:ff00::1".into()).await.status(), StatusCode::SEE_OTHER);
    }
}
