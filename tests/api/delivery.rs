use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{spawn_app, spawn_app_on, until, TestSmtp};

async fn wait_until(app: &crate::helpers::TestApp, sql: &str) {
    until(&format!("a row counted by {sql}"), || async {
        app.count(sql).await > 0
    })
    .await;
}

/// Waits for `sql` to count a row while moving the clock to each retry as it is queued (retries
/// are scheduled on the injected clock).
async fn wait_until_retried(app: &crate::helpers::TestApp, sql: &str) {
    until(&format!("a row counted by {sql}"), || async {
        if app.count(sql).await > 0 {
            return true;
        }
        app.make_retries_due().await;
        false
    })
    .await;
}

crate::backend_tests! {
    async fn a_code_is_delivered_once_smtp_comes_back_after_being_down() {
        let smtp = TestSmtp::reserve();
        let app = spawn_app_on(smtp.clone(), |_| {}).await;

        let verify = app.start_flow("/sign-up", "patient@example.com").await;
        assert_eq!(
            app.page(&verify).await.status,
            StatusCode::OK,
            "the code page shows at once"
        );
        wait_until(&app, "SELECT COUNT(*) FROM outbox WHERE attempts >= 1 AND status = 'pending' AND last_error IS NOT NULL").await;

        smtp.listen();
        let code = smtp.wait_for_retried(&app, "patient@example.com", 1).await.code();
        smtp.assert_count_stays("patient@example.com", 1).await;
        assert_eq!(
            app.enter_code(&verify, &code).await.status(),
            StatusCode::SEE_OTHER
        );
    }

    async fn a_message_is_dropped_rather_than_delivered_after_its_code_expired() {
        let smtp = TestSmtp::reserve();
        let app = spawn_app_on(smtp.clone(), |_| {}).await;
        app.start_flow("/sign-up", "toolate@example.com").await;
        wait_until(&app, "SELECT COUNT(*) FROM outbox WHERE attempts >= 1").await;

        app.clock.advance(Duration::from_secs(601));
        smtp.listen();
        wait_until_retried(
            &app,
            "SELECT COUNT(*) FROM outbox WHERE status = 'expired' AND payload IS NULL",
        )
        .await;
        smtp.assert_count_stays("toolate@example.com", 0).await;
    }

    async fn a_flow_continues_after_the_server_restarts() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "restart@example.com").await;
        let code = app.smtp.wait_for("restart@example.com", 1).await.code();

        let app = app.restart().await;
        let page = app.page(&verify).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        assert_eq!(
            app.enter_code(&verify, &code).await.status(),
            StatusCode::SEE_OTHER
        );
        assert_eq!(app.page("/user").await.status, StatusCode::OK);
    }

    async fn undelivered_messages_survive_a_restart_and_are_sent_once() {
        let smtp = TestSmtp::reserve();
        let app = spawn_app_on(smtp.clone(), |_| {}).await;
        app.start_flow("/sign-up", "queued@example.com").await;
        wait_until(&app, "SELECT COUNT(*) FROM outbox WHERE attempts >= 1").await;
        let app = app.restart().await;
        smtp.listen();
        smtp.wait_for_retried(&app, "queued@example.com", 1).await;
        smtp.assert_count_stays("queued@example.com", 1).await;
    }

    async fn a_wrong_try_before_a_restart_still_counts_after_it() {
        let app = spawn_app().await;
        let verify = app.start_flow("/sign-up", "count@example.com").await;
        let code = app.smtp.wait_for("count@example.com", 1).await.code();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        app.enter_code(&verify, wrong).await;
        app.enter_code(&verify, wrong).await;
        let app = app.restart().await;
        let resp = app.enter_code(&verify, wrong).await;
        let page = crate::helpers::TestApp::into_page(resp).await;
        assert!(page.contains("Too many incorrect tries"), "{}", page.html);
    }
}
