//! What HubSpot's answers teach about the budgets a call spent: its `X-HubSpot-RateLimit-*`
//! headers (HubSpot's own count), a 429's policy (which budget it found spent), and a
//! connection that opened after the call was admitted (its send left later).

use std::sync::Arc;
use std::time::Duration;

use hubgate_engine::{BudgetKey, Tick};
use smallvec::SmallVec;

use crate::hubspot::{Keys, Policy, RateLimitHeaders};
use crate::store::{BudgetStore, Lesson};

/// The lessons of one answer; a call spends at most three budgets, so they live inline.
pub(crate) type Lessons = SmallVec<[Lesson; 4]>;

/// What a successful (or any non-429) answer teaches. `-Max`/`-Remaining` and the daily
/// pair correct the local view of the budgets the call spent; absent headers change
/// nothing, and nothing here raises a limit. An answer over a connection that was ready
/// only at `opened`, after the call was `admitted`, moves its send there: a cold pool's
/// burst leaves later than its stamps, by a TCP and TLS handshake, which can be more than
/// the window's margin.
pub(crate) fn from_answer(
    headers: &http::HeaderMap,
    opened: Option<Tick>,
    keys: &Keys,
    admitted: Tick,
) -> Lessons {
    let reported = RateLimitHeaders::parse(headers);
    let mut lessons = Lessons::new();
    if let Some(sent) = opened {
        if sent > admitted {
            lessons.extend(keys.iter().map(|&key| Lesson::SentLate {
                key,
                admitted,
                sent,
            }));
        }
    }
    for key in keys.iter().copied() {
        match key {
            BudgetKey::Burst { .. } | BudgetKey::Unidentified { .. } => {
                if let (Some(max), Some(remaining)) = (reported.max, reported.remaining) {
                    lessons.push(Lesson::Usage {
                        key,
                        hub_used: max.saturating_sub(remaining),
                        max,
                    });
                }
            }
            BudgetKey::Daily { .. } => {
                if let Some(remaining) = reported.daily_remaining {
                    lessons.push(Lesson::Remaining { key, remaining });
                }
            }
            BudgetKey::Search { .. } | BudgetKey::Global => {}
        }
    }
    lessons
}

/// What a 429 naming `policy` teaches: the budget HubSpot thinks is spent is full until its
/// window slides (a burst-like window) or for `search_pause` (search), or spent for the day.
pub(crate) fn from_429(policy: Policy, keys: &Keys, now: Tick, search_pause: Duration) -> Lessons {
    let mut lessons = Lessons::new();
    for key in keys.iter().copied() {
        match (policy, key) {
            // The window is full until it slides, and it holds someone else's calls.
            (
                Policy::TenSecondly | Policy::Unknown,
                BudgetKey::Burst { .. } | BudgetKey::Unidentified { .. } | BudgetKey::Global,
            ) => {
                lessons.push(Lesson::Rejected { key });
                lessons.push(Lesson::Remaining { key, remaining: 0 });
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

/// Applies `lessons` to the store, in order.
pub(crate) async fn apply(store: Arc<dyn BudgetStore>, lessons: Lessons, now: Tick, unix_ms: i64) {
    for lesson in lessons {
        store.learn(lesson, now, unix_ms).await;
    }
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
    fn headers_teach_hubspots_count_and_a_late_connection_moves_the_send() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-hubspot-ratelimit-max", "110".parse().unwrap());
        headers.insert("x-hubspot-ratelimit-remaining", "100".parse().unwrap());
        headers.insert("x-hubspot-ratelimit-daily-remaining", "5".parse().unwrap());
        let spent = keys(&[BURST, DAILY]);
        let lessons = from_answer(&headers, Some(Tick(50)), &spent, Tick(10));
        assert_eq!(
            lessons.as_slice(),
            [
                Lesson::SentLate {
                    key: BURST,
                    admitted: Tick(10),
                    sent: Tick(50)
                },
                Lesson::SentLate {
                    key: DAILY,
                    admitted: Tick(10),
                    sent: Tick(50)
                },
                Lesson::Usage {
                    key: BURST,
                    hub_used: 10,
                    max: 110
                },
                Lesson::Remaining {
                    key: DAILY,
                    remaining: 5
                },
            ]
        );
        let on_time = from_answer(&http::HeaderMap::new(), Some(Tick(5)), &spent, Tick(10));
        assert!(on_time.is_empty(), "{on_time:?}");
    }

    #[test]
    fn a_429_blocks_only_the_budget_its_policy_names() {
        let pause = Duration::from_secs(1);
        let search = from_429(Policy::Secondly, &keys(&[SEARCH, DAILY]), Tick(0), pause);
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
        let daily = from_429(Policy::Daily, &keys(&[BURST, DAILY]), Tick(0), pause);
        assert_eq!(daily.as_slice(), [Lesson::DailyExhausted { portal_id: 2 }]);
        let burst = from_429(Policy::Unknown, &keys(&[BURST, DAILY]), Tick(0), pause);
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
