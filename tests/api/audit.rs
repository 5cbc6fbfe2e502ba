//! The audit log: every security event is stored with masked identifiers (never a code or a
//! token), and a person sees their own on /user.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{browser, spawn_app, spawn_app_with};

async fn events(
    app: &crate::helpers::TestApp,
) -> Vec<(String, String, Option<String>, Option<String>)> {
    let db = app.db().await;
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT event, outcome, identifier, user_id FROM audit_events ORDER BY at, event",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    db.close().await;
    rows
}

crate::backend_tests! {
    async fn sign_up_and_sign_in_are_recorded_with_masked_identifiers_and_shown_to_the_person() {
        let app = spawn_app().await;
        app.create_account("audit@example.com").await;
        let verify = app.start_flow("/sign-in", "audit@example.com").await;
        let code = app.smtp.wait_for("audit@example.com", 2).await.code();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        assert_eq!(app.enter_code(&verify, wrong).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(app.enter_code(&verify, &code).await.status(), StatusCode::SEE_OTHER);
        let names: Vec<String> = events(&app).await.into_iter().map(|e| e.0).collect();
        for expected in ["code_sent", "sign_up", "identifier_added", "code_incorrect", "sign_in"] {
            assert!(names.contains(&expected.to_string()), "{expected} missing from {names:?}");
        }
        let all = events(&app).await;
        assert!(all.iter().all(|e| e.2.as_deref().is_none_or(|i| i == "a***@example.com")), "{all:?}");
        let db = app.db().await;
        let dump: Vec<(String,)> = sqlx::query_as("SELECT event || '|' || COALESCE(identifier, '') || '|' || COALESCE(ip, '') || '|' || COALESCE(user_agent, '') FROM audit_events").fetch_all(&db).await.unwrap();
        for (row,) in dump {
            assert!(!row.contains(&code) && !row.contains("audit@example.com"), "{row}");
        }

        let profile = app.page("/user").await;
        assert!(profile.contains("Recent security activity"), "{}", profile.html);
        for line in ["Account created", "Signed in", "Incorrect code entered", "Code sent"] {
            assert!(profile.contains(line), "{line}: {}", profile.html);
        }
        assert!(profile.contains("a***@example.com") && profile.contains("127.0.0.1"));
    }

    async fn lockouts_and_sign_outs_are_recorded_and_refusals_write_nothing() {
        let app = spawn_app_with(|raw| {
            raw.lockout.max_failures = 2;
            raw.limits.ip_attempts_per_10_seconds = 0;
        })
        .await;
        app.create_account("lock@example.com").await;
        let verify = app.start_flow("/sign-in", "lock@example.com").await;
        let code = app.smtp.wait_for("lock@example.com", 2).await.code();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        app.enter_code(&verify, wrong).await;
        assert_eq!(app.enter_code(&verify, wrong).await.status(), StatusCode::TOO_MANY_REQUESTS);
        app.clock.advance(Duration::from_secs(1));
        let page = app.page(&verify).await;
        let resp = app.submit(&page.form(&verify).set("code", &code)).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let names: Vec<String> = events(&app).await.into_iter().map(|e| e.0).collect();
        assert!(names.contains(&"identifier_locked".to_string()), "{names:?}");
        assert_eq!(names.iter().filter(|n| *n == "identifier_locked").count(), 1, "the lock once; refusals while locked write nothing: {names:?}");
        assert!(!names.contains(&"rate_limited".to_string()));

        app.clock.advance(Duration::from_secs(3600));
        app.sign_in("lock@example.com").await;
        let page = app.page("/user").await;
        let form = page.form("/sign-out");
        app.submit(&form).await;
        let names: Vec<String> = events(&app).await.into_iter().map(|e| e.0).collect();
        assert!(names.contains(&"sign_out".to_string()), "{names:?}");
    }

    async fn a_person_sees_only_their_own_events_and_hears_of_sign_ups_with_their_address() {
        let app = spawn_app_with(|raw| raw.enumeration_protection = "strict".into()).await;
        app.create_account("mine@example.com").await;
        app.create_account("theirs@example.com").await;
        // Someone tries to sign up with mine.
        app.submit_fields_with(&browser(), "/sign-up", &[("email_address", "mine@example.com")]).await;
        app.smtp.wait_for("mine@example.com", 2).await; // the owner's notice
        app.sign_in("mine@example.com").await;
        let profile = app.page("/user").await;
        assert!(profile.contains("Someone tried to create an account with your email address"), "{}", profile.html);
        assert!(!profile.contains("t***@example.com"), "another account's events never show");
    }
}
