use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{location, spawn_app, TestApp};

/// A code that is certainly not `code`.
pub(crate) fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| {
            if c == '9' {
                '0'
            } else {
                char::from(c as u8 + 1)
            }
        })
        .collect()
}

crate::backend_tests! {
    async fn a_wrong_code_says_how_many_tries_remain_and_keeps_what_was_typed() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "w@example.com").await;
        let code = app.smtp.wait_for("w@example.com", 1).await.code();

        let resp = app.enter_code(&verify, &wrong(&code)).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = TestApp::into_page(resp).await;
        assert!(
            page.contains("Incorrect code. You have 2 tries left."),
            "{}",
            page.html
        );
        assert_eq!(page.input_value("code"), Some(wrong(&code)));

        let page = TestApp::into_page(app.enter_code(&verify, &wrong(&code)).await).await;
        assert!(page.contains("You have 1 try left."), "{}", page.html);

        let resp = app.enter_code(&verify, &code).await;
        assert_eq!(
            resp.status(),
            StatusCode::SEE_OTHER,
            "the right code still works on the last try"
        );
    }

    async fn the_third_wrong_try_kills_the_code_even_for_the_right_digits() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "k@example.com").await;
        let code = app.smtp.wait_for("k@example.com", 1).await.code();
        for _ in 0..2 {
            app.enter_code(&verify, &wrong(&code)).await;
        }
        let resp = app.enter_code(&verify, &wrong(&code)).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = TestApp::into_page(resp).await;
        assert!(page.contains("Too many incorrect tries"), "{}", page.html);
        assert!(
            page.contains("Resend code"),
            "the page offers a new code: {}",
            page.html
        );

        // The code form is gone; posting the right code anyway is refused.
        let form = crate::helpers::Form {
            action: verify.clone(),
            fields: vec![
                ("csrf_token".into(), page.input_value("csrf_token").unwrap()),
                ("code".into(), code.clone()),
            ],
        };
        let resp = app.submit(&form).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);

        // A new code (once the resend cooldown has passed) revives the flow.
        app.clock.advance(Duration::from_secs(30));
        let page = app.page(&verify).await;
        assert!(page.contains("Send a new code"), "{}", page.html);
        let resp = app.resend(&verify).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let new_code = app.smtp.wait_for("k@example.com", 2).await.code();
        assert_eq!(
            app.enter_code(&verify, &new_code).await.status(),
            StatusCode::SEE_OTHER
        );
    }

    async fn a_code_expires_after_ten_minutes() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "late@example.com").await;
        let code = app.smtp.wait_for("late@example.com", 1).await.code();

        app.clock.advance(Duration::from_secs(600));
        let resp = app.enter_code(&verify, &code).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = TestApp::into_page(resp).await;
        assert!(page.contains("This code has expired"), "{}", page.html);
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
    }

    async fn a_code_still_works_just_before_it_expires() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "ontime@example.com").await;
        let code = app.smtp.wait_for("ontime@example.com", 1).await.code();
        app.clock.advance(Duration::from_secs(599));
        assert_eq!(
            app.enter_code(&verify, &code).await.status(),
            StatusCode::SEE_OTHER
        );
    }

    async fn resend_stays_closed_for_thirty_seconds_after_a_send() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "r@example.com").await;
        app.smtp.wait_for("r@example.com", 1).await;

        let page = app.page(&verify).await;
        assert!(
            page.html.contains("disabled data-resend-wait=\"30\""),
            "{}",
            page.html
        );
        assert!(page.contains("You can request a new code in 30 seconds."));

        app.clock.advance(Duration::from_secs(29));
        let resp = app.resend(&verify).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "1");
        let page = TestApp::into_page(resp).await;
        assert!(
            page.contains("You can request a new code in 1 seconds."),
            "{}",
            page.html
        );
        app.smtp.assert_count_stays("r@example.com", 1).await;

        app.clock.advance(Duration::from_secs(1));
        let resp = app.resend(&verify).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), format!("{verify}?sent=1"));
        app.smtp.wait_for("r@example.com", 2).await;
        let page = app.page(&location(&resp)).await;
        assert!(page.contains("We sent you a new code"), "{}", page.html);
    }

    async fn a_resend_invalidates_the_previous_code() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "two@example.com").await;
        let first = app.smtp.wait_for("two@example.com", 1).await.code();
        app.clock.advance(Duration::from_secs(30));
        app.resend(&verify).await;
        let second = app.smtp.wait_for("two@example.com", 2).await.code();

        if first != second {
            let resp = app.enter_code(&verify, &first).await;
            assert_eq!(
                resp.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "the old code must be dead"
            );
        }
        assert_eq!(
            app.enter_code(&verify, &second).await.status(),
            StatusCode::SEE_OTHER
        );
    }

    async fn a_code_only_works_on_the_flow_it_was_sent_for() {
        let app = spawn_app().await;
        let verify_a = app.start_flow("/sign-up", "a@example.com").await;
        let verify_b = app.start_flow("/sign-up", "b@example.com").await;
        let code_a = app.smtp.wait_for("a@example.com", 1).await.code();
        let code_b = app.smtp.wait_for("b@example.com", 1).await.code();
        if code_a != code_b {
            assert_eq!(
                app.enter_code(&verify_b, &code_a).await.status(),
                StatusCode::UNPROCESSABLE_ENTITY
            );
        }
        assert_eq!(
            app.enter_code(&verify_a, &code_a).await.status(),
            StatusCode::SEE_OTHER
        );
    }

    async fn a_concurrent_double_submit_of_one_code_yields_exactly_one_session() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "race@example.com").await;
        let code = app.smtp.wait_for("race@example.com", 1).await.code();
        let page = app.page(&verify).await;
        let form = page.form(&verify).set("code", &code);

        let submits = (0..50).map(|_| app.submit(&form));
        let statuses: Vec<StatusCode> = futures_util::future::join_all(submits)
            .await
            .into_iter()
            .map(|r| r.status())
            .collect();
        let successes = statuses
            .iter()
            .filter(|s| **s == StatusCode::SEE_OTHER)
            .count();
        assert!(successes >= 1, "{statuses:?}");
        assert_eq!(
            app.count("SELECT COUNT(*) FROM sessions").await,
            1,
            "{statuses:?}"
        );
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    }

    async fn pasted_codes_with_spaces_or_dashes_are_accepted() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "paste@example.com").await;
        let code = app.smtp.wait_for("paste@example.com", 1).await.code();
        let pasted = format!(" {}-{} ", &code[..3], &code[3..]);
        assert_eq!(
            app.enter_code(&verify, &pasted).await.status(),
            StatusCode::SEE_OTHER
        );
    }

    async fn a_malformed_code_is_refused_without_using_a_try() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "shape@example.com").await;
        let code = app.smtp.wait_for("shape@example.com", 1).await.code();
        for bad in ["12345", "1234567", "12a456", ""] {
            let resp = app.enter_code(&verify, bad).await;
            assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
            let page = TestApp::into_page(resp).await;
            assert_eq!(page.input_value("code").as_deref(), Some(bad));
        }
        assert_eq!(
            app.count("SELECT COALESCE(MAX(attempts), 0) FROM verifications")
                .await,
            0
        );
        assert_eq!(
            app.enter_code(&verify, &code).await.status(),
            StatusCode::SEE_OTHER
        );
    }

    async fn codes_and_session_tokens_are_stored_only_as_keyed_hashes() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "hash@example.com").await;
        let code = app.smtp.wait_for("hash@example.com", 1).await.code();
        // While the code is live, the database holds only its keyed hash.
        let live: String = sqlx::query_scalar("SELECT code_hash FROM verifications")
            .fetch_one(&app.db().await)
            .await
            .unwrap();
        assert_eq!(live.len(), 64, "an HMAC-SHA256 in hex");
        assert!(!live.contains(&code));
        assert_eq!(live, live.to_ascii_lowercase());
        let resp = app.enter_code(&verify, &code).await;
        let cookie = crate::helpers::set_cookie(&resp, "latchkey_session");
        let token = cookie
            .split(';')
            .next()
            .unwrap()
            .split('=')
            .nth(1)
            .unwrap()
            .to_string();
        assert_eq!(token.len(), 43);

        if app.backend == crate::helpers::Backend::Sqlite {
            let bytes = std::fs::read(&app.db_path).unwrap();
            let wal = std::fs::read(app.db_path.with_extension("db-wal")).unwrap_or_default();
            for haystack in [&bytes, &wal] {
                let text = String::from_utf8_lossy(haystack);
                assert!(!text.contains(&token), "session token stored in clear");
                assert!(!text.contains(&format!("{code} is your")), "message stored in clear");
            }
        }
        let db = app.db().await;
        let stored: String = sqlx::query_scalar("SELECT token_hash FROM sessions").fetch_one(&db).await.unwrap();
        let leaks: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM verifications WHERE code_hash = $1 OR destination = $1",
        )
        .bind(&code)
        .fetch_one(&db)
        .await
        .unwrap();
        assert_eq!(leaks, 0);
        assert_ne!(stored, token);
        assert_eq!(
            app.count("SELECT COUNT(*) FROM outbox WHERE payload IS NOT NULL")
                .await,
            0,
            "payload erased after delivery"
        );
    }

    async fn parallel_wrong_guesses_never_evaluate_more_than_the_allowed_tries() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "guess@example.com").await;
        let code = app.smtp.wait_for("guess@example.com", 1).await.code();
        let page = app.page(&verify).await;
        let form = page.form(&verify).set("code", &wrong(&code));
        let guesses = (0..100).map(|_| app.submit(&form));
        let statuses = futures_util::future::join_all(guesses).await;
        assert!(statuses
            .iter()
            .all(|r| r.status() == StatusCode::UNPROCESSABLE_ENTITY));
        assert_eq!(
            app.count("SELECT MAX(attempts) FROM verifications").await,
            3
        );
        let right = page.form(&verify).set("code", &code);
        assert_eq!(
            app.submit(&right).await.status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 0);
    }

    async fn a_stored_word_the_server_does_not_know_is_an_error_never_a_default() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "corrupt@example.com").await;
        assert_eq!(app.get(&verify).await.status(), StatusCode::OK);
        let db = app.db().await;
        sqlx::query("UPDATE verifications SET status = 'bogus'")
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
        // Read as "pending" (or any other value), the page would offer a code form.
        let resp = app.get(&verify).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = resp.text().await.unwrap();
        assert!(!body.contains("name=\"code\""), "{body}");
        assert!(!body.contains("bogus"), "no internals in the answer: {body}");
    }

    async fn parallel_wrong_tries_on_several_live_codes_of_one_account_stop_at_the_lockout() {
        let app = spawn_app().await;
        app.create_account("race@example.com").await;
        // Five sign-ins, each with its live code (3 tries each: 15 tries in all, more than the
        // 10 consecutive failures that lock the account).
        let mut forms = Vec::new();
        for sent in 2..=6 {
            let verify = app.start_flow("/sign-in", "race@example.com").await;
            let code = app.smtp.wait_for("race@example.com", sent).await.code();
            let page = app.page(&verify).await;
            forms.push(page.form(&verify).set("code", &wrong(&code)));
        }
        let tries = (0..30).map(|i| app.submit(&forms[i % forms.len()]));
        futures_util::future::join_all(tries).await;
        assert_eq!(
            app.count(
                "SELECT CAST(COALESCE(SUM(v.attempts), 0) AS BIGINT) FROM verifications v \
                 JOIN flows f ON f.id = v.flow_id WHERE f.kind = 'sign_in'"
            )
            .await,
            10,
            "tries evaluated in parallel stop at the lockout"
        );
        assert_eq!(
            app.count("SELECT COUNT(*) FROM audit_events WHERE event = 'code_incorrect'").await,
            10
        );
    }

    async fn ten_wrong_codes_across_flows_lock_the_address_for_an_hour() {
        let app = spawn_app().await;
        app.create_account("lock@example.com").await;
        let mut sent = 1;
        // 3 + 3 + 3 wrong tries on three flows: new codes and new flows do not reset the count.
        for _ in 0..3 {
            let verify = app.start_flow("/sign-in", "lock@example.com").await;
            sent += 1;
            let code = app.smtp.wait_for("lock@example.com", sent).await.code();
            for _ in 0..3 {
                let resp = app.enter_code(&verify, &wrong(&code)).await;
                assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
            }
        }
        let verify = app.start_flow("/sign-in", "lock@example.com").await;
        sent += 1;
        let code = app.smtp.wait_for("lock@example.com", sent).await.code();
        let resp = app.enter_code(&verify, &wrong(&code)).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "the tenth failure locks");
        assert_eq!(resp.headers()["retry-after"], "3600");
        let page = TestApp::into_page(resp).await;
        assert!(page.contains("try again in about 60 minutes"), "{}", page.html);

        let resp = app.enter_code(&verify, &code).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "even the right code is refused while locked");
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1, "only the account's sign-up session");

        app.clock.advance(Duration::from_secs(3600));
        assert_eq!(app.sign_in("lock@example.com").await.status(), StatusCode::SEE_OTHER, "the lock ends by itself");
    }

    async fn a_success_clears_the_failure_count() {
        let app = spawn_app().await;
        app.create_account("reset@example.com").await;
        let mut sent = 1;
        for round in 0..2 {
            // 9 failures (3 flows × 3), then a success: never locked.
            for _ in 0..3 {
                let verify = app.start_flow("/sign-in", "reset@example.com").await;
                sent += 1;
                let code = app.smtp.wait_for("reset@example.com", sent).await.code();
                for _ in 0..3 {
                    assert_eq!(app.enter_code(&verify, &wrong(&code)).await.status(), StatusCode::UNPROCESSABLE_ENTITY, "round {round}");
                }
            }
            let resp = app.sign_in("reset@example.com").await;
            sent += 1;
            assert_eq!(resp.status(), StatusCode::SEE_OTHER, "round {round}");
            let form = app.page("/user").await.form("/sign-out");
            app.submit(&form).await;
        }
    }

    async fn an_undelivered_message_is_stored_sealed() {
        let smtp = crate::helpers::TestSmtp::reserve();
        let app = crate::helpers::spawn_app_on(smtp.clone(), |_| {}).await;
        let verify = app.start_flow("/sign-up", "sealed@example.com").await;
        let db = app.db().await;
        let payload: Vec<u8> = sqlx::query_scalar("SELECT payload FROM outbox").fetch_one(&db).await.unwrap();
        assert!(payload.len() > 16);
        let text = String::from_utf8_lossy(&payload);
        assert!(!text.contains("sealed@example.com") && !text.contains("\"code\""), "payload is readable: {text}");

        // Let the first try fail and be recorded before the server comes up, so the retry is due
        // once the clock moves on.
        crate::helpers::until("the first try failed", || async {
            app.count("SELECT COUNT(*) FROM outbox WHERE attempts >= 1 AND status = 'pending'").await > 0
        })
        .await;
        smtp.listen();
        let code = smtp.wait_for_retried(&app, "sealed@example.com", 1).await.code();
        assert!(!payload.windows(code.len()).any(|w| w == code.as_bytes()), "the code is in the stored payload");
        assert_eq!(app.enter_code(&verify, &code).await.status(), StatusCode::SEE_OTHER);
    }

    async fn a_sign_up_flow_cannot_be_finished_on_the_sign_in_pages() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "kind@example.com").await;
        let as_sign_in = verify.replace("/sign-up/", "/sign-in/");
        assert_eq!(app.page(&as_sign_in).await.status, StatusCode::NOT_FOUND);
    }
}
