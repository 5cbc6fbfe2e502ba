use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{browser, location, spawn_app, spawn_app_with, TestApp};

/// `path?redirect_url=target`.
fn with_redirect(path: &str, target: &str) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    s.append_pair("redirect_url", target);
    format!("{path}?{}", s.finish())
}

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

    async fn a_wildcard_origin_allows_its_subdomains_and_nothing_that_only_looks_like_them() {
        let app = spawn_app_with(|raw| {
            raw.allowed_redirect_origins = vec!["https://*.example.com".into()];
        })
        .await;
        assert_eq!(land_after_sign_up(&app, "w1@example.com", "https://a.b.example.com/x").await, "https://a.b.example.com/x");
        for (i, v) in ["https://example.com.evil.test/", "https://evilexample.com/", "https://example.com/", "http://app.example.com/", "https://app.example.com:8443/"].iter().enumerate() {
            let other = browser();
            let resp = app.submit_identifier_with(&other, &with_redirect("/sign-up", v), &format!("w{i}x@example.com")).await;
            let code = app.smtp.wait_for(&format!("w{i}x@example.com"), 1).await.code();
            let resp = app.enter_code_with(&other, &location(&resp), &code).await;
            assert_eq!(location(&resp), "/user", "{v} must not be followed");
        }
    }

    async fn without_a_redirect_url_people_land_on_the_configured_after_urls() {
        let app = spawn_app_with(|raw| {
            raw.after_sign_up_url = "https://app.example.com/welcome".into();
            raw.after_sign_in_url = "/user?from=sign-in".into();
            raw.after_sign_out_url = "https://app.example.com/bye".into();
        })
        .await;
        let verify = app.start_flow("/sign-up", "after@example.com").await;
        let code = app.smtp.wait_for("after@example.com", 1).await.code();
        assert_eq!(location(&app.enter_code(&verify, &code).await), "https://app.example.com/welcome");
        // Signed in: the sign-in and sign-up pages send the person straight on.
        assert_eq!(location(&app.get("/sign-up").await), "https://app.example.com/welcome");
        assert_eq!(location(&app.get("/sign-in").await), "/user?from=sign-in");
        assert_eq!(location(&app.get(&with_redirect("/sign-in", "/user?x=1")).await), "/user?x=1");
        let form = app.page("/user").await.form("/sign-out");
        assert_eq!(location(&app.submit(&form).await), "https://app.example.com/bye");
        let resp = app.sign_in("after@example.com").await;
        assert_eq!(location(&resp), "/user?from=sign-in");
    }

    async fn the_redirect_survives_wrong_codes_resends_edits_and_the_switch_to_sign_up() {
        let app = spawn_app().await;
        let target = "https://app.example.com/deep/link?x=1";
        let start = with_redirect("/sign-in", target);
        let page = app.page(&start).await;
        let switch = page.link("Sign up");
        assert_eq!(switch, with_redirect("/sign-up", target), "the switch to sign-up keeps it");
        let verify = app.start_flow(&switch, "carried@example.com").await;
        let first = app.smtp.wait_for("carried@example.com", 1).await.code();
        // "Edit": back to the identifier step of this flow, which still carries the target.
        let edit = app.page(&verify).await;
        let edit_page = app.page(&edit.links().into_iter().find(|(_, h)| h.contains("?flow=")).expect("an edit link").1).await;
        assert_eq!(edit_page.input_value("redirect_url").as_deref(), Some(target));
        // A wrong code, then a resend, then the new code.
        let wrong = if first == "000000" { "111111" } else { "000000" };
        assert_eq!(app.enter_code(&verify, wrong).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
        app.clock.advance(Duration::from_secs(30));
        app.resend(&verify).await;
        let code = app.smtp.wait_for("carried@example.com", 2).await.code();
        assert_eq!(location(&app.enter_code(&verify, &code).await), target);
    }

    async fn an_expired_flow_starts_again_with_the_same_redirect() {
        let app = spawn_app().await;
        let target = "/user?came=back";
        let verify = app.start_flow(&with_redirect("/sign-up", target), "late@example.com").await;
        app.smtp.wait_for("late@example.com", 1).await;
        app.clock.advance(Duration::from_secs(3600));
        let page = app.page(&verify).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
        assert_eq!(page.link("Start again"), with_redirect("/sign-up", target));
    }

    async fn the_profile_page_takes_a_redirect_url_as_its_way_back_and_for_signing_out() {
        let app = spawn_app().await;
        let target = "https://app.example.com/settings";
        // Signed out: sign in first, then back to the profile with the same way back.
        let resp = app.get(&with_redirect("/user", target)).await;
        assert_eq!(location(&resp), with_redirect("/sign-in", &with_redirect("/user", target)));
        app.create_account("profile@example.com").await;
        app.sign_in("profile@example.com").await;
        let page = app.page(&with_redirect("/user", target)).await;
        assert_eq!(page.link("Continue to app.example.com"), target);
        let form = page.form("/sign-out");
        assert_eq!(location(&app.submit(&form).await), target);
        // An unsafe one is dropped: no way back, and signing out lands on the default.
        app.sign_in("profile@example.com").await;
        let page = app.page(&with_redirect("/user", "https://evil.test/")).await;
        assert!(!page.html.contains("evil.test"), "{}", page.html);
        assert_eq!(location(&app.submit(&page.form("/sign-out")).await), "/sign-in");
    }

    async fn prefilled_values_are_validated_and_a_bad_one_is_shown_with_its_error() {
        let app = spawn_app().await;
        let page = app.page("/sign-up?email_address=jane%40example.com").await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.input_value("email_address").as_deref(), Some("jane@example.com"));
        assert!(!page.html.contains("aria-invalid=\"true\""), "{}", page.html);
        for path in ["/sign-up?email_address=not-an-address", "/sign-in?identifier=jane%40", "/sign-in?email_address=a%0d%0ab%40example.com"] {
            let page = app.page(path).await;
            assert_eq!(page.status, StatusCode::OK, "{path}");
            assert!(page.html.contains("aria-invalid=\"true\""), "{path}: the field is marked: {}", page.html);
            assert!(page.html.contains("role=\"alert\"") || page.html.contains("class=\"field-error\""), "{path}: an error is shown: {}", page.html);
        }
        assert_eq!(app.page("/sign-in?identifier=jane%40").await.input_value("email_address").as_deref(), Some("jane@"), "shown in the one sign-in field as given");
    }
}
