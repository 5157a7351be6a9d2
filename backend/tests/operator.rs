//! What an operator relies on, through the real server: `/metrics` only on its own
//! listener.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Harness};

on_both_databases!(metrics_are_not_on_the_public_port);

/// Regression: the counters moved with each upload and were readable by anyone on the
/// public port (privacy issue, item 1). The public port now answers 404 for `/metrics`, as
/// for any unknown route, and the metrics listener serves them.
async fn metrics_are_not_on_the_public_port(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let public = h
        .client
        .get(format!("{}/metrics", h.url))
        .send()
        .await
        .unwrap();
    common::assert_error(public, 404, "not_found").await;
    let server = h.server.as_ref().unwrap();
    assert_ne!(server.metrics_addr, server.addr);
    assert!(server.metrics_addr.ip().is_loopback());
    let scraped = h.client.get(server.metrics_url()).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("dp3t_http_request_duration_seconds"));
    // The metrics listener serves nothing else.
    let other = h
        .client
        .get(format!("http://{}/healthz", server.metrics_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    h.finish().await;
}
