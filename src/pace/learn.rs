//! What HubSpot's answers teach about the budgets a call spent: its `X-HubSpot-RateLimit-*`
//! headers (HubSpot's own count), a 429's policy (which budget it found spent), and the
//! moment it came back, which bounds when HubSpot counted the call.

use std::sync::Arc;
use std::time::Duration;

use hubgate_engine::{BudgetKey, Tick};
use smallvec::SmallVec;

use crate::hubspot::{Keys, Policy, RateLimitHeaders};
use crate::store::{BudgetStore, Lesson};

/// The lessons of one answer; a call spends at most three budgets, so they live inline.
pub(crate) type Lessons = SmallVec<[Lesson; 4]>;

/// Whether `key` is a rolling window, whose slots are timed (a daily budget only counts).
fn is_window(key: BudgetKey) -> bool {
    !matches!(key, BudgetKey::Daily { .. })
}

/// Where one attempt's sends stand in the logs of the windows it spends: admitted at
/// `admitted`, and held at `held_at` since the latest bound taken while it was on its way
/// (its admission until then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OnItsWay {
    pub(crate) admitted: Tick,
    pub(crate) held_at: Tick,
}

impl OnItsWay {
    pub(crate) fn admitted(admitted: Tick) -> OnItsWay {
        OnItsWay {
            admitted,
            held_at: admitted,
        }
    }
}

/// What any answer teaches, 429s included. It came back at `answered`, so HubSpot counted
/// the call no later than that: each window's send moves there, and the slot stays held
/// until HubSpot has surely let it go, whatever the delay was (a cold connection's
/// handshakes, the network, HubSpot's own queue). `-Max`/`-Remaining` and the daily pair
/// correct the local view of the budgets the call spent; absent headers change nothing,
/// and nothing here raises a limit.
pub(crate) fn from_answer(
    headers: &http::HeaderMap,
    answered: Tick,
    keys: &Keys,
    sent: OnItsWay,
) -> Lessons {
    let reported = RateLimitHeaders::parse(headers);
    let mut lessons = arrived_by(keys, sent, answered);
    let admitted = sent.admitted;
    for key in keys.iter().copied() {
        match key {
            BudgetKey::Burst { .. } | BudgetKey::Unidentified { .. } => {
                if let (Some(max), Some(remaining)) = (reported.max, reported.remaining) {
                    lessons.push(Lesson::Usage {
                        key,
                        hub_used: max.saturating_sub(remaining),
                        max,
                        admitted,
                    });
                }
            }
            BudgetKey::Daily { .. } => {
                if let Some(remaining) = reported.daily_remaining {
                    lessons.push(Lesson::Remaining { key, remaining });
                }
            }
            BudgetKey::Search { .. } | BudgetKey::Global | BudgetKey::Token => {}
        }
    }
    lessons
}

/// What a call teaches that HubSpot counted no later than `by`, if at all: its answer came
/// then, or it failed then after it may have been sent (a reset, a timeout), or it was
/// still on its way then, or its caller gave up on it then. Its slots are held from `by`.
pub(crate) fn arrived_by(keys: &Keys, sent: OnItsWay, by: Tick) -> Lessons {
    let mut lessons = Lessons::new();
    if by > sent.held_at {
        lessons.extend(
            keys.iter()
                .copied()
                .filter(|&key| is_window(key))
                .map(|key| Lesson::ArrivedBy {
                    key,
                    admitted: sent.admitted,
                    held_at: sent.held_at,
                    by,
                }),
        );
    }
    lessons
}

/// Whether an answer's headers carry HubSpot's count of the burst window (`-Max` and
/// `-Remaining`), which `from_answer` learns from.
pub(crate) fn carries_count(headers: &http::HeaderMap) -> bool {
    let reported = RateLimitHeaders::parse(headers);
    reported.max.is_some() && reported.remaining.is_some()
}

/// What a 429 naming `policy` teaches: a burst-like window holds someone else's calls, and
/// when the 429 carried no count (`counted` false) it is full until it slides; search is
/// full for `search_pause`; a daily budget is spent for the day.
///
/// A 429 that carried HubSpot's count needs no more than the rejection: the count already
/// puts everything in the window that is not hubgate's down to the other client, and each
/// of hubgate's own sends frees its slot as it leaves, so the window is not held full for a
/// whole window on top.
pub(crate) fn from_429(
    policy: Policy,
    keys: &Keys,
    now: Tick,
    search_pause: Duration,
    counted: bool,
) -> Lessons {
    let mut lessons = Lessons::new();
    for key in keys.iter().copied() {
        match (policy, key) {
            (
                Policy::TenSecondly | Policy::Unknown,
                BudgetKey::Burst { .. }
                | BudgetKey::Unidentified { .. }
                | BudgetKey::Global
                | BudgetKey::Token,
            ) => {
                lessons.push(Lesson::Rejected { key });
                if !counted || matches!(key, BudgetKey::Global | BudgetKey::Token) {
                    lessons.push(Lesson::Remaining { key, remaining: 0 });
                }
            }
            (Policy::Secondly, BudgetKey::Search { .. }) => {
                lessons.push(Lesson::Rejected { key });
                lessons.push(Lesson::BlockUntil {
                    key,
                    until: now.saturating_add(search_pause),
                });
            }
            (Policy::Daily, BudgetKey::Daily { portal_id }) => {
                lessons.push(Lesson::DailyExhausted { portal_id });
            }
            _ => {}
        }
    }
    lessons
}

