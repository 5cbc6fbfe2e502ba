use std::time::Duration;

use crate::helpers::spawn_app_with;

async fn wait_for_zero(app: &crate::helpers::TestApp, sql: &str) {
    crate::helpers::until(&format!("rows purged: {sql}"), || async {
        app.count(sql).await == 0
    })
    .await;
}

crate::backend_tests! {
    async fn expired_sessions_flows_and_old_messages_are_deleted() {
        let app = spawn_app_with(|c| c.janitor_interval_ms = 50).await;
        app.create_account("old@example.com").await;
        app.start_flow("/sign-in", "old@example.com").await;
        app.smtp.wait_for("old@example.com", 2).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 2);

        // An hour later the unfinished flow has expired, but its page still says so for a day.
        app.clock.advance(Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 2, "expired flows are kept a day for the expired page");
        assert_eq!(app.count("SELECT COUNT(*) FROM sessions").await, 1);

        app.clock.advance(Duration::from_secs(8 * 24 * 3600));
        wait_for_zero(&app, "SELECT COUNT(*) FROM sessions").await;
        wait_for_zero(&app, "SELECT COUNT(*) FROM flows").await;
        wait_for_zero(&app, "SELECT COUNT(*) FROM verifications").await;
        wait_for_zero(&app, "SELECT COUNT(*) FROM outbox").await;
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1, "accounts are never purged");
    }

    async fn undelivered_messages_and_live_sessions_are_kept() {
        let smtp = crate::helpers::TestSmtp::reserve();
        let app = crate::helpers::spawn_app_on(smtp.clone(), |c| c.janitor_interval_ms = 50).await;
        app.start_flow("/sign-up", "keep@example.com").await;
        app.clock.advance(Duration::from_secs(30 * 60));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 1, "a queued message is never purged");
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 1);
    }
}
