use reqwest::StatusCode;

use crate::helpers::{location, spawn_app, spawn_app_with};

crate::backend_tests! {
    async fn the_root_sends_visitors_to_sign_in_or_their_profile() {
        let app = spawn_app().await;
        assert_eq!(location(&app.get("/").await), "/sign-in");
        app.sign_up("root@example.com").await;
        assert_eq!(location(&app.get("/").await), "/user");
    }

    async fn an_unknown_path_gets_a_styled_404() {
        let app = spawn_app().await;
        let resp = app.get("/no/such/page").await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let body = resp.text().await.unwrap();
        assert!(
            body.contains("Page not found") && body.contains("/static/style.css"),
            "{body}"
        );
        assert!(
            body.contains("Request id:"),
            "error pages name the request id"
        );
    }

    async fn every_page_carries_the_security_headers() {
        let app = spawn_app().await;
        for path in [
            "/sign-in",
            "/sign-up",
            "/no/such/page",
            "/sign-in/verify/nonsense",
        ] {
            let resp = app.get(path).await;
            let h = resp.headers();
            let csp = h["content-security-policy"].to_str().unwrap();
            for directive in [
                "default-src 'self'",
                "frame-ancestors 'none'",
                "object-src 'none'",
                "base-uri 'none'",
                "form-action 'self' https://app.example.com",
            ] {
                assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
            }
            assert!(!csp.contains("unsafe-inline"));
            assert_eq!(h["x-frame-options"], "DENY", "{path}");
            assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
            assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin", "{path}");
            assert_eq!(h["cache-control"], "no-store", "{path}");
        }
    }

    async fn the_stylesheet_and_script_are_served_from_the_server_itself() {
        let app = spawn_app().await;
        let css = app.get("/static/style.css").await;
        assert_eq!(css.status(), StatusCode::OK);
        assert!(css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css"));
        assert_eq!(app.get("/static/flow.js").await.status(), StatusCode::OK);
        assert_eq!(
            app.get("/static/missing.css").await.status(),
            StatusCode::NOT_FOUND
        );
        let page = app.page("/sign-in").await;
        assert!(
            !page.html.contains("https://"),
            "no CDN or external asset on the page"
        );
    }

    async fn health_and_readiness_probes_answer() {
        let app = spawn_app().await;
        assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
        let ready = app.get("/readyz").await;
        assert_eq!(ready.status(), StatusCode::OK);
        assert_eq!(
            ready.json::<serde_json::Value>().await.unwrap()["status"],
            "ready"
        );
    }

    async fn the_dev_outbox_exists_only_in_dev_mode() {
        let app = spawn_app().await;
        assert_eq!(app.get("/dev/outbox").await.status(), StatusCode::NOT_FOUND);

        let dev = spawn_app_with(|c| {
            c.smtp_url = None;
            c.dev_mode = Some(true);
        })
        .await;
        let verify = dev.start_flow("/sign-up", "dev@example.com").await;
        let code = crate::helpers::eventually("the dev outbox shows the sent code", || async {
            let page = dev.page("/dev/outbox").await;
            assert_eq!(page.status, StatusCode::OK);
            let code = page
                .text()
                .split_whitespace()
                .find(|w| w.len() == 6 && w.chars().all(|c| c.is_ascii_digit()))
                .map(str::to_string)?;
            page.contains("sent").then_some(code)
        })
        .await;
        // The same instance behind a reverse proxy on this machine: whatever the proxy forwards
        // (a forwarding header, or the public host name) never sees the outbox.
        for path in ["/dev/outbox", "/dev/settings"] {
            assert_eq!(dev.page(path).await.status, StatusCode::OK, "{path}");
            for (name, value) in [
                ("X-Forwarded-For", "203.0.113.9"),
                ("Forwarded", "for=203.0.113.9"),
                ("X-Real-IP", "203.0.113.9"),
                ("Host", "accounts.example.com"),
            ] {
                let resp = dev
                    .client
                    .get(dev.url(path))
                    .header(name, value)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path} with {name}");
                assert!(!resp.text().await.unwrap().contains(&code), "{path} with {name}");
            }
        }
        assert_eq!(
            dev.enter_code(&verify, &code).await.status(),
            StatusCode::SEE_OTHER
        );
    }

    async fn pages_fit_a_small_screen_and_work_without_javascript() {
        let app = spawn_app().await;
        let page = app.page("/sign-up").await;
        assert!(page
            .html
            .contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#));
        assert!(!page.html.contains("<script>"), "no inline script");
        let form = page.form("/sign-up");
        assert!(
            form.fields.iter().any(|(n, _)| n == "csrf_token"),
            "plain HTML form with its token"
        );
    }
}
