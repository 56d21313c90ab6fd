//! The one path every message takes to the store, whatever the transport: the gateway's `send`
//! and REST's `POST …/messages` both call [`queue`], so every check on a message runs once, in
//! one place: input rules and the node's write budget, then the mention cap and the filters
//! ([`crate::moderation::screen`]), then the budgets shared by the cluster (the author's, the
//! room's, duplicates: [`crate::quota::guard`]), then in the store's own transaction the
//! membership, block, mute and slow-mode checks.

use crate::app::AppState;
use crate::error::ApiError;
use crate::moderation::filter::Rule;
use crate::store::{Appended, Committing, NewMessage};
use crate::validate;

/// Checks a message and takes its place in the commit order; the returned future resolves once
/// it is durable (or refused). A refusal is counted in the metrics by its code here, so both
/// transports count alike.
pub async fn queue(state: &AppState, mut msg: NewMessage) -> Result<Committing<Appended>, ApiError> {
    let flagged = match admit(state, &mut msg).await {
        Ok(flagged) => flagged,
        Err(e) => {
            state.metrics.send_refused(&e);
            return Err(e);
        }
    };
    // A message into the room ends the author's typing there, so the next indicator goes out
    // at once.
    state.limits.typing_ended(&msg.author, &msg.room);
    let (room, author) = (msg.room.clone(), msg.author.clone());
    match state.store.queue_append(msg).await {
        Ok(commit) if flagged.is_empty() => Ok(commit),
        Ok(commit) => {
            // Flags are audited once the message is stored, naming it.
            let screen = state.screen.clone();
            Ok(Box::pin(async move {
                let appended = commit.await?;
                if appended.created {
                    screen.flagged(&room, &author, &appended.message.id, &flagged);
                }
                Ok(appended)
            }))
        }
        Err(e) => {
            let e = ApiError::from(e);
            state.metrics.send_refused(&e);
            Err(e)
        }
    }
}

/// Every check before the store, cheapest first, so that what a cheap check refuses costs
/// nothing dearer: the rules and the node's budget, the filters (which may mask the text), the
/// shared budgets, then the classifier. Returns the rules that flagged the message.
async fn admit(state: &AppState, msg: &mut NewMessage) -> Result<Vec<Rule>, ApiError> {
    check(state, msg)?;
    let passed = state.screen.message(&msg.room, &msg.author, std::mem::take(&mut msg.body)).await?;
    msg.body = passed.body;
    let mut flagged = passed.flagged;
    if let Err(e) = state.quotas.send(&msg.author, &msg.room, &msg.body).await {
        // A retry of a message already stored is answered with it, limits or not: the
        // client's first try went through (the store answers with the stored message).
        return match state.store.sent_in(&msg.author, &msg.client_msg_id).await {
            Ok(Some(room)) if room == msg.room => Ok(flagged),
            _ => Err(e),
        };
    }
    flagged.extend(state.screen.classify(&msg.room, &msg.author, &msg.body).await?);
    Ok(flagged)
}

/// The rules and the node's write budget (spent only on a message that passed the rules).
fn check(state: &AppState, msg: &NewMessage) -> Result<(), ApiError> {
    validate::id(&msg.room, "room")?;
    validate::client_msg_id(&msg.client_msg_id)?;
    validate::body(&msg.body, state.cfg.max_body_chars)?;
    state.limits.write(&msg.author)
}

/// The same, waiting for the commit (REST).
pub async fn send(state: &AppState, msg: NewMessage) -> Result<Appended, ApiError> {
    let started = std::time::Instant::now();
    let result = match queue(state, msg).await {
        Ok(commit) => commit.await.map_err(ApiError::from),
        Err(e) => return Err(e),
    };
    state.metrics.send_result(started, &result);
    result
}
