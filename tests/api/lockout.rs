//! Guess budgets and lockout denial of service (issue 13, items 5 and 6): locks that double,
//! the stop after consecutive failures that only a success or an operator lifts, one budget per
//! account in strict mode whose lock answers like a wrong code, the owner's trusted browser
//! keeping a share of its own, and the owner's notice.

use std::time::Duration;

use reqwest::StatusCode;
use scraper::Selector;

use crate::codes::wrong;
use crate::helpers::{
    browser, eventually, location, set_cookie, spawn_app, spawn_app_with, Page, TestApp,
};
use crate::sms_server::TestSms;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// One answer to a form post.
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    location: Option<String>,
    page: Page,
}

async fn answer(resp: reqwest::Response) -> Answer {
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    Answer {
        status: resp.status(),
        retry_after,
        location,
        page: TestApp::into_page(resp).await,
    }
}

/// The text of the page's error alert.
fn alert(page: &Page) -> String {
    let selector = Selector::parse("#form-error").unwrap();
    let doc = page.doc();
    let text: String = doc.select(&selector).flat_map(|e| e.text()).collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The codes mailed to `address` (notices left out), waiting for the `n`-th.
async fn code_mail(app: &TestApp, address: &str, n: usize) -> String {
    eventually(&format!("code {n} to {address}"), || async {
        let codes: Vec<_> = app
            .smtp
            .messages_to(address)
            .into_iter()
            .filter(|m| m.subject().ends_with("verification code"))
            .collect();
        codes.get(n - 1).map(|m| m.code())
    })
    .await
}

fn codes_mailed(app: &TestApp, address: &str) -> usize {
    app.smtp
        .messages_to(address)
        .iter()
        .filter(|m| m.subject().ends_with("verification code"))
        .count()
}

/// Notices to `address` whose subject contains `about`.
fn notices(app: &TestApp, address: &str, about: &str) -> usize {
    app.smtp
        .messages_to(address)
        .iter()
        .filter(|m| m.subject().contains(about))
        .count()
}

/// Starts a sign-in in `client` with `typed` in the form field `field`; returns the code page.
async fn start(app: &TestApp, client: &reqwest::Client, field: &str, typed: &str) -> String {
    let resp = app
        .submit_fields_with(client, "/sign-in", &[(field, typed)])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "sign-in with {typed}");
    location(&resp)
}

/// `n` wrong codes for the account of `email` (typed in `field`), three per sign-in, each
/// sign-in in a fresh browser; the answers.
async fn guess(app: &TestApp, field: &str, email: &str, n: usize) -> Vec<Answer> {
    let mut answers = Vec::new();
    while answers.len() < n {
        let client = browser();
        let sent = codes_mailed(app, email);
        let verify = start(app, &client, field, email).await;
        let code = code_mail(app, email, sent + 1).await;
        for _ in 0..3.min(n - answers.len()) {
            let resp = app.enter_code_with(&client, &verify, &wrong(&code)).await;
            answers.push(answer(resp).await);
        }
    }
    answers
}

/// A sign-in with the right code in `client`.
async fn sign_in_with(app: &TestApp, client: &reqwest::Client, email: &str) -> Answer {
    let sent = codes_mailed(app, email);
    let verify = start(app, client, "email_address", email).await;
    let code = code_mail(app, email, sent + 1).await;
    answer(app.enter_code_with(client, &verify, &code).await).await
}

/// Starts sign-ins for `email` in fresh browsers until one is refused (at most 20 a day).
async fn spend_the_days_sends(app: &TestApp, email: &str) {
    for _ in 0..=20 {
        let resp = app
            .submit_fields_with(&browser(), "/sign-in", &[("email_address", email)])
            .await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            return;
        }
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    }
    panic!("more than 20 sends to {email} in a day");
}

fn statuses(answers: &[Answer]) -> Vec<u16> {
    answers.iter().map(|a| a.status.as_u16()).collect()
}

const EMAIL: &str = "both@example.com";
const PHONE: &str = "+12015550234";

/// Strict enumeration protection, SMS on, and an account with an email address and a phone
/// number (signed up in a throw-away browser).
async fn strict_account_with_phone(
    sms: &TestSms,
    customise: impl FnOnce(&mut latchkey::config::RawConfig),
) -> TestApp {
    let app = spawn_app_with({
        let sms = sms.clone();
        move |raw| {
            crate::phone::with_twilio(&sms, raw);
            raw.identifiers.phone.required = true;
            raw.enumeration_protection = "strict".into();
            customise(raw);
        }
    })
    .await;
    let other = browser();
    let resp = app
        .submit_fields_with(
            &other,
            "/sign-up",
            &[("email_address", EMAIL), ("phone_number", PHONE)],
        )
        .await;
    let verify = location(&resp);
    let code = code_mail(&app, EMAIL, 1).await;
    app.enter_code_with(&other, &verify, &code).await;
    let code = sms.wait_for(PHONE, 1).await.code();
    assert_eq!(
        location(&app.enter_code_with(&other, &verify, &code).await),
        "/user"
    );
    app
}

