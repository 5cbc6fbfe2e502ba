use reqwest::StatusCode;

use crate::helpers::{location, spawn_app};

crate::backend_tests! {
    async fn a_new_person_signs_up_with_an_emailed_code_and_lands_on_their_profile() {
        let app = spawn_app().await;

        let page = app.page("/sign-up").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.contains("Email address"));
        let resp = app
            .submit_identifier("/sign-up", "Jane.Doe@Example.COM")
            .await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let verify = location(&resp);
        assert!(verify.starts_with("/sign-up/verify/flw_"), "{verify}");

        let code_page = app.page(&verify).await;
        assert!(code_page.contains("Check your email"));
        assert!(code_page.contains("Jane.Doe@example.com"));
        assert!(code_page.html.contains(r#"autocomplete="one-time-code""#));
        assert!(code_page.html.contains(r#"inputmode="numeric""#));

        let mail = app.smtp.wait_for("Jane.Doe@example.com", 1).await;
        assert_eq!(mail.subject(), "Your Acme verification code");
        assert!(
            mail.data.contains("text/plain") && mail.data.contains("text/html"),
            "multipart mail expected"
        );
        let resp = app.enter_code(&verify, &mail.code()).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), "/user");

        let profile = app.page("/user").await;
        assert_eq!(profile.status, StatusCode::OK);
        assert!(profile.contains("Jane.Doe@example.com"), "{}", profile.html);
        assert!(profile.contains("Member since"));
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
        assert_eq!(
            app.count("SELECT COUNT(*) FROM identifiers WHERE verified_at IS NOT NULL AND canonical = 'jane.doe@example.com'").await,
            1
        );
    }

    async fn signing_up_with_a_taken_address_offers_sign_in_and_sends_nothing() {
        let app = spawn_app().await;
        app.create_account("taken@example.com").await;

        let resp = app.submit_identifier("/sign-up", "TAKEN@example.com").await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = crate::helpers::TestApp::into_page(resp).await;
        assert!(page.contains("already exists"), "{}", page.html);
        let sign_in = page.link("Sign in instead");
        assert!(
            sign_in.starts_with("/sign-in?email_address=TAKEN%40example.com"),
            "{sign_in}"
        );
        assert_eq!(
            page.input_value("email_address").as_deref(),
            Some("TAKEN@example.com")
        );
        app.smtp.assert_count_stays("taken@example.com", 1).await;
    }

    async fn edit_goes_back_to_the_first_step_with_the_address_kept() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "typo@exmaple.com").await;
        let page = app.page(&verify).await;
        let edit = page.link("Edit");
        let first = app.page(&edit).await;
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(
            first.input_value("email_address").as_deref(),
            Some("typo@exmaple.com")
        );
    }

    async fn an_idn_address_is_accepted_and_mail_goes_to_its_ascii_form() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "anna@Bücher.example").await;
        let mail = app.smtp.wait_for("anna@xn--bcher-kva.example", 1).await;
        assert_eq!(
            app.enter_code(&verify, &mail.code()).await.status(),
            StatusCode::SEE_OTHER
        );
        let profile = app.page("/user").await;
        assert!(profile.contains("anna@bücher.example"), "{}", profile.html);
    }
}
