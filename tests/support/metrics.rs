//! Reading Prometheus text from an admin listener.

use std::net::SocketAddr;

use http::StatusCode;

use super::get;

/// `GET /metrics` on the admin listener at `admin`, which must answer 200.
pub(crate) async fn scrape(admin: SocketAddr) -> String {
    let (status, _, body) = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(body.to_vec()).unwrap()
}

/// `GET /metrics` at `admin`, or `None` while nothing answers there (a process starting).
pub(crate) async fn try_scrape(admin: SocketAddr) -> Option<String> {
    use http_body_util::BodyExt;
    let uri = format!("http://{admin}/metrics").parse().unwrap();
    let response = super::client().get(uri).await.ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8(body.to_vec()).unwrap())
}

/// Reads one sample's value from Prometheus text, e.g. `hubgate_requests_total{outcome="forwarded"}`.
pub(crate) fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every sample whose series starts with `prefix`, e.g. `hubgate_queue_depth{`.
pub(crate) fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

/// The value of the sample of `name` whose labels include every pair of `labels`
/// (label order in the exposition is the encoder's business, not the test's).
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.starts_with(name) && matches!(line.as_bytes().get(name.len()), Some(b'{' | b' '))
        })
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
