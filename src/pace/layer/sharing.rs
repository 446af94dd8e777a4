//! Identical GETs in flight at once, as the pacing layer serves them: the first is paced
//! and sent on a task of its own, the others wait for it and each gets a copy.

use std::sync::Arc;

use http::{Request, Response};
use tokio::sync::{oneshot, watch};

use super::{PaceError, PacePolicy, PaceShared, Sender};
use crate::pace::coalesce::identical::{copied, read_for_copies, GetKey, Outcome, Shared};
use crate::proxy::body::{Body, BoxError};

impl PaceShared {
    /// Serves a GET, sharing the upstream call with identical GETs in flight.
    pub(super) async fn share_identical(
        self: Arc<Self>,
        request: Request<Body>,
        send: Sender,
        pacing: Arc<PacePolicy>,
    ) -> Result<Response<Body>, BoxError> {
        let (owner, _) = self.owner_of(&request, &pacing);
        let (head, body) = request.into_parts();
        let key = GetKey::of(owner, &head);
        let request = Request::from_parts(head, body);
        let mut receiver = match self.in_flight.enter(&key) {
            Ok(outcome) => return self.lead(key, outcome, request, send, pacing).await,
            Err(receiver) => receiver,
        };
        // The caller's own cap still applies to what it asks, shared or not.
        let caller = pacing.callers.identify(&request, owner)?;
        pacing
            .callers
            .check_cap(&caller.name)
            .map_err(|retry_after| PaceError::CallerCapped {
                caller: caller.name.to_string(),
                retry_after,
            })?;
        let copy = match receiver.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => Some(Shared::EachAlone),
        };
        match copy {
            Some(Shared::Copy(answer)) => {
                self.metrics.count_shared_get();
                Ok(copied(&answer))
            }
            _ => self.serve_one(request, send, pacing).await,
        }
    }

    /// Sends the first of identical GETs on a task of its own, so the others get their
    /// copy even when its own caller leaves.
    async fn lead(
        self: Arc<Self>,
        key: GetKey,
        outcome: watch::Sender<Outcome>,
        request: Request<Body>,
        send: Sender,
        pacing: Arc<PacePolicy>,
    ) -> Result<Response<Body>, BoxError> {
        let (reply, mine) = oneshot::channel();
        tokio::spawn(async move {
            let answer = self.clone().serve_one(request, send, pacing).await;
            let (mine, copy) = match answer {
                Ok(response) => read_for_copies(response).await,
                Err(error) => (Err(error), Shared::EachAlone),
            };
            self.in_flight.leave(&key);
            let _ = outcome.send(Some(copy));
            let _ = reply.send(mine);
        });
        mine.await.unwrap_or_else(|_| {
            Err(PaceError::UnreadableBody(
                "hubgate stopped before this call was answered; send it again".into(),
            )
            .into())
        })
    }
}
