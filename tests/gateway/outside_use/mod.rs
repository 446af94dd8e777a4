//! Sharing a budget with clients hubgate cannot see, and holding slots for as long as the
//! network and HubSpot's queue really delay calls: callers saturating hubgate in front of
//! the simulator, whose outside consumers, transit latency and arrival queue make the
//! unkind conditions, measured window by window at the simulator.

mod delay;
mod patterns;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;

/// One owner's counts at the simulator at one instant.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// hubgate's calls HubSpot accepted.
    ours_accepted: u64,
    /// hubgate's calls that reached HubSpot.
    ours_sent: u64,
    /// hubgate's calls HubSpot refused with 429.
    ours_rejected: u64,
    /// The outside client's calls HubSpot accepted.
    outside_accepted: u64,
}

/// The simulator's counts of owner (`app_id`, `portal_id`), sampled every 20 ms until
/// dropped, so any stretch of the run can be judged window by window.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(sim: Arc<Hubspot>, app_id: u64, portal_id: u64) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let stats = sim.stats();
                let Some(o) = stats.owner(app_id, portal_id) else {
                    continue;
                };
                let outside_accepted = o.outside - o.outside_rate_limited;
                let rejected = o.rate_limited.ten_secondly_rolling;
                out.lock().unwrap().push(Sample {
                    at: Instant::now(),
                    ours_accepted: o.accepted - outside_accepted,
                    ours_sent: o.arrivals - o.outside,
                    ours_rejected: rejected,
                    outside_accepted,
                });
            }
        });
        Sampler { samples, task }
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the windows between `from` and `to` (measured from `start`) held.
#[derive(Debug)]
struct Judged {
    /// hubgate's 429s over its calls that reached HubSpot.
    share_429: f64,
    /// hubgate's accepted calls per window over what the outside client left (the limit
    /// less its accepted calls), summed over the windows sampled.
    use_of_left: f64,
    /// hubgate's and the outside client's accepted calls per window over the limit, mean.
    fill: f64,
    sent: u64,
    rejected: u64,
}

/// Judges every sample in [`from`, `to`] against the sample one window earlier.
fn judge(
    samples: &[Sample],
    start: Instant,
    from: Duration,
    to: Duration,
    window: Duration,
    limit: u64,
) -> Judged {
    let (mut ours, mut left, mut fill, mut n) = (0.0, 0.0, 0.0, 0.0);
    let mut first: Option<Sample> = None;
    let mut last: Option<Sample> = None;
    for (i, s) in samples.iter().enumerate() {
        let since = s.at.saturating_duration_since(start);
        if since < from || since > to {
            continue;
        }
        let Some(before) = samples[..i]
            .iter()
            .rev()
            .find(|b| s.at.saturating_duration_since(b.at) >= window)
        else {
            continue;
        };
        // Scale to exactly one window: the samples are 20 ms apart, not a window apart.
        let scale = window.as_secs_f64() / s.at.duration_since(before.at).as_secs_f64();
        let ours_w = (s.ours_accepted - before.ours_accepted) as f64 * scale;
        let outside_w = (s.outside_accepted - before.outside_accepted) as f64 * scale;
        ours += ours_w;
        left += (limit as f64 - outside_w).max(0.0);
        fill += (ours_w + outside_w) / limit as f64;
        n += 1.0;
        first.get_or_insert(*before);
        last = Some(*s);
    }
    let (first, last) = (first.expect("samples"), last.expect("samples"));
    let sent = last.ours_sent - first.ours_sent;
    let rejected = last.ours_rejected - first.ours_rejected;
    Judged {
        share_429: rejected as f64 / sent.max(1) as f64,
        use_of_left: ours / left,
        fill: fill / n,
        sent,
        rejected,
    }
}

/// `callers` loops of contacts GETs with `token` through `gateway` until `until`; panics
/// on any answer but 200 (callers must see no error).
fn saturate(
    gateway: &Arc<Gateway>,
    token: &'static str,
    callers: usize,
    until: Instant,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..callers)
        .map(|_| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let mut answered = 0;
                while Instant::now() < until {
                    let request = Request::get(gateway.url("/crm/v3/objects/contacts"))
                        .header("authorization", format!("Bearer {token}"))
                        .header("x-hubgate-deadline-ms", "60000")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let (status, _, body) = send(request).await;
                    assert_eq!(status, StatusCode::OK, "{body:?}");
                    answered += 1;
                }
                answered
            })
        })
        .collect()
}

async fn join(callers: Vec<tokio::task::JoinHandle<u64>>) -> u64 {
    let mut answered = 0;
    for caller in callers {
        answered += caller.await.unwrap();
    }
    answered
}

/// The simulator's world for these tests: `owners` private apps in their own portals,
/// `pat-na1-outside-<i>` for app `i` in portal `100 + i`.
fn world(limit: u64, window: Duration, owners: u64) -> String {
    let mut toml = format!(
        "burst_limit = {limit}\nburst_window_ms = {}\ndaily_limit = 0\n",
        window.as_millis()
    );
    for i in 1..=owners {
        toml.push_str(&format!(
            "[[tokens]]\ntoken = \"pat-na1-outside-{i}\"\napp_id = {i}\nportal_id = {}\n",
            100 + i
        ));
    }
    toml
}

/// The tokens `world` makes, as `'static` strings for the caller tasks.
const TOKENS: [&str; 6] = [
    "pat-na1-outside-1",
    "pat-na1-outside-2",
    "pat-na1-outside-3",
    "pat-na1-outside-4",
    "pat-na1-outside-5",
    "pat-na1-outside-6",
];
