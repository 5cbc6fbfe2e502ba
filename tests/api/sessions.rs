use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{cookie_pair, location, set_cookie, spawn_app};

crate::backend_tests! {
    async fn the_profile_page_sends_signed_out_visitors_to_sign_in() {
        let app = spawn_app().await;
        let resp = app.get("/user").await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), "/sign-in?redirect_url=%2Fuser");
    }

    async fn the_session_cookie_is_http_only_lax_host_wide_and_opaque() {
        let app = spawn_app().await;
        let resp = app.sign_up("cookie@example.com").await;
        let cookie = set_cookie(&resp, "latchkey_session");
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
            assert!(cookie.contains(attr), "{cookie} lacks {attr}");
        }
        assert!(!cookie.contains("Domain"), "{cookie}");
        assert!(
            !cookie.contains("Secure"),
            "plain-http development cookies are not Secure: {cookie}"
        );
        assert!(!cookie.contains("cookie@example.com"));
    }

    async fn signing_out_deletes_the_session_and_clears_the_cookie() {
        let app = spawn_app().await;
        let resp = app.sign_up("bye@example.com").await;
        let token_cookie = cookie_pair(&resp, "latchkey_session");

        let form = app.page("/user").await.form("/sign-out");
        let resp = app.submit(&form).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), "/sign-in");
        let cleared = set_cookie(&resp, "latchkey_session");
        assert!(
            cleared.starts_with("latchkey_session=;") && cleared.contains("Max-Age=0"),
            "{cleared}"
        );
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 0);

        // The old token no longer works, even if a copy was kept.
        let replay = crate::helpers::browser()
            .get(app.url("/user"))
            .header("Cookie", token_cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(replay.status(), StatusCode::SEE_OTHER);
    }

    async fn sessions_expire_after_seven_days() {
        let app = spawn_app().await;
        app.sign_up("week@example.com").await;
        app.clock.advance(Duration::from_secs(7 * 24 * 3600 - 60));
        assert_eq!(app.get("/user").await.status(), StatusCode::OK);
        app.clock.advance(Duration::from_secs(60));
        assert_eq!(app.get("/user").await.status(), StatusCode::SEE_OTHER);
    }

    async fn every_sign_in_issues_a_fresh_token() {
        let app = spawn_app().await;
        let first = app.sign_up("fresh@example.com").await;
        let first_cookie = cookie_pair(&first, "latchkey_session");
        let form = app.page("/user").await.form("/sign-out");
        app.submit(&form).await;
        let second = app.sign_in("fresh@example.com").await;
        assert_eq!(second.status(), StatusCode::SEE_OTHER);
        let second_cookie = cookie_pair(&second, "latchkey_session");
        assert_ne!(first_cookie, second_cookie);
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);
    }

    async fn a_planted_session_cookie_is_replaced_at_sign_in_and_never_accepted() {
        let app = spawn_app().await;
        app.create_account("fix@example.com").await;
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let planted = "latchkey_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        jar.add_cookie_str(planted, &app.address.parse().unwrap());
        let victim = reqwest::Client::builder()
            .cookie_provider(jar)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        assert_eq!(
            app.get_with(&victim, "/user").await.status(),
            StatusCode::SEE_OTHER
        );
        let resp = app
            .submit_identifier_with(&victim, "/sign-in", "fix@example.com")
            .await;
        let verify = location(&resp);
        let code = app.smtp.wait_for("fix@example.com", 2).await.code();
        let resp = app.enter_code_with(&victim, &verify, &code).await;
        let set = resp.headers()["set-cookie"].to_str().unwrap();
        assert!(
            set.starts_with("latchkey_session=") && !set.starts_with(planted),
            "{set}"
        );
        assert_eq!(
            app.get_with(&victim, "/user").await.status(),
            StatusCode::OK
        );
    }
}
