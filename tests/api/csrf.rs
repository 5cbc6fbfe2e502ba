use reqwest::StatusCode;

use crate::helpers::{browser, location, spawn_app, TestApp};

crate::backend_tests! {
    async fn an_identifier_post_without_the_csrf_token_is_refused_and_changes_nothing() {
        let app = spawn_app().await;
        let page = app.page("/sign-up").await;
        let form = page
            .form("/sign-up")
            .set("email_address", "csrf@example.com")
            .without("csrf_token");
        let resp = app.submit(&form).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0);
        app.smtp.assert_count_stays("csrf@example.com", 0).await;
    }

    async fn a_token_from_another_browser_is_refused() {
        let app = spawn_app().await;
        let attacker = browser();
        let their_page = app.page_with(&attacker, "/sign-in").await;
        let their_token = their_page.input_value("csrf_token").unwrap();
        app.page("/sign-in").await; // the victim has a browser cookie of their own
        let form = app
            .page("/sign-in")
            .await
            .form("/sign-in")
            .set("csrf_token", &their_token)
            .set("email_address", "v@example.com");
        assert_eq!(app.submit(&form).await.status(), StatusCode::FORBIDDEN);
    }

    async fn a_cross_site_post_is_refused_even_with_a_valid_token() {
        let app = spawn_app().await;
        let form = app
            .page("/sign-up")
            .await
            .form("/sign-up")
            .set("email_address", "x@example.com");
        let cross_origin = app
            .client
            .post(app.url("/sign-up"))
            .header("Origin", "https://evil.example")
            .form(&form.fields)
            .send()
            .await
            .unwrap();
        assert_eq!(cross_origin.status(), StatusCode::FORBIDDEN);
        let cross_site = app
            .client
            .post(app.url("/sign-up"))
            .header("Sec-Fetch-Site", "cross-site")
            .form(&form.fields)
            .send()
            .await
            .unwrap();
        assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0);
        // The same form from the same origin goes through.
        assert_eq!(app.submit(&form).await.status(), StatusCode::SEE_OTHER);
    }

    async fn a_code_post_without_the_token_is_refused_and_uses_no_try() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "c@example.com").await;
        let code = app.smtp.wait_for("c@example.com", 1).await.code();
        let form = app
            .page(&verify)
            .await
            .form(&verify)
            .set("code", &code)
            .set("csrf_token", "forged");
        assert_eq!(app.submit(&form).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count("SELECT attempts FROM verifications").await, 0);
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 0);
    }

    async fn sign_out_needs_a_post_with_the_session_token() {
        let app = spawn_app().await;
        app.sign_up("out@example.com").await;

        let get = app.get("/sign-out").await;
        assert_eq!(get.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&get), "/user");
        let form = app
            .page("/user")
            .await
            .form("/sign-out")
            .set("csrf_token", "nope");
        assert_eq!(app.submit(&form).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            app.page("/user").await.status,
            StatusCode::OK,
            "still signed in"
        );
    }

    async fn another_browser_cannot_open_or_complete_someone_elses_flow() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "mine@example.com").await;
        let code = app.smtp.wait_for("mine@example.com", 1).await.code();
        let other = browser();
        let page = app.page_with(&other, &verify).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
        // Even with the victim's form token, a post from another browser is refused.
        let form = app.page(&verify).await.form(&verify).set("code", &code);
        let resp = app.submit_with(&other, &form).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let _ = TestApp::into_page(resp).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 0);
    }
}

crate::backend_tests! {
    async fn an_opaque_null_origin_is_accepted_only_when_the_browser_vouches_same_origin() {
        let app = spawn_app().await;
        let form = app.page("/sign-up").await.form("/sign-up").set("email_address", "null@example.com");
        let post = |headers: &'static [(&'static str, &'static str)]| {
            let mut req = app.client.post(app.url("/sign-up")).form(&form.fields);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send()
        };
        assert_eq!(post(&[("Origin", "null")]).await.unwrap().status(), StatusCode::FORBIDDEN);
        assert_eq!(post(&[("Origin", "null"), ("Sec-Fetch-Site", "same-site")]).await.unwrap().status(), StatusCode::FORBIDDEN);
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0);
        let ok = post(&[("Origin", "null"), ("Sec-Fetch-Site", "same-origin")]).await.unwrap();
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    }
}