crate::backend_tests! {
    async fn each_further_lock_of_an_account_lasts_twice_as_long() {
        let app = spawn_app().await;
        app.create_account("twice@example.com").await;
        let first = guess(&app, "email_address", "twice@example.com", 10).await;
        assert_eq!(statuses(&first), [[422; 9].as_slice(), &[429]].concat());
        assert_eq!(first[9].retry_after, Some(HOUR));

        app.clock.advance(Duration::from_secs(HOUR));
        let second = guess(&app, "email_address", "twice@example.com", 10).await;
        assert_eq!(statuses(&second), [[422; 9].as_slice(), &[429]].concat(), "a lock that ran out allows ten more");
        assert_eq!(second[9].retry_after, Some(2 * HOUR), "the second lock lasts twice as long");
        assert!(alert(&second[9].page).contains("try again in about 120 minutes"), "{}", second[9].page.html);

        app.clock.advance(Duration::from_secs(2 * HOUR - 1));
        let early = sign_in_with(&app, &browser(), "twice@example.com").await;
        assert_eq!(early.status, StatusCode::TOO_MANY_REQUESTS, "even the right code, a second early");
        app.clock.advance(Duration::from_secs(1));
        let on_time = sign_in_with(&app, &browser(), "twice@example.com").await;
        assert_eq!(on_time.status, StatusCode::SEE_OTHER);
    }

    async fn eighty_consecutive_wrong_codes_stop_sign_in_until_an_operator_resets_the_count() {
        let app = spawn_app_with(|raw| raw.janitor_interval_ms = 50).await;
        app.create_account("stop@example.com").await;
        let mut waits = Vec::new();
        for round in 0..8 {
            let answers = guess(&app, "email_address", "stop@example.com", 10).await;
            assert_eq!(statuses(&answers), [[422; 9].as_slice(), &[429]].concat(), "round {round}");
            match answers[9].retry_after {
                Some(wait) => {
                    waits.push(wait / HOUR);
                    app.clock.advance(Duration::from_secs(wait));
                }
                None => {
                    assert_eq!(round, 7, "the stop comes with the 80th failure");
                    let text = alert(&answers[9].page);
                    assert!(text.contains("sign-in with this address or number is blocked"), "{text}");
                }
            }
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 24, 24], "hours of the seven locks before the stop");

        // Neither time nor the janitor lifts the stop; the right code is refused without a wait to tell.
        app.clock.advance(Duration::from_secs(30 * DAY));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let refused = sign_in_with(&app, &browser(), "stop@example.com").await;
        assert_eq!((refused.status, refused.retry_after), (StatusCode::TOO_MANY_REQUESTS, None));

        // The operator's reset (SECURITY.md): forget the account's count.
        let db = app.db().await;
        let user: String = sqlx::query_scalar("SELECT user_id FROM identifiers WHERE canonical = $1")
            .bind("stop@example.com")
            .fetch_one(&db)
            .await
            .unwrap();
        sqlx::query("DELETE FROM identifier_lockouts WHERE identifier = $1")
            .bind(format!("user:{user}"))
            .execute(&db)
            .await
            .unwrap();
        db.close().await;
        let after = sign_in_with(&app, &browser(), "stop@example.com").await;
        assert_eq!(after.status, StatusCode::SEE_OTHER);
    }

    async fn in_strict_mode_an_accounts_identifiers_share_one_budget_whose_lock_answers_like_a_wrong_code() {
        let sms = TestSms::start();
        let app = strict_account_with_phone(&sms, |_| {}).await;
        // Ten wrong codes through the email address lock it, and the account with it.
        let answers = guess(&app, "identifier", EMAIL, 10).await;
        assert_eq!(statuses(&answers), [[422; 9].as_slice(), &[429]].concat());

        // Through the phone number, the right code gets a wrong code's answer, exactly the one
        // a number without an account gets: "locked" would tell that the two share an account.
        let owner = browser();
        let verify = start(&app, &owner, "identifier", "+1 201 555 0234").await;
        let code = sms.wait_for(PHONE, 2).await.code();
        let real = answer(app.enter_code_with(&owner, &verify, &code).await).await;
        let stranger = browser();
        let decoy_verify = start(&app, &stranger, "identifier", "+1 201 555 0299").await;
        let decoy = answer(app.enter_code_with(&stranger, &decoy_verify, "000000").await).await;
        assert_eq!((real.status, real.retry_after), (StatusCode::UNPROCESSABLE_ENTITY, None));
        assert_eq!((decoy.status, decoy.retry_after), (real.status, real.retry_after));
        assert_eq!(alert(&real.page), "Incorrect code. You have 2 tries left.");
        assert_eq!(alert(&decoy.page), alert(&real.page));
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1, "only the sign-up's session");

        // Once the account's lock has run out, the phone number signs in.
        app.clock.advance(Duration::from_secs(HOUR));
        let verify = start(&app, &owner, "identifier", "+1 201 555 0234").await;
        let code = sms.wait_for(PHONE, 3).await.code();
        assert_eq!(app.enter_code_with(&owner, &verify, &code).await.status(), StatusCode::SEE_OTHER);
    }

    async fn a_wrong_code_runs_the_same_statements_for_an_account_and_a_decoy_through_the_lock() {
        let app = spawn_app_with(|raw| raw.enumeration_protection = "strict".into()).await;
        app.create_account("known@example.com").await;
        let mut work = Vec::new();
        for typed in ["known@example.com", "nobody@example.com"] {
            let mut per_try = Vec::new();
            // Twelve wrong codes on four sign-ins: the tenth locks the identifier and the
            // account (a decoy's stand-in), the last two are refused.
            for _ in 0..4 {
                let client = browser();
                let sent = codes_mailed(&app, typed);
                let verify = start(&app, &client, "email_address", typed).await;
                let guess = match typed {
                    "known@example.com" => wrong(&code_mail(&app, typed, sent + 1).await),
                    _ => "000000".to_string(),
                };
                for _ in 0..3 {
                    let form = app.page_with(&client, &verify).await.form(&verify).set("code", &guess);
                    let before = app.store.units_run();
                    let status = app.submit_with(&client, &form).await.status();
                    let after = app.store.units_run();
                    per_try.push((status.as_u16(), after.reads - before.reads, after.writes - before.writes, after.statements - before.statements));
                }
            }
            work.push(per_try);
        }
        assert_eq!(work[0].iter().map(|w| w.0).collect::<Vec<_>>(), [[422; 9].as_slice(), &[429; 3]].concat());
        assert_eq!(work[0], work[1], "an account and a decoy ran different database work");
    }

    async fn parallel_tries_through_both_identifiers_of_an_account_stop_at_each_count() {
        let sms = TestSms::start();
        // Four failures lock a key: fewer than the tries of two live codes of one identifier.
        let app = strict_account_with_phone(&sms, |raw| raw.lockout.max_failures = 4).await;
        let mut forms = Vec::new();
        for n in 2..=4 {
            let client = browser();
            let verify = start(&app, &client, "identifier", EMAIL).await;
            let code = code_mail(&app, EMAIL, n).await;
            let form = app.page_with(&client, &verify).await.form(&verify).set("code", &wrong(&code));
            forms.push((client, form));
        }
        for n in 2..=4 {
            let client = browser();
            let verify = start(&app, &client, "identifier", PHONE).await;
            let code = sms.wait_for(PHONE, n).await.code();
            let form = app.page_with(&client, &verify).await.form(&verify).set("code", &wrong(&code));
            forms.push((client, form));
        }
        // 18 tries at once: 9 per identifier, on three live codes each.
        let app_ref = &app;
        let tries = forms
            .iter()
            .flat_map(|(client, form)| (0..3).map(move |_| app_ref.submit_with(client, form)));
        futures_util::future::join_all(tries).await;
        let count = |key: String| {
            let app = &app;
            async move {
                let db = app.db().await;
                let n: i64 = sqlx::query_scalar("SELECT consecutive FROM identifier_lockouts WHERE identifier = $1")
                    .bind(key)
                    .fetch_one(&db)
                    .await
                    .unwrap();
                db.close().await;
                n
            }
        };
        assert_eq!(
            app.count("SELECT CAST(COALESCE(SUM(v.attempts), 0) AS BIGINT) FROM verifications v JOIN flows f ON f.id = v.flow_id WHERE f.kind = 'sign_in'").await,
            8,
            "each identifier took four tries, then refused"
        );
        assert_eq!(count(format!("signin:email:{EMAIL}")).await, 4);
        assert_eq!(count(format!("signin:phone:{PHONE}")).await, 4);
        let db = app.db().await;
        let user: String = sqlx::query_scalar("SELECT user_id FROM identifiers WHERE canonical = $1")
            .bind(EMAIL)
            .fetch_one(&db)
            .await
            .unwrap();
        db.close().await;
        assert_eq!(count(format!("user:{user}")).await, 4, "the account counted four of the eight, then was locked");
    }

    async fn the_owners_usual_browser_keeps_its_own_share_when_others_spend_the_sends_and_lock_the_account() {
        let app = spawn_app_with(|raw| raw.limits.sends_per_day = 20).await;
        app.create_account("owner@example.com").await;
        // The owner signs in once in their usual browser, which becomes a trusted one.
        let owner = browser();
        let sent = codes_mailed(&app, "owner@example.com");
        let verify = start(&app, &owner, "email_address", "owner@example.com").await;
        let code = code_mail(&app, "owner@example.com", sent + 1).await;
        let resp = app.enter_code_with(&owner, &verify, &code).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let cookie = set_cookie(&resp, "latchkey_device");
        for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=31536000"] {
            assert!(cookie.contains(flag), "{cookie} lacks {flag}");
        }
        let form = app.page_with(&owner, "/user").await.form("/sign-out");
        app.submit_with(&owner, &form).await;

        // Someone else locks the account and spends its day of sends.
        let answers = guess(&app, "email_address", "owner@example.com", 10).await;
        assert_eq!(answers[9].status, StatusCode::TOO_MANY_REQUESTS);
        spend_the_days_sends(&app, "owner@example.com").await;
        // A browser trusted by another account (the attacker's own) gets no share of this one.
        let mallory = browser();
        let resp = app.submit_identifier_with(&mallory, "/sign-up", "mallory@example.com").await;
        let code = code_mail(&app, "mallory@example.com", 1).await;
        let resp = app.enter_code_with(&mallory, &location(&resp), &code).await;
        set_cookie(&resp, "latchkey_device");
        let form = app.page_with(&mallory, "/user").await.form("/sign-out");
        app.submit_with(&mallory, &form).await;
        let resp = app.submit_fields_with(&mallory, "/sign-in", &[("email_address", "owner@example.com")]).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);

        // The owner's usual browser still gets a code, and the code still signs in.
        let signed_in = sign_in_with(&app, &owner, "owner@example.com").await;
        assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
        assert_eq!(signed_in.location.as_deref(), Some("/user"));
    }

    async fn a_stopped_account_signs_in_from_the_owners_trusted_browser_which_lifts_the_stop_for_all() {
        let app = spawn_app_with(|raw| {
            raw.lockout.max_failures = 5;
            raw.lockout.stop_after_failures = 10;
        })
        .await;
        app.create_account("kept@example.com").await;
        let owner = browser();
        assert_eq!(sign_in_with(&app, &owner, "kept@example.com").await.status, StatusCode::SEE_OTHER);
        let form = app.page_with(&owner, "/user").await.form("/sign-out");
        app.submit_with(&owner, &form).await;

        let first = guess(&app, "email_address", "kept@example.com", 5).await;
        assert_eq!(first[4].retry_after, Some(HOUR));
        app.clock.advance(Duration::from_secs(HOUR));
        let second = guess(&app, "email_address", "kept@example.com", 5).await;
        assert_eq!((second[4].status, second[4].retry_after), (StatusCode::TOO_MANY_REQUESTS, None), "stopped");
        let stranger = sign_in_with(&app, &browser(), "kept@example.com").await;
        assert_eq!((stranger.status, stranger.retry_after), (StatusCode::TOO_MANY_REQUESTS, None));

        // The owner's usual browser has its own share: the right code signs in...
        let trusted = sign_in_with(&app, &owner, "kept@example.com").await;
        assert_eq!(trusted.location.as_deref(), Some("/user"));
        // ...and a success disregards the failures before it, for every browser.
        let elsewhere = sign_in_with(&app, &browser(), "kept@example.com").await;
        assert_eq!(elsewhere.location.as_deref(), Some("/user"));
    }

    async fn the_owner_hears_at_most_once_a_day_that_their_address_is_throttled() {
        let app = spawn_app_with(|raw| {
            raw.limits.sends_per_day = 20;
            raw.limits.owner_notice_interval_secs = DAY;
        })
        .await;
        app.create_account("told@example.com").await;
        let locked = "Sign-in to Acme paused after incorrect codes";
        let capped = "Too many sign-in codes requested on Acme";
        guess(&app, "email_address", "told@example.com", 10).await;
        eventually("the lockout notice", || async { (notices(&app, "told@example.com", locked) == 1).then_some(()) }).await;
        let notice = app.smtp.messages_to("told@example.com").into_iter().find(|m| m.subject().contains(locked)).unwrap();
        assert!(notice.data.contains("browser you have used before"), "{}", notice.data);

        // The same day, the send cap: no second notice.
        spend_the_days_sends(&app, "told@example.com").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(notices(&app, "told@example.com", capped), 0, "one notice a day");

        // A day later the cap is reached again: this time it is told.
        app.clock.advance(Duration::from_secs(DAY));
        spend_the_days_sends(&app, "told@example.com").await;
        eventually("the send cap notice", || async { (notices(&app, "told@example.com", capped) == 1).then_some(()) }).await;
        assert_eq!(notices(&app, "told@example.com", locked), 1);
    }
}
