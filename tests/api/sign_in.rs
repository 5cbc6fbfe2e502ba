use reqwest::StatusCode;

use crate::helpers::{location, spawn_app, TestApp};

crate::backend_tests! {
    async fn an_existing_user_signs_in_with_a_code_sent_to_their_address() {
        let app = spawn_app().await;
        app.create_account("sam@example.com").await;

        let verify = app.start_flow("/sign-in", "Sam@EXAMPLE.com").await;
        assert!(verify.starts_with("/sign-in/verify/flw_"));
        let mail = app.smtp.wait_for("sam@example.com", 2).await;
        let resp = app.enter_code(&verify, &mail.code()).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), "/user");
        let profile = app.page("/user").await;
        assert!(profile.contains("sam@example.com"));
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    }

    async fn an_unknown_address_is_told_no_account_exists_with_a_sign_up_link_keeping_it() {
        let app = spawn_app().await;
        let resp = app
            .submit_identifier("/sign-in", "nobody@example.com")
            .await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = TestApp::into_page(resp).await;
        assert!(page.contains("couldn't find an account"), "{}", page.html);
        let sign_up = page.link("Create an account with this address");
        let form_page = app.page(&sign_up).await;
        assert_eq!(
            form_page.input_value("email_address").as_deref(),
            Some("nobody@example.com")
        );
        app.smtp.assert_count_stays("nobody@example.com", 0).await;
    }

    async fn the_code_goes_to_the_stored_address_never_to_a_lookalike_typed_one() {
        let app = spawn_app().await;
        app.create_account("mike@example.org").await;
        // A dotless ı is a different address: no account, and nothing is sent to either.
        let resp = app.submit_identifier("/sign-in", "mıke@example.org").await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // Case variants reach the account, and the code goes to the stored spelling.
        let verify = app.start_flow("/sign-in", "MIKE@example.org").await;
        let mail = app.smtp.wait_for("mike@example.org", 2).await;
        assert_eq!(mail.to, vec!["mike@example.org".to_string()]);
        assert_eq!(
            app.enter_code(&verify, &mail.code()).await.status(),
            StatusCode::SEE_OTHER
        );
        assert_eq!(app.smtp.all().len(), 2);
    }

    async fn a_signed_in_visitor_opening_sign_in_goes_to_their_profile() {
        let app = spawn_app().await;
        app.sign_up("here@example.com").await;
        let resp = app.get("/sign-in").await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), "/user");
    }
}
