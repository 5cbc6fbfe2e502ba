//! Load shedding: past `max_in_flight_requests`, a request is answered 503 with Retry-After at
//! once (pages and the JSON API), with the security headers, and the limit frees itself.

use tokio::io::AsyncWriteExt;

use crate::helpers::*;

/// Holds one request in flight: a form post whose body never finishes arriving.
async fn hold_a_request(app: &TestApp) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /sign-in HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail_address=",
        )
        .await
        .unwrap();
    stream
}

crate::backend_tests! {
    async fn beyond_the_in_flight_limit_requests_get_a_503_with_retry_after_at_once() {
        let app = spawn_app_with(|c| c.max_in_flight_requests = 1).await;
        let client = browser();
        assert_eq!(client.get(app.url("/sign-in")).send().await.unwrap().status(), 200);

        let held = hold_a_request(&app).await;
        // The held request is admitted once its head is read; from then on the limit is reached.
        until("the held request is admitted", || async { app.in_flight.count() == 1 }).await;
        let page = client.get(app.url("/sign-in")).send().await.unwrap();
        assert_eq!(page.status(), 503, "a request beyond the limit is shed");
        assert_eq!(page.headers()["retry-after"], "1");
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        assert!(page.headers().contains_key("content-security-policy"));
        assert!(page.text().await.unwrap().contains("Nothing was lost"));

        let api = client
            .post(app.url("/v1/client/sign_ins"))
            .header("Origin", "https://app.example.com")
            .json(&serde_json::json!({"identifier": "someone@example.com"}))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 503);
        assert_eq!(api.headers()["retry-after"], "1");
        let body: serde_json::Value = api.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "service_unavailable");
        assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0, "a shed request does nothing");

        // The held request ends (its client went away): its place is free again.
        drop(held);
        until("the held request ends", || async { app.in_flight.count() == 0 }).await;
        let page = client.get(app.url("/sign-in")).send().await.unwrap();
        assert_eq!(page.status(), 200, "the limit frees itself when requests finish");
    }

    async fn without_a_limit_many_requests_at_once_are_all_served() {
        let app = spawn_app_with(|c| c.max_in_flight_requests = 0).await;
        let _held = hold_a_request(&app).await;
        let client = browser();
        let all = futures_util::future::join_all(
            (0..32).map(|_| client.get(app.url("/sign-in")).send()),
        )
        .await;
        assert!(all.into_iter().all(|r| r.unwrap().status() == 200));
    }
}
