use reqwest::StatusCode;

use crate::helpers::{location, spawn_app, TestApp};

async fn land_after_sign_up(app: &TestApp, email: &str, redirect_url: &str) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    s.append_pair("redirect_url", redirect_url);
    let start = format!("/sign-up?{}", s.finish());
    let resp = app.submit_identifier(&start, email).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let verify = location(&resp);
    let code = app.smtp.wait_for(email, 1).await.code();
    let resp = app.enter_code(&verify, &code).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    location(&resp)
}

crate::backend_tests! {
    async fn a_local_path_redirect_is_followed_after_sign_up() {
        let app = spawn_app().await;
        assert_eq!(
            land_after_sign_up(&app, "p@example.com", "/user?tab=profile").await,
            "/user?tab=profile"
        );
    }

    async fn an_allowed_origin_redirect_is_followed() {
        let app = spawn_app().await;
        assert_eq!(
            land_after_sign_up(&app, "o@example.com", "https://app.example.com/welcome").await,
            "https://app.example.com/welcome"
        );
    }

    async fn every_open_redirect_form_falls_back_to_the_profile() {
        let app = spawn_app().await;
        let vectors = [
            "https://evil.test/",
            "//evil.test",
            "/\\evil.test",
            "\\/\\/evil.test",
            "https:evil.test",
            "https://app.example.com@evil.test",
            "https://app.example.com.evil.test",
            "https://evilexample.com",
            "http://app.example.com",
            "javascript:alert(1)",
            "data:text/html,x",
            "%2F%2Fevil.test",
            "/%2F/evil.test",
            "/user\r\nSet-Cookie: a=b",
        ];
        for (i, v) in vectors.iter().enumerate() {
            let email = format!("r{i}@example.com");
            let landed = land_after_sign_up(&app, &email, v).await;
            assert_eq!(landed, "/user", "{v:?} must not be followed");
            // Sign out so the next sign-up starts signed out.
            let page = app.page("/user").await;
            if page.status == StatusCode::OK {
                let form = page.form("/sign-out");
                app.submit(&form).await;
            }
        }
    }

    async fn a_forged_redirect_in_the_form_is_validated_again() {
        let app = spawn_app().await;
        let form = app
            .page("/sign-up")
            .await
            .form("/sign-up")
            .set("email_address", "forged@example.com")
            .set("redirect_url", "https://evil.test/");
        let resp = app.submit(&form).await;
        let verify = location(&resp);
        let code = app.smtp.wait_for("forged@example.com", 1).await.code();
        assert_eq!(location(&app.enter_code(&verify, &code).await), "/user");
    }
}