/// Applies `lessons` to the store, in order. A store that needs a round trip is handed
/// them all at once: sent in order on its one connection, an answer's lessons cost one
/// round trip instead of one each, and the lane waiting on them wakes that much sooner.
pub(crate) async fn apply(store: Arc<dyn BudgetStore>, lessons: Lessons, now: Tick, unix_ms: i64) {
    if store.learns_locally() {
        for lesson in lessons {
            store.learn(lesson, now, unix_ms).await;
        }
        return;
    }
    let learning = lessons
        .into_iter()
        .map(|lesson| store.learn(lesson, now, unix_ms));
    futures_util::future::join_all(learning).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const BURST: BudgetKey = BudgetKey::Burst {
        app_id: 1,
        portal_id: 2,
    };
    const DAILY: BudgetKey = BudgetKey::Daily { portal_id: 2 };
    const SEARCH: BudgetKey = BudgetKey::Search { portal_id: 2 };

    fn keys(list: &[BudgetKey]) -> Keys {
        list.iter().copied().collect()
    }

    #[test]
    fn an_answer_bounds_the_arrival_and_its_headers_teach_hubspots_count() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-hubspot-ratelimit-max", "110".parse().unwrap());
        headers.insert("x-hubspot-ratelimit-remaining", "100".parse().unwrap());
        headers.insert("x-hubspot-ratelimit-daily-remaining", "5".parse().unwrap());
        let spent = keys(&[BURST, DAILY]);
        let lessons = from_answer(&headers, Tick(50), &spent, OnItsWay::admitted(Tick(10)));
        assert_eq!(
            lessons.as_slice(),
            [
                Lesson::ArrivedBy {
                    key: BURST,
                    admitted: Tick(10),
                    held_at: Tick(10),
                    by: Tick(50)
                },
                Lesson::Usage {
                    key: BURST,
                    hub_used: 10,
                    max: 110,
                    admitted: Tick(10)
                },
                Lesson::Remaining {
                    key: DAILY,
                    remaining: 5
                },
            ]
        );
        let same_tick = from_answer(
            &http::HeaderMap::new(),
            Tick(10),
            &spent,
            OnItsWay::admitted(Tick(10)),
        );
        assert!(same_tick.is_empty(), "{same_tick:?}");
        // Still on its way at 40, failed at 70: the second bound moves on from the first.
        let on_its_way = OnItsWay {
            admitted: Tick(10),
            held_at: Tick(40),
        };
        let failed = arrived_by(&keys(&[SEARCH, DAILY]), on_its_way, Tick(70));
        assert_eq!(
            failed.as_slice(),
            [Lesson::ArrivedBy {
                key: SEARCH,
                admitted: Tick(10),
                held_at: Tick(40),
                by: Tick(70)
            }]
        );
        assert!(arrived_by(&spent, on_its_way, Tick(40)).is_empty());
    }

    #[test]
    fn a_429_blocks_only_the_budget_its_policy_names() {
        let pause = Duration::from_secs(1);
        let search = from_429(
            Policy::Secondly,
            &keys(&[SEARCH, DAILY]),
            Tick(0),
            pause,
            false,
        );
        assert_eq!(
            search.as_slice(),
            [
                Lesson::Rejected { key: SEARCH },
                Lesson::BlockUntil {
                    key: SEARCH,
                    until: Tick(0).saturating_add(pause)
                }
            ]
        );
        let daily = from_429(Policy::Daily, &keys(&[BURST, DAILY]), Tick(0), pause, true);
        assert_eq!(daily.as_slice(), [Lesson::DailyExhausted { portal_id: 2 }]);
        let counted = from_429(
            Policy::Unknown,
            &keys(&[BURST, DAILY]),
            Tick(0),
            pause,
            true,
        );
        assert_eq!(counted.as_slice(), [Lesson::Rejected { key: BURST }]);
        let burst = from_429(
            Policy::Unknown,
            &keys(&[BURST, DAILY]),
            Tick(0),
            pause,
            false,
        );
        assert_eq!(
            burst.as_slice(),
            [
                Lesson::Rejected { key: BURST },
                Lesson::Remaining {
                    key: BURST,
                    remaining: 0
                }
            ]
        );
    }
}
